"""Metric caches keyed by what made them: an edited reference file or another lafa version recomputes the
reference statistics instead of reusing stale ones; embeddings are keyed by lafa's version too."""

from __future__ import annotations

import os

import numpy as np
import soundfile as sf

import lafa
import lafa.metrics.caches as caches
from lafa.metrics.caches import EmbeddingCache, load_reference_cache
from lafa.metrics.generation import evaluate_folders


def _write(folder, name, seed, seconds=1.0):
    folder.mkdir(parents=True, exist_ok=True)
    x = 0.2 * np.random.default_rng(seed).standard_normal((int(44100 * seconds), 2)).astype(np.float32)
    sf.write(folder / name, x, 44100, subtype="PCM_16")


def _fd(gen, ref, cache):
    return evaluate_folders(gen, ref, stats_cache=str(cache), device="cpu")["metrics"]["fd_mel"]


def test_an_edited_reference_file_is_not_served_from_the_statistics_cache(tmp_path):
    gen, ref, cache = tmp_path / "gen", tmp_path / "ref", tmp_path / "ref_stats.npz"
    for i in range(3):
        _write(gen, f"{i}.wav", i)
        _write(ref, f"{i}.wav", 10 + i)
    first = _fd(gen, ref, cache)
    assert _fd(gen, ref, cache)["value"] == first["value"]  # served from the cache
    stamp = os.stat(ref / "1.wav").st_mtime_ns
    _write(ref, "1.wav", 99, seconds=2.0)  # same name, other audio
    os.utime(ref / "1.wav", ns=(stamp + 10**9, stamp + 10**9))
    edited = _fd(gen, ref, cache)
    assert edited["value"] != first["value"]  # recomputed (the old cache's ids alone would have matched)
    assert load_reference_cache(cache)["fd_mel"]["reference_files"] == caches.files_fingerprint(
        {f"{i}": ref / f"{i}.wav" for i in range(3)})


def test_another_lafa_version_recomputes(tmp_path, monkeypatch):
    gen, ref, cache = tmp_path / "gen", tmp_path / "ref", tmp_path / "ref_stats.npz"
    for i in range(2):
        _write(gen, f"{i}.wav", i)
        _write(ref, f"{i}.wav", 10 + i)
    _fd(gen, ref, cache)
    key = load_reference_cache(cache)["fd_mel"]["key"]
    monkeypatch.setattr(lafa, "__version__", "9.9.9")
    assert load_reference_cache(cache)["fd_mel"]["key"] == f"{key} (made by lafa 0.1.0)"
    try:
        evaluate_folders(gen, cache, device="cpu")  # the statistics file alone: refused, naming both keys
    except ValueError as exc:
        assert "an entry made with other weights or settings for fd_mel" in str(exc)  # the version is in the key
    else:
        raise AssertionError("a statistics file of another lafa version was used")
    a = EmbeddingCache(tmp_path / "emb", "model").model
    monkeypatch.setattr(lafa, "__version__", "0.1.0")
    assert EmbeddingCache(tmp_path / "emb", "model").model != a
