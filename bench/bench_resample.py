"""Resampling: lafa.resample against torchaudio.functional.resample with the same filter, per rate pair.

    .venv/bin/python bench/bench_resample.py [--seconds 8] [--repeats 9] [--out bench/results/resample.json]

For every source rate of the corpora (8 to 96 kHz) to 44.1 and 48 kHz, and 44.1 -> 16 kHz: one stereo clip
of white noise (timing does not depend on content; noise fills every band for the error), resampled by
torchaudio (what lafa.audio.resample called before: sinc_interp_kaiser, width 64, rolloff 0.9476, beta 14.77,
kernel rebuilt on every call), by lafa (its cached plan, built by a first call that is timed apart) and, for
scale only, by soxr HQ (a different filter: what a user might pick instead). Repeats are interleaved across
pairs and implementations; medians of CPU seconds on 1 thread. Error: the largest absolute difference from
torchaudio's float64 result, of lafa's float32 result and of torchaudio's float32 result (relative to the
float64 result's peak too). The JSON records the machine, versions and the load average before and after.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import soxr
import torch
import torchaudio
import torchaudio.functional as AF

from lafa.resample import BETA, LOWPASS_FILTER_WIDTH, ROLLOFF, ROWS_PER_GROUP, plan, reduced_rates, resample

SOURCES = [8000, 11025, 16000, 22050, 24000, 32000, 44100, 48000, 88200, 96000]
PAIRS = [(a, b) for b in (44100, 48000) for a in SOURCES if a != b] + [(44100, 16000)]


def torchaudio_resample(x: torch.Tensor, orig_sr: int, target_sr: int) -> torch.Tensor:
    orig, new = reduced_rates(orig_sr, target_sr)
    return AF.resample(x, orig, new, lowpass_filter_width=LOWPASS_FILTER_WIDTH, rolloff=ROLLOFF,
                       resampling_method="sinc_interp_kaiser", beta=BETA)


def soxr_resample(x: torch.Tensor, orig_sr: int, target_sr: int) -> np.ndarray:
    return soxr.resample(x.numpy().T, orig_sr, target_sr, "HQ")  # (S, C) in and out


IMPLEMENTATIONS = {"torchaudio": torchaudio_resample, "lafa": resample, "soxr_hq": soxr_resample}


def cpu_ms(fn, *args) -> float:
    start = time.process_time()
    fn(*args)
    return 1000 * (time.process_time() - start)


def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    return {"cpu": cpu, "cores": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version(), "threads": torch.get_num_threads(),
            "load_average_at_start": list(os.getloadavg())}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("--channels", type=int, default=2)
    p.add_argument("--repeats", type=int, default=9)
    p.add_argument("--out", type=Path, default=Path("bench/results/resample.json"))
    args = p.parse_args()
    torch.set_num_threads(1)
    report = {"machine": machine()}
    rng = torch.Generator().manual_seed(0)
    clips = {a: 0.5 * torch.randn(args.channels, int(a * args.seconds), generator=rng) for a in SOURCES}
    pairs: dict = {}
    for a, b in PAIRS:
        orig, new = reduced_rates(a, b)
        plan_ms = cpu_ms(plan, orig, new, torch.float32, torch.device("cpu"))  # lafa's one-off cost per pair
        reference = torchaudio_resample(clips[a].double(), a, b)
        peak = reference.abs().max().item()
        errors = {name: (fn(clips[a], a, b).double() - reference).abs().max().item()
                  for name, fn in (("lafa", resample), ("torchaudio", torchaudio_resample))}
        p_ = plan(orig, new, torch.float32, torch.device("cpu"))
        pairs[f"{a}->{b}"] = {
            "reduced": [orig, new], "periods_per_frame": p_.periods, "groups": len(p_.groups),
            "taps_per_output": round(sum(g.weight.shape[0] * g.rows for g in p_.groups) / p_.rows, 1),
            "torchaudio_taps_per_output": 2 * p_.width + orig, "lafa_plan_build_ms": round(plan_ms, 2),
            "max_abs_error_vs_torchaudio_float64": {k: float(f"{v:.3g}") for k, v in errors.items()},
            "max_error_relative_to_peak": {k: float(f"{v / peak:.3g}") for k, v in errors.items()},
            "error_ratio_lafa_over_torchaudio": round(errors["lafa"] / errors["torchaudio"], 3),
            "times_ms": {name: [] for name in IMPLEMENTATIONS},
        }
    for _ in range(args.repeats):  # interleaved: every pair and implementation once per round
        for a, b in PAIRS:
            for name, fn in IMPLEMENTATIONS.items():
                pairs[f"{a}->{b}"]["times_ms"][name].append(cpu_ms(fn, clips[a], a, b))
    for entry in pairs.values():
        times = entry.pop("times_ms")
        entry["median_cpu_ms"] = {name: round(statistics.median(t), 2) for name, t in times.items()}
        med = entry["median_cpu_ms"]
        entry["speedup_torchaudio_over_lafa"] = round(med["torchaudio"] / med["lafa"], 2)
        entry["soxr_hq_over_lafa"] = round(med["soxr_hq"] / med["lafa"], 2)
    speedups = [e["speedup_torchaudio_over_lafa"] for e in pairs.values()]
    report["machine"]["load_average_at_end"] = list(os.getloadavg())
    report.update({
        "what": f"{args.seconds:g} s, {args.channels} channels, float32, 1 thread: median CPU ms of "
                f"{args.repeats} interleaved repeats; errors against torchaudio's float64 result",
        "rows_per_group": ROWS_PER_GROUP,
        "pairs": pairs,
        "summary": {"speedup_geometric_mean": round(math.exp(statistics.mean(map(math.log, speedups))), 2),
                    "speedup_min": min(speedups), "speedup_max": max(speedups),
                    "error_ratio_max": max(e["error_ratio_lafa_over_torchaudio"] for e in pairs.values())},
        "versions": {"torch": torch.__version__, "torchaudio": torchaudio.__version__, "numpy": np.__version__,
                     "soxr": soxr.__version__},
    })
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    print(f"{'pair':>14} {'reduced':>10} {'torchaudio':>10} {'lafa':>7} {'ratio':>6} {'soxr_hq':>8} "
          f"{'err lafa':>9} {'err ta32':>9}")
    for key, e in pairs.items():
        med, err = e["median_cpu_ms"], e["max_error_relative_to_peak"]
        print(f"{key:>14} {':'.join(map(str, e['reduced'])):>10} {med['torchaudio']:>10.2f} {med['lafa']:>7.2f} "
              f"{e['speedup_torchaudio_over_lafa']:>6.2f} {med['soxr_hq']:>8.2f} {err['lafa']:>9.2e} "
              f"{err['torchaudio']:>9.2e}")
    print(json.dumps(report["summary"]), "load", report["machine"]["load_average_at_start"],
          report["machine"]["load_average_at_end"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
