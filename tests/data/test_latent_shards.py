"""Latent shards: any Autoencoder-shaped encoder -> shards -> LatentDataModule batches, checked against a
direct encoding of the same audio."""

import hashlib
import io
import json
import tarfile

import numpy as np
import pytest
import soundfile as sf
import torch

import lafa.stages.loading
from data_prep.process import ChunkSettings
from data_prep.shards import BuildSettings, build
from data_prep.sources import read_folder
from lafa.commands.encode import main as encode_main
from lafa.data import LatentDataModule
from lafa.data.latent_shards import encode_corpus

RATIO, LATENT_DIM = 256, 3


class PoolProjectAutoencoder(torch.nn.Module):
    """Test double with the Autoencoder interface: average-pool by the ratio, then a fixed 2 -> 3 map."""

    sample_rate, io_channels, latent_dim, downsampling_ratio = 44100, 2, LATENT_DIM, RATIO

    def __init__(self):
        super().__init__()
        self.register_buffer("weight", torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, -1.0]]))

    def encode(self, audio):  # (B, 2, S) -> (B, 3, S // ratio)
        pooled = torch.nn.functional.avg_pool1d(audio, RATIO)
        return torch.einsum("oc,bcn->bon", self.weight, pooled)

    def decode(self, latent, steps=None):
        raise NotImplementedError("the test double only encodes")


@pytest.fixture(scope="module")
def audio_shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("latents")
    src = root / "src"
    src.mkdir()
    rng = np.random.default_rng(1)
    for i, n in enumerate([3000, 10000, 700, 8192, 5000, 12345]):
        sf.write(src / f"s{i}.wav", (0.3 * rng.standard_normal((n, 2))).clip(-1, 1).astype(np.float32), 44100,
                 subtype="PCM_16")
        (src / f"s{i}.json").write_text(json.dumps({"genre": "noise", "title": f"s{i}", "split": "train"}))
    build(read_folder(src), BuildSettings(out=root / "audio", chunk=ChunkSettings(chunk_seconds=30.0, min_clip_seconds=0.0),  # keep 700 samples
                                          shard_bytes=20_000, jobs=1), [], {})
    return root


def _direct(audio_shards):
    """Key -> the test double's latent of the whole zero-padded clip, straight from the audio members (FLAC, or
    the 44.1 kHz stereo 16-bit WAV sources data_prep stored as they are)."""
    ae, out = PoolProjectAutoencoder(), {}
    for tar_path in sorted((audio_shards / "audio").glob("*.tar")):
        with tarfile.open(tar_path) as tar:
            for m in tar.getmembers():
                key, _, ext = m.name.partition(".")
                if ext in ("flac", "wav"):
                    x, _ = sf.read(io.BytesIO(tar.extractfile(m).read()), dtype="float32", always_2d=True)
                    n = -(-len(x) // RATIO)
                    x = np.pad(x, ((0, n * RATIO - len(x)), (0, 0)))
                    out[key] = ae.encode(torch.from_numpy(x.T)[None])[0]  # (3, n)
    return out


def test_latent_shards_round_trip(audio_shards):
    ae = PoolProjectAutoencoder()
    outs = encode_corpus(ae, sorted(str(p) for p in (audio_shards / "audio").glob("*.tar")),
                         audio_shards / "lat", batch_size=2).outputs
    assert [p.name for p in outs] == sorted(p.name for p in (audio_shards / "audio").glob("*.tar"))
    direct = _direct(audio_shards)
    size = 40  # frames; the longest clip has ceil(12345 / 256) = 49 real frames
    dm = LatentDataModule(val_shards=str(audio_shards / "lat"), latent_size=size, batch_size=4, num_workers=0)
    seen = 0
    for batch in dm.val_dataloader():
        assert batch["latent"].shape[1:] == (LATENT_DIM, size) and batch["keep"].shape[1:] == (size,)
        for z, mask, key, meta in zip(batch["latent"], batch["keep"], batch["id"], batch["metadata"],
                                      strict=True):
            ref = direct[key]
            frames = -(-meta["num_samples"] // RATIO)
            assert meta["latent_frames"] == frames and meta["downsampling_ratio"] == RATIO
            real = min(frames, size)
            assert mask.tolist() == [True] * real + [False] * (size - real)
            torch.testing.assert_close(z[:, :real], ref[:, :real], atol=1e-6, rtol=0)
            assert float(z[:, real:].abs().sum()) == 0.0
            seen += 1
    assert seen == len(direct) == 6


def test_train_latent_crops_and_timing(audio_shards):
    encode_corpus(PoolProjectAutoencoder(), sorted(str(p) for p in (audio_shards / "audio").glob("*.tar")),
                  audio_shards / "lat", batch_size=2)
    direct = _direct(audio_shards)
    dm = LatentDataModule(train_shards=str(audio_shards / "lat"), latent_size=8, batch_size=1, num_workers=0,
                          shuffle_buffer=0)
    for batch in dm.train_dataloader():
        key, z, mask = batch["id"][0], batch["latent"][0], batch["keep"][0]
        ref, frames = direct[key], batch["metadata"][0]["latent_frames"]
        real = min(8, frames)
        assert int(mask.sum()) == real
        starts = [s for s in range(frames - real + 1) if torch.allclose(z[:, :real], ref[:, s:s + real], atol=1e-6)]
        assert starts, f"{key}: the crop is no window of the clip's latent"
        assert batch["seconds_start"][0] == np.floor(starts[0] * RATIO / 44100)


def test_encode_command_uses_load_autoencoder_and_resumes(audio_shards, monkeypatch, tmp_path):
    ckpt = tmp_path / "fake.ckpt"
    ckpt.write_bytes(b"not read: load_autoencoder is replaced")
    monkeypatch.setattr(lafa.stages.loading, "load_autoencoder", lambda path, latent_dim=64: PoolProjectAutoencoder())
    args = ["--ckpt_path", str(ckpt), "--shards", str(audio_shards / "audio" / "train-*.tar"), "--out",
            str(tmp_path / "lat"), "--device", "cpu"]
    assert encode_main(args) == 0
    digests = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in (tmp_path / "lat").glob("*.tar")}
    assert len(digests) >= 2
    (tmp_path / "lat" / sorted(digests)[0]).unlink()
    assert encode_main(args) == 0  # re-creates the missing shard only, byte-identical
    assert digests == {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in (tmp_path / "lat").glob("*.tar")}
