"""Evaluation throughput: `lafa evaluate` (evaluate_folders) clips/s per metric, batched vs per-clip, cache effect.

    .venv/bin/python bench/bench_eval.py [--clips 1000] [--seconds 10] [--repeats 1] [--out bench/results/eval.json]

A reference folder and a "generated" folder of `--clips` music-like stereo 44.1 kHz WAV clips each (tones and
noise, seeded) are scored by evaluate_folders with random-weight OpenL3 (mel256/512, stereo path), PaSST and
CLAP (nothing can be downloaded; the networks have the real sizes except the small random CLAP), as
`lafa evaluate --allow_random_weights` runs them. Per clip (Batching.per_clip(): each clip decoded, then
embedded on its own) and batched (Batching(): windows of several clips per forward, decoding ahead in a
thread) alternate, `--repeats` times each, in one process; medians of wall and CPU seconds per metric from
the report's own throughput records. The embeddings of both paths are compared (max |difference|).
Cache: a third run scores a new generated folder against the same reference with the embedding cache the
batched run filled, so only the generated clips are embedded. The reference openl3 procedure (TensorFlow,
stable-audio-metrics' extract_embeddings) is timed on the same two folders when `--ref_python` exists.
The 1000-clip time is extrapolated from the measured rates when fewer clips were run (the JSON says which).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import transformers

from lafa.metrics.batched import Batching
from lafa.metrics.generation import evaluate_folders

SR = 44100
METRICS = ("fd_openl3", "kl_passt", "clap_score", "fd_mel")
TARGET_CLIPS = 1000  # the target: 1000 generated clips of 10 s against a reference set
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def make_folder(folder: Path, clips: int, seconds: float, seed: int) -> dict[str, str]:
    """`clips` stereo clips id000.wav ...: a few harmonic tones, a noise floor, a slow amplitude envelope."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    t = np.arange(int(SR * seconds)) / SR
    prompts = {}
    for i in range(clips):
        f0 = rng.uniform(60, 800)
        tone = sum(np.sin(2 * np.pi * f0 * k * t + rng.uniform(0, 6)) / k for k in range(1, 6))
        env = 0.6 + 0.4 * np.sin(2 * np.pi * rng.uniform(0.1, 2) * t)
        x = 0.15 * env * tone + 0.03 * rng.standard_normal(len(t))
        stereo = np.stack([x, np.roll(x, int(rng.integers(10, 400)))], 1).clip(-1, 1).astype(np.float32)
        sf.write(folder / f"id{i:04d}.wav", stereo, SR, subtype="PCM_16")
        prompts[f"id{i:04d}"] = f"a tone at {f0:.0f} Hz with noise"
    return prompts


def _embeddings(cache: Path) -> dict[str, np.ndarray]:
    return {p.name: np.load(p) for p in cache.glob("*.npy")}


def max_difference(a: Path, b: Path) -> dict:
    """Max |a - b| and max |a| over the cache entries two runs wrote (same file, same model key)."""
    ea, eb = _embeddings(a), _embeddings(b)
    if ea.keys() != eb.keys():
        raise RuntimeError("the per-clip and batched runs cached different entries")
    diffs = [float(np.abs(ea[k] - eb[k]).max()) for k in ea]
    scale = [float(np.abs(ea[k]).max()) for k in ea]
    return {"entries": len(ea), "max_abs_difference": max(diffs), "max_abs_value": max(scale)}


def run(gen: Path, ref: Path, prompts: dict, batching: Batching, cache: Path) -> dict:
    wall, cpu = time.perf_counter(), time.process_time()
    out = evaluate_folders(gen, ref, prompts, allow_random_weights=True, seed=0, device=DEVICE,
                           embedding_cache=str(cache), batching=batching)  # fmt: skip
    return {"total_wall": time.perf_counter() - wall, "total_cpu": time.process_time() - cpu,
            "load_average": os.getloadavg(),
            **{m: out["metrics"][m]["throughput"] | {"value": out["metrics"][m]["value"]} for m in METRICS}}  # fmt: skip


def summarize(runs: list[dict]) -> dict:
    out = {}
    for m in METRICS:
        wall = statistics.median(r[m]["seconds"] for r in runs)
        cpu = statistics.median(r[m]["cpu_seconds"] for r in runs)
        clips = runs[0][m]["clips_embedded"]
        out[m] = {"clips": clips, "wall_seconds_median": round(wall, 3), "cpu_seconds_median": round(cpu, 3),
                  "clips_per_second_wall": round(clips / wall, 4), "clips_per_cpu_second": round(clips / cpu, 4),
                  "wall_seconds_all": [r[m]["seconds"] for r in runs], "value": runs[0][m]["value"]}  # fmt: skip
    out["total_wall_seconds_median"] = round(statistics.median(r["total_wall"] for r in runs), 2)
    out["load_average_at_end"] = [r["load_average"] for r in runs]
    return out


