"""One representation's numbers (alpha, LPI, spectrum, correlations) and the JSON report that holds several."""

from __future__ import annotations

import json
import platform
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

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


def analyze_maps(maps: list[torch.Tensor], settings: AnalysisSettings) -> dict:
    """(C, T_i) maps of one representation (latents or log-mel, real frames only) -> its numbers.

    Returns alpha and intercept of the spectral fit, the averaged spectrum and its frequencies, LPI and
    its per-channel R^2, the channel-correlation matrix, and the counts the numbers rest on.
    """
    maps = [m.detach().cpu() for m in maps]  # spectra in the maps' precision, LPI in float64
    freq, spectrum, num_windows = mean_spectrum(maps, settings.window, settings.hop)
    alpha, intercept = spectral_slope(freq, spectrum, settings.grid_points)
    samples = stack_samples(maps)
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


def build_report(results: dict[str, dict], settings: AnalysisSettings, extra: dict | None = None) -> dict:
    """JSON-ready report: per representation alpha, LPI and the spectrum (correlations are in the figures)."""
    reps = {label: {k: v for k, v in r.items() if k != "corr"} for label, r in results.items()}
    return {
        "representations": reps,
        "summary": {label: {"alpha": r["alpha"], "lpi": r["lpi"]} for label, r in results.items()},
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
