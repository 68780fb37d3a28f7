"""Shard writing: corrupt files skipped and reported, atomic resumable writes, byte-identical re-runs."""

import hashlib
import io
import json
import tarfile

import numpy as np
import pytest
import soundfile as sf

import data_prep.shards as shards
from data_prep.__main__ import main as data_prep_main
from data_prep.plan import split_of
from data_prep.process import ChunkSettings, chunk_bounds
from data_prep.shards import BuildSettings, build
from data_prep.sources import Item, read_folder


def _corpus(root, n=6):
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        x = (0.3 * np.sin(2 * np.pi * (200 + 50 * i) * np.arange(int(0.5 * 44100 * (i + 1))) / 44100)).astype(np.float32)
        x = x + 0.01 * rng.standard_normal(len(x)).astype(np.float32)
        sf.write(root / f"clip{i}.wav", x, 44100, subtype="PCM_16")
        (root / f"clip{i}.json").write_text(json.dumps({"genre": "test", "title": f"t{i}", "split": "train"}))
    (root / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunkjunkjunk")
    return read_folder(root)


def _settings(out, **kw):
    return BuildSettings(out=out, chunk=ChunkSettings(chunk_seconds=1.0, min_tail_seconds=0.2),
                         shard_bytes=150_000, jobs=1, **kw)


def _digests(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("*.tar"))}


def test_corrupt_file_is_skipped_and_reported(tmp_path):
    items = _corpus(tmp_path / "src")
    manifest = build(items, _settings(tmp_path / "out"), [], {"folder": tmp_path / "src"})
    assert [s["path"] for s in manifest["skipped"]] == ["broken.wav"]
    assert "unreadable" in manifest["skipped"][0]["reason"] and manifest["skipped"][0]["category"] == "unreadable"
    assert manifest["files_kept"] == 6
    # clip i lasts 0.5 (i + 1) s; 1 s chunks with tails >= 0.2 s kept
    expected = sum(len(chunk_bounds(int(0.5 * 44100 * (i + 1)), 44100, 8820)) for i in range(6))
    assert manifest["chunks"] == expected
    names = []
    for tar_path in sorted((tmp_path / "out").glob("train-*.tar")):
        with tarfile.open(tar_path) as tar:
            names += tar.getnames()
    assert len(names) == 2 * expected and not any("broken" in n for n in names)


def test_killed_writer_leaves_no_partial_shard_and_rerun_is_identical(tmp_path, monkeypatch):
    items = _corpus(tmp_path / "src")
    roots = {"folder": tmp_path / "src"}
    build(items, _settings(tmp_path / "clean"), [], roots)
    clean = _digests(tmp_path / "clean")
    assert len(clean) >= 3

    calls = {"n": 0}
    real = shards.encode_member

    def dying_encode(audio, settings):  # the process dies between two members of the second shard
        calls["n"] += 1
        if calls["n"] == 6:
            raise KeyboardInterrupt
        return real(audio, settings)

    monkeypatch.setattr(shards, "encode_member", dying_encode)
    with pytest.raises(KeyboardInterrupt):
        build(items, _settings(tmp_path / "run"), [], roots)
    partial = _digests(tmp_path / "run")
    assert 0 < len(partial) < len(clean)
    assert all(clean[name] == digest for name, digest in partial.items())  # finished shards are whole
    assert not list((tmp_path / "run").glob(".*tmp*"))

    monkeypatch.setattr(shards, "encode_member", real)
    written = []
    monkeypatch.setattr(shards, "write_shard", lambda task, _w=shards.write_shard: written.append(task["path"]) or _w(task))
    build(items, _settings(tmp_path / "run"), [], roots)
    assert _digests(tmp_path / "run") == clean
    assert len(written) == len(clean) - len(partial)  # finished shards are not redone


def test_stale_temporary_file_from_a_sigkill_is_ignored(tmp_path):
    items = _corpus(tmp_path / "src", n=2)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / ".train-000000.tar.tmp-999").write_bytes(b"half a shard")
    build(items, _settings(tmp_path / "out"), [], {})
    assert not list((tmp_path / "out").glob(".*tmp*"))
    with tarfile.open(tmp_path / "out" / "train-000000.tar") as tar:
        members = tar.getmembers()
    assert all(m.mtime == 0 and m.uid == 0 and m.uname == "" for m in members)


def test_hash_split_is_stable_and_close_to_fractions():
    items = [Item("fsd", str(i), None) for i in range(4000)]
    splits = [split_of(it, 0.1, 0.05) for it in items]
    assert splits == [split_of(it, 0.1, 0.05) for it in items]
    assert abs(splits.count("val") / 4000 - 0.1) < 0.02 and abs(splits.count("test") / 4000 - 0.05) < 0.015
    assert split_of(Item("fsd", "x", None, split="test"), 0.1, 0.05) == "test"  # the source's own split wins


def test_demo_corpus_builds_with_all_splits_and_lists_bad_files(tmp_path):
    assert data_prep_main(["demo", "--out", str(tmp_path / "demo"), "--jobs", "1"]) == 0
    manifest = json.loads((tmp_path / "demo" / "shards" / "manifest.json").read_text())
    assert manifest["splits"]["val"]["files"] == 8 and manifest["splits"]["test"]["files"] == 8
    assert manifest["splits"]["train"]["files"] == 48 and len(manifest["splits"]["train"]["shards"]) >= 4
    reasons = " ".join(s["reason"] for s in manifest["skipped"])
    for word in ("unreadable", "silent", "duplicate content", "licence"):
        assert word in reasons
    with tarfile.open(tmp_path / "demo" / "shards" / "val-000000.tar") as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith(".flac"))
        audio, sr = sf.read(io.BytesIO(tar.extractfile(member).read()))
    assert sr == 44100 and audio.shape[1] == 2
