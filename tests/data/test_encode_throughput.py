"""`lafa encode` as a throughput job: multi-process decode gives the same shards as in-process decode, the
reported audio seconds are the corpus's, a corrupt clip names itself and leaves no shard, and the command
prints audio-hours per CPU-hour."""

import hashlib
import io
import json
import tarfile

import numpy as np
import pytest
import soundfile as sf
import torch

import lafa.stages.loading
from lafa.commands.encode import main as encode_main
from lafa.data.latent_shards import encode_corpus
from lafa.data.tario import add_member
from lafa.errors import LafaUserError

RATIO = 256
LENGTHS = [[3000, 3000, 10000, 700], [8192, 8192, 8192, 5000, 44100]]  # samples at 22.05 kHz: resampled


class PoolAutoencoder(torch.nn.Module):
    """Autoencoder-shaped double: average-pool by the ratio (latent = channel means of each frame)."""

    sample_rate, io_channels, latent_dim, downsampling_ratio = 44100, 2, 2, RATIO

    def encode(self, audio):  # (B, 2, S) -> (B, 2, S // ratio)
        return torch.nn.functional.avg_pool1d(audio, RATIO)


def write_shard(path, lengths, corrupt: int | None = None):
    rng = np.random.default_rng(len(lengths))
    with tarfile.open(path, "w") as tar:
        for i, n in enumerate(lengths):
            buf = io.BytesIO()
            sf.write(buf, (0.3 * rng.standard_normal((n, 2))).astype(np.float32), 22050, format="FLAC")
            data = buf.getvalue()
            if i == corrupt:
                data = data[:40] + b"\x00" * (len(data) - 40)  # header kept, stream destroyed
            add_member(tar, f"clip{i:02d}.flac", data)
            add_member(tar, f"clip{i:02d}.json", json.dumps({"title": f"clip {i}"}).encode())


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    for j, lengths in enumerate(LENGTHS):
        write_shard(root / f"train-{j:04d}.tar", lengths)
    return sorted(str(p) for p in root.glob("train-*.tar"))


def digests(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("*.tar"))}


def test_workers_write_the_same_shards_and_report_the_audio(shards, tmp_path):
    inproc = encode_corpus(PoolAutoencoder(), shards, tmp_path / "a", batch_size=2, workers=0)
    pooled = encode_corpus(PoolAutoencoder(), shards, tmp_path / "b", batch_size=2, workers=2)
    assert digests(tmp_path / "a") == digests(tmp_path / "b") and len(digests(tmp_path / "a")) == 2
    expected_seconds = sum(sum(lengths) for lengths in LENGTHS) / 22050
    for stats in (inproc, pooled):
        assert stats.samples == sum(len(lengths) for lengths in LENGTHS)
        assert stats.audio_seconds == pytest.approx(expected_seconds, rel=1e-3)
        assert stats.cpu_seconds > 0 and stats.wall_seconds > 0
        assert stats.audio_hours_per_cpu_hour == pytest.approx(stats.audio_seconds / stats.cpu_seconds)
    assert "audio-hours per CPU-hour" in pooled.summary()
    again = encode_corpus(PoolAutoencoder(), shards, tmp_path / "b", workers=2)  # resumable: nothing to do
    assert again.shards_skipped == 2 and again.samples == 0


@pytest.mark.parametrize("workers", [0, 2])
def test_corrupt_clip_is_named_and_leaves_no_shard(tmp_path, workers):
    bad = tmp_path / "train-0000.tar"
    write_shard(bad, [3000, 4000, 5000], corrupt=1)
    with pytest.raises(ValueError, match=r"cannot decode clip01\.flac in .*train-0000\.tar"):
        encode_corpus(PoolAutoencoder(), [str(bad)], tmp_path / "out", workers=workers)
    # no partial shard, no temporary: only the folder's record of what encodes into it (lafa-encode.json)
    assert [p.name for p in (tmp_path / "out").iterdir()] in ([], ["lafa-encode.json"])


def test_command_prints_throughput(shards, tmp_path, monkeypatch, capsys):
    ckpt = tmp_path / "fake.ckpt"
    ckpt.write_bytes(b"not read")
    monkeypatch.setattr(lafa.stages.loading, "load_autoencoder", lambda path, latent_dim=64: PoolAutoencoder())
    spec = shards[0].replace("train-0000", "train-*")
    assert encode_main(["--ckpt_path", str(ckpt), "--shards", spec, "--out", str(tmp_path / "lat"),
                        "--workers", "1", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "audio-hours per CPU-hour" in out and "wrote 2 latent shards" in out
    with pytest.raises(LafaUserError, match="--vae_dtype bfloat16: needs an Oobleck VAE autoencoder"):
        encode_main(["--ckpt_path", str(ckpt), "--shards", spec, "--out", str(tmp_path / "lat2"),
                     "--vae_dtype", "bfloat16"])
