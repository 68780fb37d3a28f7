"""`lafa encode` faults: two autoencoders into one folder, a second writer, a killed run's decode workers, a full
disk and a read-only folder. Each asserts the one line the user sees, the exit code and what is left on disk."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from data_prep.process import ChunkSettings
from data_prep.shards import BuildSettings, build
from data_prep.sources import read_folder
from lafa.data import LatentDataModule
from lafa.data.latent_shards import FINGERPRINT_MEMBER, RECORD_NAME, EncodeFolderError, shard_fingerprint
from tests.helpers.processes import children, on_tmpfs, one_line, survivors

DRIVER = Path(__file__).with_name("encode_driver.py")
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    """4 audio shards of 3 clips each (~1 s, 16-bit stereo WAV sources: copied as they are)."""
    root = tmp_path_factory.mktemp("enc")
    src = root / "src"
    src.mkdir()
    rng = np.random.default_rng(0)
    for i in range(12):
        sf.write(src / f"c{i:02d}.wav", (0.3 * rng.standard_normal((44100, 2))).astype(np.float32), 44100,
                 subtype="PCM_16")
        (src / f"c{i:02d}.json").write_text(json.dumps({"title": f"c{i}", "split": "train"}))
    build(read_folder(src), BuildSettings(out=root / "audio", chunk=ChunkSettings(), shard_bytes=250_000,
                                          jobs=1), [], {})
    tars = sorted((root / "audio").glob("train-*.tar"))
    assert len(tars) == 4
    for name in ("a.ckpt", "b.ckpt"):
        (root / name).write_bytes(b"weights chosen by the driver from the name")
    return root


def _command(shards: Path, ckpt: str, out: Path, workers: int, *extra: str) -> list[str]:
    return [sys.executable, str(DRIVER), "--ckpt_path", str(shards / ckpt), "--shards",
            str(shards / "audio" / "train-*.tar"), "--out", str(out), "--device", "cpu", "--workers", str(workers),
            *extra]


def _encode(shards: Path, ckpt: str, out: Path, *extra: str, env: dict | None = None, prefix: list[str] | None = None,
            timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([*(prefix or []), *_command(shards, ckpt, out, 0, *extra)], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})


def _slow_encode(shards: Path, out: Path, workers: int, slow_seconds: int) -> subprocess.Popen:
    """An encode of one clip per batch, each batch held `slow_seconds` (the driver's LAFA_TEST_SLOW); stdout piped."""
    return subprocess.Popen(_command(shards, "a.ckpt", out, workers, "--batch_size", "1"), stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT), "LAFA_TEST_SLOW": str(slow_seconds)})


def _tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_second_autoencoder_is_refused_and_nothing_changes(shards, tmp_path):
    out = tmp_path / "lat"
    first = _encode(shards, "a.ckpt", out)
    assert first.returncode == 0, first.stderr
    fp_a = json.loads((out / RECORD_NAME).read_text())["fingerprint"]
    assert {shard_fingerprint(p)["fingerprint"] for p in out.glob("*.tar")} == {fp_a}
    (out / "train-000002.tar").unlink()  # a killed run, or a shard removed by hand
    before = _tree(out)

    second = _encode(shards, "b.ckpt", out)
    line = one_line(second.stderr)
    assert second.returncode == 2
    assert line.startswith(f"lafa encode: error: {out / RECORD_NAME}: written by another encode (fingerprint {fp_a})")
    assert "--overwrite" in line and "another --out" in line
    fp_b = line.split("this encode's fingerprint is ")[1].split()[0]
    assert fp_b != fp_a
    assert _tree(out) == before  # nothing written, nothing removed, no lock left

    # the same autoencoder resumes: only the missing shard is written, with A's fingerprint
    again = _encode(shards, "a.ckpt", out)
    assert again.returncode == 0 and "3 already done" in again.stdout
    assert {shard_fingerprint(p)["fingerprint"] for p in out.glob("*.tar")} == {fp_a}

    # --overwrite re-encodes every shard with B
    over = _encode(shards, "b.ckpt", out, "--overwrite")
    assert over.returncode == 0, over.stderr
    assert {shard_fingerprint(p)["fingerprint"] for p in out.glob("*.tar")} == {fp_b}
    assert json.loads((out / RECORD_NAME).read_text())["fingerprint"] == fp_b


def test_a_shard_of_another_encode_is_refused_without_a_record(shards, tmp_path):
    """Shards copied together by hand: the folder record is gone, each finished shard is still checked."""
    a, b = tmp_path / "a", tmp_path / "b"
    assert _encode(shards, "a.ckpt", a).returncode == 0
    assert _encode(shards, "b.ckpt", b).returncode == 0
    (b / RECORD_NAME).unlink()
    shutil.copy(a / "train-000000.tar", b / "train-000000.tar")
    (b / "train-000003.tar").unlink()
    before = _tree(b)
    res = _encode(shards, "b.ckpt", b)
    line = one_line(res.stderr)
    assert res.returncode == 2 and f"{b / 'train-000000.tar'}: written by another encode" in line
    assert _tree(b) == before


