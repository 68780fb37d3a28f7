"""Data-loading throughput: 30 s stereo 44.1 kHz FLAC chunks per second per worker (decode + crop + collate).

    .venv/bin/python bench/bench_data.py [--clips 16] [--out bench/results/data.json]

Builds a temporary shard of synthetic 30 s chunks (tonal + noise content, so FLAC compresses as on music),
then times the AudioDataModule in one process (= per worker) for a training crop (65536 samples, the FLAC
is seeked) and for the whole chunk (1323000 samples, all decoded), and with a 2-worker DataLoader (one
shard each, persistent workers). Numbers depend on the machine's load: the JSON records it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import webdataset

from data_prep.process import ChunkSettings
from data_prep.shards import BuildSettings, build
from data_prep.sources import read_folder
from lafa.data import AudioDataModule

SR, SECONDS = 44100, 30


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
    p.add_argument("--out", type=Path, default=Path("bench/results/data.json"))
    args = p.parse_args()
    torch.set_num_threads(1)
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