def reference_openl3(args: argparse.Namespace, folders: list[Path], tmp: Path) -> dict:
    if not Path(args.ref_python).is_file():
        return {"skipped": f"{args.ref_python} not found (the reference environment of tests/metrics/parity)"}
    out = tmp / "ref.json"
    cmd = [args.ref_python, str(Path(__file__).with_name("_openl3_reference.py")), "--src", args.ref_src,
           "--threads", str(torch.get_num_threads()), "--out", str(out)]  # fmt: skip
    for f in folders:
        cmd += ["--folder", str(f)]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "OMP_NUM_THREADS": str(torch.get_num_threads())}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode:
        return {"failed": proc.stderr[-2000:]}
    return json.loads(out.read_text())


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--clips", type=int, default=TARGET_CLIPS, help="clips per folder (generated and reference)"
    )
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--repeats", type=int, default=1, help="runs of each path, interleaved")
    p.add_argument(
        "--ref_python", default="/work/wt/refenv/bin/python", help="reference environment's python"
    )
    p.add_argument(
        "--ref_src", default="/work/wt/refsrc", help="openl3/, kapre037/, src/ (stable-audio-metrics)"
    )
    p.add_argument("--out", type=Path, default=Path("bench/results/eval.json"))
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        gen, ref, gen2 = tmp / "generated", tmp / "reference", tmp / "generated2"
        prompts = make_folder(gen, args.clips, args.seconds, seed=1)
        make_folder(ref, args.clips, args.seconds, seed=2)
        make_folder(gen2, args.clips, args.seconds, seed=3)
        # untimed: first calls (numba's resampy compile, allocators)
        make_folder(tmp / "warm", 2, 1.0, seed=4)
        for batching in (Batching.per_clip(), Batching()):
            run(tmp / "warm", tmp / "warm", prompts, batching, tmp / "cache_warmup")
        paths = {"per_clip": Batching.per_clip(), "batched": Batching()}
        runs: dict[str, list[dict]] = {k: [] for k in paths}
        for r in range(args.repeats):  # interleaved: per-clip, batched, batched, per-clip, ...
            order = list(paths) if r % 2 == 0 else list(reversed(paths))
            for name in order:
                runs[name].append(run(gen, ref, prompts, paths[name], tmp / f"cache_{name}{r}"))
        agreement = {
            "fd_openl3_and_kl_passt_embeddings": max_difference(
                tmp / "cache_per_clip0", tmp / "cache_batched0"
            )
        }
        agreement |= {f"{m}_value": {k: runs[k][0][m]["value"] for k in paths} for m in METRICS}
        # the reference cached by the first batched run: a new generated folder embeds only its own clips
        warm = run(gen2, ref, prompts, Batching(), tmp / "cache_batched0")
        reference = reference_openl3(args, [gen, ref], tmp)
    per_clip, batched = summarize(runs["per_clip"]), summarize(runs["batched"])
    speedup = {
        m: round(per_clip[m]["wall_seconds_median"] / batched[m]["wall_seconds_median"], 3) for m in METRICS
    }
    speedup_cpu = {
        m: round(per_clip[m]["cpu_seconds_median"] / batched[m]["cpu_seconds_median"], 3) for m in METRICS
    }
    # the 1000-clip time: a generated set of 1000 against a cached reference (from the warm run's rates), and both
    # sets embedded cold (from the batched runs' rates); measured directly only when --clips >= 1000
    measured = args.clips >= TARGET_CLIPS
    per_gen_clip = {m: warm[m]["seconds"] / max(warm[m]["clips_embedded"], 1) for m in METRICS}
    cold_rate = {m: batched[m]["clips_per_second_wall"] for m in METRICS}
    lafa_l3 = batched["fd_openl3"]["clips_per_second_wall"]
    report = {
        "what": f"evaluate_folders, {args.clips} generated + {args.clips} reference clips of {args.seconds:g} s, "
        "stereo 44.1 kHz WAV, random-weight OpenL3 mel256/512 (stereo) + PaSST + small CLAP, " + DEVICE,
        "per_clip": per_clip,
        "batched": batched,
        "batching": Batching().as_dict(),
        "speedup_batched_vs_per_clip_wall": speedup,
        "speedup_batched_vs_per_clip_cpu": speedup_cpu,
        "agreement_batched_vs_per_clip": agreement,
        "cache": {
            "what": "new generated folder vs the same reference, embedding cache filled by the batched run",
            **{m: {k: warm[m][k] for k in ("clips_embedded", "seconds", "cpu_seconds")} for m in METRICS},
            "total_wall_seconds": round(warm["total_wall"], 2),
            "vs_cold_batched_total": round(warm["total_wall"] / batched["total_wall_seconds_median"], 3),
        },
        "clips_1000": {
            "how": "measured" if measured else f"extrapolated linearly from the {args.clips}-clip rates measured here",
            "reference_cached_seconds": round(TARGET_CLIPS * sum(per_gen_clip.values()), 1),
            "both_sets_cold_seconds": round(sum(2 * TARGET_CLIPS / r for r in cold_rate.values()), 1),
        },
        "reference_openl3": reference,
        "openl3_lafa_vs_reference_clips_per_second": (
            round(lafa_l3 / reference["clips_per_second"], 3) if "clips_per_second" in reference else None
        ),
        "setup": vars(args) | {"out": str(args.out), "torch_threads": torch.get_num_threads(), "device": DEVICE},
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "cpus": os.cpu_count(),
                    "load_average": os.getloadavg(), "python": platform.python_version()},
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "numpy": np.__version__, "soundfile": sf.__version__},
    }  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    print(json.dumps({k: report[k] for k in ("speedup_batched_vs_per_clip_wall", "clips_1000",
                                             "openl3_lafa_vs_reference_clips_per_second")}, indent=1))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