def test_latent_datamodule_refuses_a_mixed_corpus(shards, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    assert _encode(shards, "a.ckpt", a).returncode == 0
    assert _encode(shards, "b.ckpt", b).returncode == 0
    shutil.copy(a / "train-000000.tar", b / "train-000009.tar")  # one shard of A among B's
    dm = LatentDataModule(train_shards=str(b), latent_size=8, batch_size=2, num_workers=0)
    with pytest.raises(EncodeFolderError, match=r"train_shards mix latents of 2 different encodes") as err:
        dm.train_dataloader()
    assert "\n" not in str(err.value) and "--overwrite" in str(err.value)
    # splits from two encodes
    (b / "train-000009.tar").unlink()
    dm = LatentDataModule(train_shards=str(b), val_shards=str(a), latent_size=8, batch_size=2, num_workers=0)
    dm.train_dataloader()
    with pytest.raises(EncodeFolderError, match="val_shards: encoded with fingerprint"):
        dm.val_dataloader()
    # one encode: the latents carry the fingerprint in their JSON too
    batch = next(iter(LatentDataModule(train_shards=str(a), latent_size=8, batch_size=2, num_workers=0)
                      .train_dataloader()))
    assert batch["metadata"][0]["autoencoder_fingerprint"] == shard_fingerprint(a / "train-000000.tar")["fingerprint"]


def test_the_fingerprint_member_is_not_a_sample(shards, tmp_path):
    import tarfile

    out = tmp_path / "lat"
    assert _encode(shards, "a.ckpt", out).returncode == 0
    with tarfile.open(out / "train-000000.tar") as tar:
        names = tar.getnames()
    assert names[0] == FINGERPRINT_MEMBER and len(names) == 1 + 2 * 3
    dm = LatentDataModule(val_shards=str(out), latent_size=8, batch_size=1, num_workers=0)
    assert sum(len(b["id"]) for b in dm.val_dataloader()) == 12


def test_decode_workers_die_with_a_killed_encode(shards, tmp_path):
    out = tmp_path / "lat"
    proc = _slow_encode(shards, out, workers=2, slow_seconds=2)
    try:
        assert _first_line_after_device(proc.stdout) == "loading the model"
        deadline = time.monotonic() + 60
        while len(workers := children(proc.pid)) < 2:
            assert time.monotonic() < deadline, "the decode workers never started"
            time.sleep(0.1)
        time.sleep(1.0)  # the workers are decoding
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert not survivors(workers), "a decode worker outlived its killed parent"
    finally:
        if proc.poll() is None:
            proc.kill()
    # the killed run left no partial shard under a final name; the lock is free for the next run
    again = _encode(shards, "a.ckpt", out)
    assert again.returncode == 0, again.stderr
    assert len(list(out.glob("*.tar"))) == 4


def test_a_second_encode_into_the_same_folder_is_refused(shards, tmp_path):
    out = tmp_path / "lat"
    first = _slow_encode(shards, out, workers=0, slow_seconds=3)
    try:
        assert _first_line_after_device(first.stdout) == "loading the model"  # the lock is taken before this line
        second = _encode(shards, "a.ckpt", out)
        line = one_line(second.stderr)
        assert second.returncode == 2
        assert line.startswith(f"lafa encode: error: {out}: another job writes into this folder: pid {first.pid} on ")
        assert "loading the model" not in second.stdout  # refused before the model was loaded
        first.wait(timeout=600)
        assert first.returncode == 0
    finally:
        if first.poll() is None:
            first.kill()
    assert len(list(out.glob("*.tar"))) == 4 and not (out / ".lafa.lock").exists()


needs_unshare = pytest.mark.skipif(
    shutil.which("unshare") is None or subprocess.run(["unshare", "-rm", "true"], capture_output=True).returncode,
    reason="needs `unshare -rm` (a user namespace) to mount a small tmpfs")


@needs_unshare
def test_a_full_disk_stops_with_one_line_and_keeps_whole_shards(shards, tmp_path):
    """A 3 MB tmpfs: each latent shard is ~2.1 MB (16 channels x 44100 / 4 frames x 3 clips, float32)."""
    out = tmp_path / "small"
    out.mkdir()
    mount = on_tmpfs(out, "size=3m")
    res = _encode(shards, "a.ckpt", out / "lat", prefix=mount)
    line = one_line(res.stderr)
    assert res.returncode == 2
    assert line.startswith(f"lafa encode: error: {out / 'lat' / 'train-000001.tar'}: no space left on the device "
                           "(1 finished shards are kept, no partial one)")
    assert "run the same command again" in line


@needs_unshare
def test_a_read_only_folder_is_refused_before_the_model_loads(shards, tmp_path):
    out = tmp_path / "ro"
    out.mkdir()
    mount = on_tmpfs(out, "ro,size=1m")
    res = _encode(shards, "a.ckpt", out / "lat", prefix=mount)
    line = one_line(res.stderr)
    assert res.returncode == 2 and "loading the model" not in res.stdout
    assert line == (f"lafa encode: error: {out / 'lat'}: cannot write here (Read-only file system); choose a "
                    "writable --out")


def _first_line_after_device(stream) -> str:
    """The first stdout line after `device: ...` (every lafa subcommand prints its device first)."""
    line = stream.readline().strip()
    return stream.readline().strip() if line.startswith("device:") else line
