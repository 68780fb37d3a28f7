"""Data throughput: shard building (`make shards`) against its decode bound, and data loading.

    .venv/bin/python bench/bench_data.py [--files 32] [--flac_levels 4,5,0] [--jobs 2] [--out bench/results/data.json]

1. `make shards` vs the decode bound, per corpus: synthetic 8 s stereo 44.1 kHz music-like files, single-format
   (mp3 like FMA, wav like FSD50K, flac, ogg: real corpora are one format) and the four mixed, are decoded
   alone (lafa.audio.load_audio, the bound) and sharded by data_prep's build, interleaved repeats, medians.
   One process: CPU seconds (= per worker); with --jobs N also N processes on both sides, wall seconds. The
   ratio is the decode bound's seconds over the build's. Each FLAC level is built, plus "before" (level 5,
   FLAC sources re-encoded, the behaviour before the FLAC copy). On the mix, each stage of the build is timed
   on the same files (decode with the truncation check, channels/resampling/silence, FLAC encoding, hashing);
   shard sizes are compared with the target and with 16-bit PCM.
2. Loading: 30 s stereo FLAC chunks per second per worker through the AudioDataModule for a training crop
   (65536 samples, the FLAC is seeked) and for the whole chunk (1323000 samples), and with 2 workers.
Numbers depend on the machine's load: the JSON records it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import statistics
import tempfile
import time
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import webdataset

from data_prep.process import ChunkSettings, decode, encode_flac, split_chunks
from data_prep.shards import BuildSettings, build
from data_prep.sources import read_folder
from lafa.audio import load_audio
from lafa.data import AudioDataModule

SR, SECONDS = 44100, 30
FILE_SECONDS = 8
FORMATS = ({"format": "MP3"}, {"format": "FLAC"}, {"format": "OGG"}, {"format": "WAV", "subtype": "PCM_16"})
CORPORA = {"mix": FORMATS, **{f["format"].lower(): (f,) for f in FORMATS}}


def _music(rng: np.random.Generator, seconds: float) -> np.ndarray:
    t = np.arange(int(SR * seconds)) / SR
    tone = sum(np.sin(2 * np.pi * f * t) / (k + 1) for k, f in enumerate(rng.uniform(80, 2000, 6)))
    x = 0.2 * tone / 3 + 0.05 * rng.standard_normal(len(t))
    return np.stack([x, np.roll(x, 100)], 1).clip(-1, 1).astype(np.float32)


def make_corpus(src: Path, files: int, formats: tuple[dict, ...] = FORMATS) -> list[Path]:
    rng = np.random.default_rng(1)
    src.mkdir(parents=True)
    paths = []
    for i in range(files):
        fmt = formats[i % len(formats)]
        path = src / f"f{i:03d}.{fmt['format'].lower()}"
        sf.write(path, _music(rng, FILE_SECONDS), SR, **fmt)
        (src / f"f{i:03d}.json").write_text(json.dumps({"genre": "bench", "split": "train", "license": "CC0"}))
        paths.append(path)
    return paths


def _cpu(fn) -> float:
    start = time.process_time()
    fn()
    return time.process_time() - start


def _wall(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _decode_all(paths: list[Path], jobs: int) -> None:
    if jobs <= 1:
        [load_audio(p) for p in paths]
        return
    with get_context("fork").Pool(jobs) as pool:  # the bound with as many processes as the build uses
        pool.map(_decode_one, paths, chunksize=1)


def _decode_one(path: Path) -> int:
    return load_audio(path)[0].shape[-1]


def shard_bench(root: Path, files: int, repeats: int, target_mb: float, formats: tuple[dict, ...] = FORMATS,
                settings: ChunkSettings | None = None, jobs: int = 1, stages: bool = True) -> dict:
    """`make shards` (build) vs decoding the same files, interleaved; CPU seconds in one process (jobs 1) or
    wall seconds with `jobs` processes on both sides; stage breakdown; shard sizes."""
    paths = make_corpus(root / "corpus", files, formats)
    audio_seconds = files * FILE_SECONDS
    settings = settings or ChunkSettings()
    target = int(target_mb * 2**20)
    clock = _cpu if jobs == 1 else _wall  # child processes' CPU is not in process_time: wall for jobs > 1
    runs = {"decode_bound": [], "make_shards": []}
    sizes: list[int] = []
    for r in range(repeats + 1):  # the first round warms the page cache and is not counted
        t_dec = clock(lambda: _decode_all(paths, jobs))
        out = root / f"shards{r}"
        t_build = clock(lambda out=out: build(read_folder(root / "corpus"), BuildSettings(
            out=out, chunk=settings, shard_bytes=target, jobs=jobs, size_estimate="probe"), [], {}))
        if r:
            runs["decode_bound"].append(t_dec)
            runs["make_shards"].append(t_build)
        sizes = [p.stat().st_size for p in sorted(out.glob("train-*.tar"))]
    med = {k: statistics.median(v) for k, v in runs.items()}
    whole = sizes[:-1] or sizes  # the last shard holds the remainder
    pcm = audio_seconds * SR * 2 * 2
    report = {
        "what": f"{files} files x {FILE_SECONDS} s stereo 44.1 kHz ({'/'.join(f['format'].lower() for f in formats)}), "
        f"{jobs} process(es), {'CPU' if jobs == 1 else 'wall'} seconds, flac_level {settings.flac_level}",
        "seconds_median": {k: round(v, 3) for k, v in med.items()},
        "seconds_all": {k: [round(x, 3) for x in v] for k, v in runs.items()},
        "audio_hours_per_hour": {k: round(audio_seconds / v, 1) for k, v in med.items()},
        "ratio_make_shards_vs_decode_bound": round(med["decode_bound"] / med["make_shards"], 3),
        "shards": {"target_mb": target_mb, "sizes_mb": [round(x / 2**20, 2) for x in sizes],
                   "bytes_vs_16bit_pcm": round(sum(sizes) / pcm, 4),
                   "max_deviation_of_full_shards": round(max(abs(x / target - 1) for x in whole), 3)},
    }
    if stages:
        report["stage_cpu_seconds"] = stage_times(paths, settings)
    return report


def stage_times(paths: list[Path], settings: ChunkSettings) -> dict:
    """CPU seconds of each stage of a build on the same files, one process."""
    stages = {"decode_checked": 0.0, "channels_resample_silence": 0.0, "flac_encode": 0.0, "sha256": 0.0}
    for p in paths:
        stages["sha256"] += _cpu(lambda p=p: hashlib.sha256(p.read_bytes()).hexdigest())
        full = _cpu(lambda p=p: decode(p, settings))
        audio = decode(p, settings)
        chunks = [c for _, c in split_chunks(audio, settings)[0]]
        stages["flac_encode"] += _cpu(lambda chunks=chunks: [encode_flac(c, settings) for c in chunks])
        dec = _cpu(lambda p=p: load_audio(p))
        stages["decode_checked"] += dec
        stages["channels_resample_silence"] += max(full - dec, 0.0)
    return {k: round(v, 3) for k, v in stages.items()}


def make_shards(root: Path, clips: int) -> Path:
    rng = np.random.default_rng(0)
    src = root / "src"
    src.mkdir()
    t = np.arange(SR * SECONDS) / SR
    for i in range(clips):
        tone = sum(np.sin(2 * np.pi * f * t) / (k + 1) for k, f in enumerate(rng.uniform(80, 2000, 6)))
        x = 0.2 * tone / 3 + 0.05 * rng.standard_normal(len(t))
        stereo = np.stack([x, np.roll(x, 100)], 1).clip(-1, 1).astype(np.float32)
        sf.write(src / f"c{i:03d}.flac", stereo, SR, subtype="PCM_16")
        (src / f"c{i:03d}.json").write_text(json.dumps({"genre": "bench", "split": "train"}))
    half = int(SR * SECONDS * 2 * 2 * 0.6 * (clips // 2 - 0.5))  # two shards: one per worker
    build(read_folder(src), BuildSettings(out=root / "shards", chunk=ChunkSettings(), shard_bytes=half, jobs=1), [], {})
    return root / "shards"


def rate(dm: AudioDataModule, split: str, repeats: int) -> float:
    """Clips per second through the split's DataLoader (first pass warms the page cache)."""
    loader = dm.val_dataloader() if split == "val" else dm.train_dataloader()
    sum(len(b["id"]) for b in loader)
    start = time.perf_counter()
    n = 0
    for _ in range(repeats):
        n += sum(len(b["id"]) for b in loader)
    return n / (time.perf_counter() - start)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--clips", type=int, default=16)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--files", type=int, default=32, help="files of the make-shards corpus")
    p.add_argument("--shard_mb", type=float, default=8.0, help="target shard size of the make-shards run")
    p.add_argument("--flac_levels", default="4,5,0", help="FLAC levels to build with (4: the default)")
    p.add_argument("--jobs", type=int, default=2, help="processes of the wall-time run (1: none)")
    p.add_argument("--out", type=Path, default=Path("bench/results/data.json"))
    args = p.parse_args()
    torch.set_num_threads(1)
    shards_report: dict = {}
    variants = {f"flac_level_{v}": ChunkSettings(flac_level=int(v)) for v in args.flac_levels.split(",")}
    # before this benchmark's changes: libsndfile's level 5, every chunk re-encoded (FLAC sources too)
    variants["before_level5_no_copy"] = ChunkSettings(flac_level=5, copy_flac=False)
    for corpus, formats in CORPORA.items():  # real corpora are single-format (FMA mp3, FSD50K wav)
        for name, chunk in variants.items():
            if name.startswith("before") and corpus not in ("mix", "flac"):
                continue  # the copy only changes FLAC sources: elsewhere "before" is flac_level_5
            with tempfile.TemporaryDirectory() as tmp:
                shards_report.setdefault(corpus, {})[name] = shard_bench(
                    Path(tmp), args.files, args.repeats, args.shard_mb, formats, chunk,
                    stages=corpus == "mix" and name == "flac_level_4")
    if args.jobs > 1:
        with tempfile.TemporaryDirectory() as tmp:
            shards_report[f"mix_{args.jobs}_processes_wall"] = shard_bench(
                Path(tmp), args.files, args.repeats, args.shard_mb, FORMATS, ChunkSettings(), jobs=args.jobs,
                stages=False)
    with tempfile.TemporaryDirectory() as tmp:
        shards = make_shards(Path(tmp), args.clips)
        spec = str(shards / "train-*.tar")
        results = {}
        for name, size, workers in (("crop_65536_1worker", 65536, 0), ("full_30s_1worker", SR * SECONDS, 0),
                                    ("crop_65536_2workers", 65536, 2)):
            dm = AudioDataModule(train_shards=spec, val_shards=spec, sample_size=size, batch_size=1,
                                 num_workers=workers, shuffle_buffer=0, persistent_workers=True)
            results[name] = round(rate(dm, "train", args.repeats), 2)
        shard_mb = sum(p.stat().st_size for p in shards.glob("*.tar")) / 2**20
    report = {
        "make_shards": shards_report,
        "what": "30 s stereo 44.1 kHz FLAC chunks per second: decode + crop (+ resample no-op) + collate",
        "clips_per_second": results,
        "ratios": {"crop_vs_full_decode": round(results["crop_65536_1worker"] / results["full_30s_1worker"], 2),
                   "2workers_vs_1": round(results["crop_65536_2workers"] / results["crop_65536_1worker"], 2)},
        "audio_hours_per_second_per_worker_full": round(results["full_30s_1worker"] * SECONDS / 3600, 4),
        "setup": {"clips": args.clips, "repeats": args.repeats, "shard_mb": round(shard_mb, 1)},
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "cpus": os.cpu_count(),
                    "load_average": os.getloadavg(), "python": platform.python_version()},
        "versions": {"torch": torch.__version__, "soundfile": sf.__version__,
                     "libsndfile": sf.__libsndfile_version__, "webdataset": webdataset.__version__},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
