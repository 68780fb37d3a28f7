"""`data_prep build` faults that need a real process or a real filesystem: a second build into one --out, a stale
lock, a killed build's workers, Ctrl-C, a full disk; and user mistakes: a missing --folder, a 1-sample WAV.
Each asserts the line the user sees, the exit code and what is left on disk."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from data_prep.__main__ import main as data_prep_main
from tests.data_prep.source_files import music, shard_members, write_source
from tests.helpers.processes import children, ctrl_c_default, on_tmpfs, one_line, survivors, wait_for

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


@pytest.fixture(scope="module")
def src(tmp_path_factory) -> Path:
    """24 files of 3 s, converted to FLAC (48 kHz sources: resampled), 3 per ~1.2 MB shard: a build of a few
    seconds on 2 jobs, long enough to be interrupted."""
    folder = tmp_path_factory.mktemp("src")
    for i in range(24):
        write_source(folder, f"f{i:02d}.wav", music(3.0, rate=48000, seed=i), rate=48000, subtype="PCM_16")
    return folder


def _args(src: Path, out: Path, *extra: str) -> list[str]:
    return ["build", "--out", str(out), "--folder", str(src), "--keep_unlicensed", "--size_estimate", "pcm",
            "--shard_size", "1MB", *extra]


def _popen(src: Path, out: Path, *extra: str, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "data_prep", *_args(src, out, *extra)], cwd=ROOT, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def _run(src: Path, out: Path, *extra: str, prefix: list[str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*(prefix or []), sys.executable, "-m", "data_prep", *_args(src, out, *extra)], cwd=ROOT,
                          env=ENV, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def clean(src, tmp_path_factory) -> dict[str, bytes]:
    out = tmp_path_factory.mktemp("clean")
    res = _run(src, out, "--jobs", "1")
    assert res.returncode == 0, res.stderr
    return shard_members(out)


def test_ctrl_c_says_what_was_kept_and_the_rerun_resumes(src, clean, tmp_path):
    out = tmp_path / "out"
    proc = _popen(src, out, "--jobs", "2", start_new_session=True,  # its own group, as a terminal's job
                  preexec_fn=ctrl_c_default)
    try:
        wait_for(lambda: len(list(out.glob("train-*.tar"))) >= 2)
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C reaches the build and its workers
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    line = one_line(stderr)
    assert proc.returncode == 130
    assert line.startswith("data_prep: interrupted: ") and f"shards in {out} are finished and kept" in line
    assert "run the same command again to resume" in line and "KeyboardInterrupt" not in stderr
    kept = int(line.split("interrupted: ")[1].split()[0])
    assert kept == sum((out / p.stem).is_file() for p in (out / ".state").glob("*.json")) >= 2
    assert not list(out.glob(".*.tmp-*")) and not (out / "manifest.json").exists() and not (out / ".lafa.lock").exists()
    res = _run(src, out, "--jobs", "2")
    assert res.returncode == 0, res.stderr
    assert shard_members(out) == clean


def test_a_second_build_into_the_same_folder_is_refused(src, clean, tmp_path):
    out = tmp_path / "out"
    first = _popen(src, out, "--jobs", "1")
    try:
        wait_for(lambda: (out / ".lafa.lock").is_file() and (out / ".lafa.lock").stat().st_size > 0)
        os.kill(first.pid, signal.SIGSTOP)  # held mid-build, however fast this machine is
        try:
            second = _run(src, out, "--jobs", "1")
        finally:
            os.kill(first.pid, signal.SIGCONT)
        line = one_line(second.stderr)
        assert second.returncode == 2
        assert line.startswith(f"data_prep: error: {out}: another job writes into this folder: pid {first.pid} on ")
        assert "(data_prep, since" in line
        first.communicate(timeout=600)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 0  # the second build touched none of the first's files
    assert shard_members(out) == clean and not (out / ".lafa.lock").exists()


def test_a_stale_lock_of_a_dead_build_is_taken_over_with_a_warning(src, clean, tmp_path):
    out = tmp_path / "out"
    code = ("import os, signal, sys; from lafa.output_lock import acquire; acquire(sys.argv[1], 'data_prep'); "
            "os.kill(os.getpid(), signal.SIGKILL)")
    dead = subprocess.Popen([sys.executable, "-c", code, str(out)], cwd=ROOT, env=ENV)
    assert dead.wait() == -signal.SIGKILL and (out / ".lafa.lock").stat().st_size > 0
    res = _run(src, out, "--jobs", "1")
    assert res.returncode == 0, res.stderr
    assert f"data_prep: warning: {out}: taking over a stale lock left by pid {dead.pid} on " in res.stderr
    assert "(no longer running)" in res.stderr and "Traceback" not in res.stderr
    assert shard_members(out) == clean and not (out / ".lafa.lock").exists()


def test_the_workers_of_a_killed_build_exit(src, tmp_path):
    out = tmp_path / "out"
    proc = _popen(src, out, "--jobs", "2")
    try:
        wait_for(lambda: len(children(proc.pid)) >= 2)
        workers = children(proc.pid)
        wait_for(lambda: len(list(out.glob(".*.tmp-*"))) >= 1)  # writing shards
        proc.kill()
        proc.wait()
        assert not survivors(workers), "a worker outlived its killed build"
    finally:
        if proc.poll() is None:
            proc.kill()


@pytest.mark.skipif(shutil.which("unshare") is None
                    or subprocess.run(["unshare", "-rm", "true"], capture_output=True).returncode != 0,
                    reason="needs `unshare -rm` (a user namespace) to mount a small tmpfs")
def test_a_full_disk_names_the_shard_and_keeps_finished_ones(src, clean, tmp_path):
    """A 2 MB tmpfs for 6 shards of ~1.1 MB: the second does not fit. The tmpfs lives as long as the namespace, so
    what is left on it is listed from inside."""
    out = tmp_path / "small"
    out.mkdir()
    left = tmp_path / "left.txt"
    mount = ["unshare", "-rm", "sh", "-c", f'mount -t tmpfs -o size=2m tmpfs "{out}" && "$0" "$@"; rc=$?; '
             f'ls -A "{out}/shards" > "{left}"; exit $rc']
    res = _run(src, out / "shards", "--jobs", "1", prefix=mount)
    line = one_line(res.stderr)
    assert res.returncode == 2
    assert line == (f"data_prep: error: {out / 'shards' / 'train-000001.tar'}: no space left on the device while "
                    "writing this shard; 1 of 6 shards are finished and kept (no partial shard); free space and run "
                    "the same command again to write the rest")
    assert left.read_text().split() == [".state", "train-000000.tar"]  # no temporary, no lock, no manifest


@pytest.mark.skipif(shutil.which("unshare") is None
                    or subprocess.run(["unshare", "-rm", "true"], capture_output=True).returncode != 0,
                    reason="needs `unshare -rm` (a user namespace) to mount a read-only tmpfs")
def test_a_read_only_out_is_one_line(src, tmp_path):
    out = tmp_path / "ro"
    out.mkdir()
    mount = on_tmpfs(out, "ro,size=1m")
    res = _run(src, out, "--jobs", "1", prefix=mount)
    assert res.returncode == 2
    assert one_line(res.stderr) == (f"data_prep: error: {out / '.lafa.lock'}: Read-only file system; choose a "
                                     "writable --out (and readable inputs)")


def test_a_missing_folder_is_one_line(tmp_path, capsys):
    assert data_prep_main(["build", "--out", str(tmp_path / "o"), "--folder", "/nonexistent"]) == 2
    err = capsys.readouterr().err
    assert one_line(err) == "data_prep: error: --folder /nonexistent: that folder does not exist; check the path"
    assert not (tmp_path / "o").exists()


def test_a_one_sample_wav_is_skipped_with_its_reason(tmp_path, capsys):
    src, out = tmp_path / "src", tmp_path / "out"
    src.mkdir()
    write_source(src, "one.wav", np.full((1, 2), 0.5, np.float32), subtype="PCM_16")
    write_source(src, "short.wav", music(0.09), subtype="PCM_16")  # 0.09 s: under the 0.1 s minimum
    write_source(src, "ok.wav", music(0.1), subtype="PCM_16")  # 0.1 s: kept
    assert data_prep_main(["build", "--out", str(out), "--folder", str(src), "--jobs", "1", "--keep_unlicensed"]) == 0
    printed = capsys.readouterr().out
    manifest = json.loads((out / "manifest.json").read_text())
    reasons = {s["path"]: (s["category"], s["reason"]) for s in manifest["skipped"]}
    assert reasons == {"one.wav": ("too short", "too short: 2.268e-05 s, less than the 0.1 s minimum clip"),
                       "short.wav": ("too short", "too short: 0.09 s, less than the 0.1 s minimum clip")}
    assert manifest["files_kept"] == 1 and "too short" in printed
    assert [k.split(".")[0] for k in shard_members(out) if k.endswith(".json")] == [
        k.split(".")[0] for k in shard_members(out) if k.endswith(".wav")]
    assert sf.info(str(src / "ok.wav")).frames == 4410
