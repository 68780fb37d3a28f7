"""Time spectral slope alpha + LPI on 200 clips of 30 s latents (200 x 64 x 646 frames, CPU), against a
naive loop implementation (pysteps-style per-ring mask loop per window; per-channel design-matrix ridge).

    .venv/bin/python bench/bench_analysis.py [--clips 200] [--repeats 3]

Writes bench/results/analysis.json (machine, versions, seconds, speed-up ratios, agreement of the two).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from lafa.analysis.latent_report import AnalysisSettings, versions
from lafa.analysis.locality import lpi_per_channel
from lafa.analysis.spectrum import mean_spectrum, spectral_slope


def synthetic_latents(clips: int, channels: int, frames: int, seed: int = 0) -> list[torch.Tensor]:
    """Latents with some channel and time correlation (AR(1) along both axes), float32 like an encoder's."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(clips, channels, frames, generator=g)
    for c in range(1, channels):
        z[:, c] = 0.6 * z[:, c - 1] + 0.8 * z[:, c]
    return list(z.cumsum(-1).mul(0.05).add(z))


def naive_alpha(maps: list[np.ndarray], window: int) -> float:
    sums, count = None, 0
    for m in maps:
        for start in range(0, m.shape[1] - window + 1, window):
            x = m[:, start : start + window]
            h, w = x.shape
            power = np.abs(np.fft.fftshift(np.fft.fft2(x))) ** 2 / x.size
            kh = np.arange(h)[:, None] - h // 2
            kw = np.arange(w)[None, :] - w // 2
            rings = np.sqrt(kh**2 + kw**2).round()
            n = (max(h, w) + 1) // 2
            s = np.array([power[rings == r].mean() for r in range(n)])
            sums = s if sums is None else sums + s
            count += 1
    freq = np.arange(len(sums)) / max(maps[0].shape[0], window)
    return spectral_slope(freq, sums / count)[0]


def naive_lpi(maps: list[np.ndarray], lam: float, ridge: float) -> np.ndarray:
    z = np.concatenate(maps, axis=1).astype(np.float64)
    z = (z - z.mean(1, keepdims=True)) / z.std(1, keepdims=True)
    channels = z.shape[0]
    r = math.ceil(lam * channels - 1e-9)
    out = []
    for c in range(channels):
        nb = [j for j in range(c - r, c + r + 1) if j != c and 0 <= j < channels]
        x, y = z[nb].T, z[c]
        w = np.linalg.solve(x.T @ x + ridge * np.eye(len(nb)), x.T @ y)
        out.append(1 - np.sum((y - x @ w) ** 2) / np.sum(y**2))
    return np.array(out)


def best_of(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clips", type=int, default=200)
    p.add_argument("--channels", type=int, default=64)
    p.add_argument("--frames", type=int, default=646)  # 30 s at 44.1 kHz / 2048
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default="bench/results/analysis.json")
    args = p.parse_args()
    settings = AnalysisSettings()
    load_at_start = list(os.getloadavg())  # wall times on a shared machine mean little without the load
    maps = synthetic_latents(args.clips, args.channels, args.frames)
    maps_np = [m.double().numpy() for m in maps]

    def fast_alpha():
        freq, s, _ = mean_spectrum(maps, settings.window, settings.hop)
        return spectral_slope(freq, s)[0]

    t_alpha, alpha = best_of(fast_alpha, args.repeats)
    t_lpi, per = best_of(lambda: lpi_per_channel(maps, settings.lam, settings.ridge).numpy(), args.repeats)
    t_alpha_naive, alpha_naive = best_of(lambda: naive_alpha(maps_np, settings.window), 1)
    t_lpi_naive, per_naive = best_of(lambda: naive_lpi(maps_np, settings.lam, settings.ridge), 1)
    result = {
        "task": f"alpha + LPI on {args.clips} clips x {args.channels} channels x {args.frames} frames",
        "settings": {"lam": settings.lam, "ridge": settings.ridge, "window": settings.window, "hop": settings.hop},
        "machine": {"platform": platform.platform(), "processor": platform.processor(),
                    "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "load_average_at_start": load_at_start, "load_average_at_end": list(os.getloadavg())},
        "versions": versions(),
        "seconds": {"alpha": t_alpha, "lpi": t_lpi, "total": t_alpha + t_lpi,
                    "alpha_naive": t_alpha_naive, "lpi_naive": t_lpi_naive,
                    "total_naive": t_alpha_naive + t_lpi_naive},
        "speedup": {"alpha": t_alpha_naive / t_alpha, "lpi": t_lpi_naive / t_lpi,
                    "total": (t_alpha_naive + t_lpi_naive) / (t_alpha + t_lpi)},
        "agreement": {"alpha": alpha, "alpha_naive": alpha_naive,
                      "lpi": float(per.mean()), "lpi_naive": float(per_naive.mean()),
                      "lpi_per_channel_max_abs_diff": float(np.abs(per - per_naive).max())},
        "repeats": args.repeats,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("seconds", "speedup", "agreement")}, indent=2))


if __name__ == "__main__":
    main()
