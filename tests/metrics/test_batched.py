"""Batched evaluation (windows / clips of several files per forward, prefetch threads) against the per-clip path."""

import threading
import time

import numpy as np
import pytest
import torch

from lafa.audio import load_audio, save_audio
from lafa.metrics.batched import Batching, embed_files, prefetch
from lafa.metrics.caches import EmbeddingCache, sha256_file
from lafa.metrics.clap import ClapScorer, clap_score, write_random_clap
from lafa.metrics.generation import _openl3_stats, _passt_probs, evaluate_folders
from lafa.metrics.openl3 import OpenL3Embedder, build_openl3, num_windows
from lafa.metrics.passt import PasstTagger, build_passt, cut_windows

SR = 44100


def _write(folder, seconds: dict[str, float], seed: int = 0, rate: int = SR):
    g = torch.Generator().manual_seed(seed)
    for i, (name, s) in enumerate(seconds.items()):
        n = int(s * rate)
        tone = torch.sin(2 * torch.pi * (200 + 150 * i) * torch.arange(n) / rate)
        audio = 0.3 * tone + 0.1 * torch.randn(2, n, generator=g)
        save_audio(folder / f"{name}.wav", audio if i % 2 == 0 else audio[:1], rate)  # stereo and mono files
    return {p.stem: p for p in sorted(folder.iterdir())}


def _entries(cache_dir) -> dict[str, np.ndarray]:
    """{file sha256: cached embedding} of one cache folder."""
    return {p.stem.split("-", 1)[1]: np.load(p) for p in cache_dir.glob("*.npy")}


def test_prefetch_keeps_order_and_bounds_lookahead():
    started, lock = [], threading.Lock()

    def work(i):
        with lock:
            started.append(i)
        time.sleep(0.002 * (5 - i % 5))  # later items finish first
        return i * i

    out = []
    for k, v in enumerate(prefetch(range(30), work, workers=3, ahead=4)):
        out.append(v)
        with lock:
            assert len(started) <= k + 1 + 4 + 1  # never more than `ahead` (+1 being handed over) in flight
    assert out == [i * i for i in range(30)]
    assert list(prefetch(range(5), lambda i: -i, workers=0)) == [0, -1, -2, -3, -4]
    with pytest.raises(ZeroDivisionError):  # a failing clip surfaces in the caller, not in a thread
        list(prefetch(range(5), lambda i: 1 / (i - 3), workers=2))


@pytest.fixture(scope="module")
def openl3_clips(tmp_path_factory):
    # 0.4 s: shorter than a window (1 window); 1.3 s: a zero-padded last window; 2.1 s stereo: 5 windows
    return _write(tmp_path_factory.mktemp("l3"), {"a_short": 0.4, "b_padded": 1.3, "c_long": 2.1})


@pytest.mark.parametrize("channel_mode", ["stereo", "mono"])
def test_openl3_batched_equals_per_clip(openl3_clips, tmp_path, channel_mode):
    model = build_openl3(None, seed=1, input_repr="mel128")
    assert [num_windows(int(s * 48000)) for s in (0.4, 1.3, 2.1)] == [1, 3, 5]
    runs = {}
    for name, batching in {
        "per_clip": Batching.per_clip(),
        "budget5": Batching(openl3_windows=5, workers=2),  # some forwards mix clips, the 5-window clip alone
        "budget64": Batching(openl3_windows=64, workers=1),  # all clips in one forward
    }.items():
        embedder = OpenL3Embedder(model, channel_mode=channel_mode, batch_size=batching.openl3_windows or 16)
        cache = EmbeddingCache(tmp_path / name, f"key-{channel_mode}")
        runs[name] = _openl3_stats(openl3_clips, embedder, cache, batching, name)
        assert cache.computed == 3
        runs[name]["embeddings"] = _entries(tmp_path / name)
    # the per-clip path is the embedder's own embed_file, unchanged
    direct = OpenL3Embedder(model, channel_mode=channel_mode)
    for path in openl3_clips.values():
        want = direct.embed_file(path).numpy()
        got = runs["per_clip"]["embeddings"][sha256_file(path)]
        assert got.shape == want.shape and np.array_equal(got, want)
    ref = runs["per_clip"]["embeddings"]
    for name in ("budget5", "budget64"):
        assert runs[name]["embeddings"].keys() == ref.keys()
        for key, want in ref.items():
            got = runs[name]["embeddings"][key]
            assert got.shape == want.shape
            # float rounding of batched convolutions only (measured max |diff| ~1e-5 on values ~50)
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4 * np.abs(want).max())
        assert int(runs[name]["frames"]) == int(runs["per_clip"]["frames"]) == 9
        np.testing.assert_allclose(runs[name]["mu"], runs["per_clip"]["mu"], rtol=1e-5, atol=1e-4)


@pytest.fixture(scope="module")
def passt_clips(tmp_path_factory):
    # 0.4 s and 1.3 s: short windows PaSST sees unpadded, each at its own length; 12 s: two windows
    # (0-10 s, and 5-12 s zero-padded to 10 s)
    return _write(tmp_path_factory.mktemp("passt"), {"a": 0.4, "c": 1.3, "d": 12.0}, seed=2, rate=32000)


