"""One representation's numbers (alpha, LPI, spectrum, correlations) and the JSON report that holds several."""

from __future__ import annotations

import json
import platform
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from lafa.analysis.controls import MEASURES, locality_measures
from lafa.analysis.locality import channel_correlation, lpi_per_channel, neighbour_radius, stack_samples
from lafa.analysis.spectrum import mean_spectrum, spectral_slope


@dataclass
class AnalysisSettings:
    """The knobs of Sec. 3 / Appendix C that the paper leaves open (defaults: docs/analysis.md)."""

    lam: float = 0.06  # LPI_lambda neighbourhood fraction (Sec. 3.2)
    ridge: float = 1.0  # ridge penalty on the standardised channels (scikit-learn Ridge alpha convention)
    window: int = 64  # frames per temporal window of the spectrum (Sec. 3.1 averages over windows)
    hop: int = 64  # frames between window starts
    grid_points: int | None = None  # size of the even log-f grid of the slope fit (None: one per ring)
    permutations: int = 20  # random channel orders of the permutation baseline (lafa.analysis.controls)
    bootstrap: int = 200  # resamples of the clips for the intervals (0: none)
    confidence: float = 0.95  # of the percentile bootstrap intervals


def analyze_maps(maps: list[torch.Tensor], settings: AnalysisSettings, seed: int = 0) -> dict:
    """(C, T_i) maps of one representation (latents or log-mel, real frames only) -> its numbers.

    Returns alpha and intercept of the spectral fit, the averaged spectrum and its frequencies, LPI and
    its per-channel R^2, the channel-correlation matrix, the counts the numbers rest on, and under
    "controls" every measure of `lafa.analysis.controls.locality_measures` (permutation baselines, eigen
    measures, bootstrap intervals; `seed` draws the permutations and resamples).
    """
    maps = [m.detach().cpu() for m in maps]  # spectra in the maps' precision, LPI in float64
    if not all(torch.isfinite(m).all() for m in maps):
        raise ValueError("the maps hold NaN or infinite values")
    samples = stack_samples(maps)  # (C, N)
    if bool((samples == samples[:, :1]).all()):
        raise ValueError("every channel is constant over every clip: nothing to analyse")
    freq, spectrum, num_windows = mean_spectrum(maps, settings.window, settings.hop)
    alpha, intercept = spectral_slope(freq, spectrum, settings.grid_points)
    per_channel = lpi_per_channel([samples], settings.lam, settings.ridge)
    return {
        "alpha": alpha,
        "intercept": intercept,
        "lpi": float(per_channel.mean()),
        "lpi_per_channel": per_channel.tolist(),
        "neighbour_radius": neighbour_radius(samples.shape[0], settings.lam),
        "channels": samples.shape[0],
        "clips": len(maps),
        "samples": samples.shape[1],
        "windows": num_windows,
        "freq": freq.tolist(),
        "spectrum": spectrum.tolist(),
        "corr": channel_correlation([samples]).numpy(),
        "controls": locality_measures(maps, settings.lam, settings.ridge, settings.window, settings.hop,
                                      settings.grid_points, settings.permutations, settings.bootstrap,
                                      settings.confidence, seed),
    }


def versions() -> dict[str, str]:
    import lafa

    return {
        "lafa": lafa.__version__,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "numpy": np.__version__,
        "platform": platform.platform(),
    }


def summarise(result: dict) -> dict:
    """One representation's headline numbers: alpha, LPI and every control measure (value), with the
    bootstrap interval of each under "intervals" ([low, high], None where there is none)."""
    controls = result.get("controls") or {}
    summary = {"alpha": result["alpha"], "lpi": result["lpi"]}
    summary.update({name: controls[name]["value"] for name in MEASURES if name in controls and name not in summary})
    if controls:
        summary["intervals"] = {name: [controls[name]["low"], controls[name]["high"]] for name in MEASURES}
    return summary


def build_report(results: dict[str, dict], settings: AnalysisSettings, extra: dict | None = None) -> dict:
    """JSON-ready report: per representation alpha, LPI, the spectrum and the controls (correlations are in
    the figures); "summary" holds the headline numbers of each (`summarise`)."""
    reps = {label: {k: v for k, v in r.items() if k != "corr"} for label, r in results.items()}
    return {
        "representations": reps,
        "summary": {label: summarise(r) for label, r in results.items()},
        "settings": {**asdict(settings), **(extra or {})},
        "versions": versions(),
    }


def write_report(report: dict, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, default=_jsonable) + "\n")
    return path


def _jsonable(value):
    if isinstance(value, (np.ndarray, torch.Tensor)):
        return value.tolist()
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


TABLE_COLUMNS = (  # (summary key, column heading, digits)
    ("alpha", "alpha", 2), ("alpha_permuted", "alpha perm.", 2), ("alpha_excess", "alpha excess", 2),
    ("lpi", "LPI", 3), ("lpi_permuted", "LPI perm.", 3), ("lpi_excess", "LPI excess", 3),
    ("participation_ratio", "PR", 1), ("eigen_decay_slope", "eig. slope", 2), ("pc_temporal_slope", "PC t-slope", 2),
)


def format_measure(value: float | None, interval: list | None = None, digits: int = 3) -> str:
    """0.883 [0.878, 0.887]; "-" for a missing value; no brackets without an interval."""
    if value is None:
        return "-"
    text = f"{value:.{digits}f}"
    if interval and interval[0] is not None and interval[1] is not None:
        text += f" [{interval[0]:.{digits}f}, {interval[1]:.{digits}f}]"
    return text


def measures_table(summary: dict[str, dict]) -> tuple[list[str], list[list[str]]]:
    """(headings, rows): one row per representation, each measure with its bootstrap interval."""
    headings = ["representation", *(h for _, h, _ in TABLE_COLUMNS)]
    rows = []
    for label, s in summary.items():
        intervals = s.get("intervals") or {}
        rows.append([label, *(format_measure(s.get(k), intervals.get(k), d) for k, _, d in TABLE_COLUMNS)])
    return headings, rows


def text_table(headings: list[str], rows: list[list[str]]) -> str:
    """Columns padded to their widest cell, for the terminal."""
    widths = [max(len(str(r[i])) for r in [headings, *rows]) for i in range(len(headings))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in [headings, *rows]]
    return "\n".join([lines[0], "  ".join("-" * w for w in widths), *lines[1:]])
