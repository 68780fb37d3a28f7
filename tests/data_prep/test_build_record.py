"""A folder remembers the build that made it (data_prep.build_record): a build with other settings or sources is
refused in one line naming both fingerprints and the fix, and the first build's shards stay as they were; the same
build resumes; --overwrite replaces; a folder from before the record gets one, with a note said once."""

import hashlib
import json

import numpy as np
import soundfile as sf

from data_prep.__main__ import main as data_prep_main

SR = 44100


def _corpus(src, n=3):
    src.mkdir(parents=True)
    for i in range(n):
        t = np.arange(SR * 2) / SR
        sf.write(src / f"t{i}.wav", (0.3 * np.sin(2 * np.pi * (300 + 50 * i) * t)).astype(np.float32), SR)
        (src / f"t{i}.json").write_text(json.dumps({"license": "CC0", "split": "train"}))


def _args(src, out, *extra):
    return ["build", "--out", str(out), "--folder", str(src), "--jobs", "1", "--size_estimate", "pcm", *extra]


def _snapshot(out):
    """{name: (sha256, mtime_ns)} of every file under out, the lock's transient file aside."""
    return {str(p.relative_to(out)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(out.rglob("*")) if p.is_file()}


def test_a_build_with_other_settings_is_refused_and_the_first_builds_shards_are_untouched(tmp_path, capsys):
    src, out = tmp_path / "src", tmp_path / "shards"
    _corpus(src)
    assert data_prep_main(_args(src, out, "--chunk_seconds", "1")) == 0
    first = _snapshot(out)
    fp = json.loads((out / ".state" / "build.json").read_text())["fingerprint"]
    capsys.readouterr()
    assert data_prep_main(_args(src, out, "--chunk_seconds", "0.5")) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith(f"data_prep: error: --out {out}: holds shards of another build "
                                              f"(its fingerprint {fp}, this build's ")
    assert "chunk_seconds: 1.0 there, 0.5 here" in err
    assert err.endswith("; pass --overwrite to replace them, or give another --out")
    assert _snapshot(out) == first  # nothing rewritten, moved or removed; no .stale/
    assert not (out / ".stale").exists()


def test_a_build_from_another_source_folder_is_refused(tmp_path, capsys):
    src, other, out = tmp_path / "src", tmp_path / "other", tmp_path / "shards"
    _corpus(src)
    _corpus(other, 2)
    assert data_prep_main(_args(src, out)) == 0
    first = _snapshot(out)
    capsys.readouterr()
    assert data_prep_main(_args(other, out)) == 2
    err = capsys.readouterr().err
    assert f"folder folder: {src.resolve()} there, {other.resolve()} here" in err
    assert _snapshot(out) == first


def test_the_same_build_resumes_and_overwrite_replaces(tmp_path, capsys):
    src, out = tmp_path / "src", tmp_path / "shards"
    _corpus(src)
    assert data_prep_main(_args(src, out, "--chunk_seconds", "1")) == 0
    shards = {k: v for k, v in _snapshot(out).items() if k.endswith(".tar")}
    assert data_prep_main(_args(src, out, "--chunk_seconds", "1")) == 0  # resumes: every shard kept as it was
    assert {k: v for k, v in _snapshot(out).items() if k.endswith(".tar")} == shards
    assert data_prep_main(_args(src, out, "--chunk_seconds", "0.5", "--overwrite")) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    # 2 s files in 0.5 s chunks: 4 each, the last shorter than the 1 s min_tail_seconds and dropped
    assert manifest["settings"]["chunk_seconds"] == 0.5 and manifest["chunks"] == 3 * 3
    record = json.loads((out / ".state" / "build.json").read_text())
    assert record["settings"]["chunk_seconds"] == 0.5
    capsys.readouterr()
    assert data_prep_main(_args(src, out, "--chunk_seconds", "1")) == 2  # the overwritten folder is now the 0.5 s build


def test_a_folder_without_a_record_gets_one_and_the_user_is_told_once(tmp_path, capsys):
    src, out = tmp_path / "src", tmp_path / "shards"
    _corpus(src)
    assert data_prep_main(_args(src, out)) == 0
    (out / ".state" / "build.json").unlink()  # as a folder written before builds kept a record
    shards = {k: v for k, v in _snapshot(out).items() if k.endswith(".tar")}
    capsys.readouterr()
    assert data_prep_main(_args(src, out)) == 0
    err = capsys.readouterr().err
    assert err.count("holds shards but no record of the build that made them") == 1
    assert {k: v for k, v in _snapshot(out).items() if k.endswith(".tar")} == shards  # resumed, not rewritten
    assert data_prep_main(_args(src, out)) == 0
    assert "no record" not in capsys.readouterr().err  # said once
    assert data_prep_main(_args(src, out, "--seed", "1")) == 2  # and now guarded


def test_builds_with_other_prefixes_share_a_folder(tmp_path):
    src, out = tmp_path / "src", tmp_path / "shards"
    _corpus(src)
    assert data_prep_main(_args(src, out, "--prefix", "a_")) == 0
    assert data_prep_main(_args(src, out, "--prefix", "b_", "--chunk_seconds", "1")) == 0
    assert sorted(p.name for p in (out / ".state").glob("*build.json")) == ["a_build.json", "b_build.json"]


def test_a_build_stopped_before_any_shard_does_not_hold_the_folder(tmp_path):
    src, out = tmp_path / "src", tmp_path / "shards"
    _corpus(src)
    assert data_prep_main(_args(src, out, "--chunk_seconds", "1")) == 0
    for tar in out.glob("*.tar"):  # as if the first build had been stopped while scanning
        tar.unlink()
    assert data_prep_main(_args(src, out, "--chunk_seconds", "0.5")) == 0
    assert json.loads((out / ".state" / "build.json").read_text())["settings"]["chunk_seconds"] == 0.5