def test_passt_batched_equals_per_clip(passt_clips, tmp_path):
    tagger = PasstTagger(build_passt(None, seed=0))
    lengths = [
        [w.shape[-1] for w in cut_windows(np.zeros(int(s * 32000), np.float32))] for s in (0.4, 1.3, 12)
    ]
    assert lengths == [[12800], [41600], [320000, 320000]]
    runs = {}
    for name, batching in {
        "per_clip": Batching.per_clip(),
        "batched": Batching(passt_windows=3, workers=2),
    }.items():
        cache = EmbeddingCache(tmp_path / name, "passt")
        runs[name] = _passt_probs(passt_clips, tagger, cache, batching, name)
        assert cache.computed == 3 and list(runs[name]["ids"]) == ["a", "c", "d"]
    for i in (0, 1):  # the per-clip path is PasstTagger.probabilities (the short clips: cheap to redo)
        audio = load_audio(list(passt_clips.values())[i])
        np.testing.assert_array_equal(runs["per_clip"]["probs"][i], tagger.probabilities(*audio).numpy())
    np.testing.assert_allclose(runs["batched"]["probs"], runs["per_clip"]["probs"], rtol=1e-5, atol=1e-9)


def test_clap_batched_equals_per_clip(tmp_path):
    # 3 s, 12 s (> 10 s: fused crops, seeded per id) and 0.5 s (repeat-padded) in one forward
    clips = _write(tmp_path / "clips", {"x": 3.0, "y": 12.0, "z": 0.5}, seed=3)
    prompts = {"x": "a tone", "y": "noise and a tone", "z": "a short sound"}
    scorer = ClapScorer(write_random_clap(tmp_path / "clap", seed=0))
    one = clap_score(scorer, clips, prompts, seed=5)
    many = clap_score(scorer, clips, prompts, seed=5, batch_clips=3, workers=2)
    assert many["scored_ids"] == one["scored_ids"] == 3
    assert many["value"] == pytest.approx(one["value"], abs=1e-6)
    # and each clip's embedding, batched with the others, equals its own
    inputs = [scorer.audio_inputs(np.asarray(torch.randn(48000 * s).clamp(-1, 1)), s) for s in (3, 12, 1)]
    alone = torch.stack([scorer.embed_inputs([x])[0] for x in inputs])
    together = scorer.embed_inputs(inputs)
    assert bool(inputs[1][1]) and not bool(inputs[0][1])  # one fused (longer) clip among unfused ones
    torch.testing.assert_close(together, alone, rtol=1e-5, atol=1e-6)


def test_cache_hits_across_batched_and_per_clip_runs(keras_file, tmp_path):
    path, _ = keras_file
    (tmp_path / "gen").mkdir()
    (tmp_path / "ref").mkdir()
    gen, ref = tmp_path / "gen", tmp_path / "ref"
    refs = _write(ref, {"r0": 0.4, "r1": 0.5}, seed=6)  # one window each (2 frames per set, as FD needs here)
    _write(gen, {"g0": 0.45}, seed=7)
    (gen / "copy.wav").write_bytes(refs["r1"].read_bytes())  # a reference file, renamed
    cache = tmp_path / "emb"
    kw = dict(openl3_weights=str(path), embedding_cache=str(cache), device="cpu")
    first = evaluate_folders(gen, ref, batching=Batching(openl3_windows=8), **kw)
    fd = first["metrics"]["fd_openl3"]
    assert fd["throughput"]["clips_embedded"] == 3  # the copy of a reference file is embedded once
    assert fd["throughput"]["batching"]["openl3_windows"] == 8
    # the per-clip path reads what the batched path wrote, and the value is the same
    again = evaluate_folders(gen, ref, batching=Batching.per_clip(), **kw)
    assert again["metrics"]["fd_openl3"]["throughput"]["clips_embedded"] == 0
    assert again["metrics"]["fd_openl3"]["value"] == pytest.approx(fd["value"], abs=1e-9)
    assert again["metrics"]["fd_mel"]["value"] == pytest.approx(
        first["metrics"]["fd_mel"]["value"], rel=1e-12
    )
    assert first["metrics"]["fd_mel"]["throughput"]["clips_embedded"] == 4


def test_embed_files_budget_groups_and_failure_writes_nothing(tmp_path):
    files = {f"c{i}": tmp_path / f"c{i}.bin" for i in range(5)}
    for i, p in enumerate(files.values()):
        p.write_bytes(bytes([i]) * (i + 1))
    sizes = {"c0": 2, "c1": 2, "c2": 5, "c3": 1, "c4": 3}
    calls = []

    def embed(batch):
        calls.append([b for b, _ in batch])
        return [np.full(2, n, np.float32) for _, n in batch]

    cache = EmbeddingCache(tmp_path / "cache", "m")
    out = embed_files(files, cache, lambda i, p: (i, sizes[i]), embed, lambda x: x[1], 4, 1, "t")
    assert calls == [["c0", "c1"], ["c2"], ["c3", "c4"]]  # packed up to 4; the 5-sized clip alone
    assert list(out) == list(files) and [int(v[0]) for v in out.values()] == [2, 2, 5, 1, 3]
    # a clip that fails to decode stops the run; what was embedded before it stays cached, nothing half-written
    files["c5"] = tmp_path / "c5.bin"
    files["c5"].write_bytes(b"bad")

    def prepare(i, p):
        if i == "c5":
            raise ValueError("c5: unreadable")
        return i, sizes[i]

    calls.clear()
    with pytest.raises(ValueError, match="c5"):
        embed_files(files, EmbeddingCache(tmp_path / "cache", "m"), prepare, embed, lambda x: x[1], 4, 2, "t")
    assert calls == []  # the first five hit the cache
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 5 and not list(
        (tmp_path / "cache").glob("*.tmp*")
    )
