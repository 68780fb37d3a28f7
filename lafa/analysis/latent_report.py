"""One representation's numbers (alpha, LPI, spectrum, correlations) and the JSON report that holds several."""

from __future__ import annotations

import json
import platform
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from lafa.analysis.controls import ALL_MEASURES, DEFAULT_GROUP_SIZE, MIN_CLIPS, locality_measures
from lafa.analysis.locality import channel_correlation, lpi_per_channel, neighbour_radius, stack_samples
from lafa.analysis.spectrum import mean_spectrum, spectral_slope


@dataclass
class AnalysisSettings:
    """The knobs of Sec. 3 / Appendix C that the paper leaves open (defaults: docs/analysis.md).

    Args:
        lam: LPI_lambda neighbourhood fraction, r = ceil(lam C) neighbours on each side (Sec. 3.2)
        ridge: ridge penalty of the LPI regressions on standardised channels (scikit-learn Ridge alpha)
        window: frames per temporal window of the spectrum (alpha, PC t-slope); shorter clips add no window
        hop: frames between window starts
        grid_points: size of the even log-f grid of the slope fit (null: one point per ring)
        permutations: channel orders K of each baseline (random, group order, within group); 0: no baselines
        bootstrap: resamples of the clips for the percentile intervals (0: no intervals)
        confidence: level of the percentile intervals
        min_clips: effective clips (Kish: (sum w)^2 / sum w^2 over windows or frames) a measure needs for an
            interval; fewer: no interval and a warning
        group_size: channels per contiguous group of the group-aware baselines (null: a LAFA encoder's own
            output group, else 8; 0: no group baselines)
    """

    lam: float = 0.06
    ridge: float = 1.0
    window: int = 64
    hop: int = 64
    grid_points: int | None = None
    permutations: int = 20
    bootstrap: int = 200
    confidence: float = 0.95
    min_clips: int = MIN_CLIPS
    group_size: int | None = None  # None: the encoder's output group where known, else DEFAULT_GROUP_SIZE


def group_size_for(settings: AnalysisSettings, known: int | None = None) -> tuple[int | None, str]:
    """(group size, where it came from) of the group-aware baselines: --analysis.group_size when set (0: none),
    else the encoder's own output group (`known`), else DEFAULT_GROUP_SIZE."""
    if settings.group_size is not None:
        return (settings.group_size or None), ("--analysis.group_size" if settings.group_size else "off")
    if known:
        return known, "the encoder's output groups"
    return DEFAULT_GROUP_SIZE, f"default ({DEFAULT_GROUP_SIZE}: the LAFA encoder's output group at its defaults)"


def output_group_size(autoencoder) -> int | None:
    """Channels per output group of a LAFA autoencoder's encoder (its grouped output heads write the latent in
    contiguous groups of out_channels / groups: lafa.models.lafa_encoder); None for any other autoencoder."""
    encoder = getattr(getattr(autoencoder, "lafa", None), "encoder", None)
    groups, out_channels = getattr(encoder, "groups", None), getattr(encoder, "out_channels", None)
    return out_channels // groups if groups and out_channels else None


def analyze_maps(maps: list[torch.Tensor], settings: AnalysisSettings, seed: int = 0,
                 group_size: int | None = None) -> dict:
    """(C, T_i) maps of one representation (latents or log-mel, real frames only) -> its numbers.

    Under "controls": every measure of `lafa.analysis.controls.locality_measures` (`seed` draws its orders and
    resamples). group_size: the output group of the encoder that made the maps, where known (`group_size_for`).
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
    groups, source = group_size_for(settings, group_size)
    controls = locality_measures(maps, settings.lam, settings.ridge, settings.window, settings.hop,
                                 settings.grid_points, settings.permutations, settings.bootstrap,
                                 settings.confidence, seed, settings.min_clips, groups, source)
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
        "warnings": controls["warnings"],  # figures that rest on too little (lafa.analysis.controls)
        "controls": controls,
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
    summary.update({name: controls[name]["value"] for name in ALL_MEASURES if name in controls and name not in summary})
    if controls:
        summary["intervals"] = {name: [controls[name]["low"], controls[name]["high"]] for name in ALL_MEASURES
                                if name in controls}
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


TABLE_COLUMNS = (  # (summary key, column heading, digits): every measure, one row per representation (study)
    ("alpha", "alpha", 2), ("alpha_permuted", "alpha perm.", 2), ("alpha_excess", "alpha excess", 2),
    ("lpi", "LPI", 3), ("lpi_permuted", "LPI perm.", 3), ("lpi_excess", "LPI excess", 3),
    ("participation_ratio", "PR", 1), ("eigen_decay_slope", "eig. slope", 2), ("pc_temporal_slope", "PC t-slope", 2),
)
HEADLINE_COLUMNS = (  # `lafa analyze`'s first table: the measures themselves
    ("alpha", "alpha", 2), ("lpi", "LPI", 3), ("participation_ratio", "PR", 1),
    ("eigen_decay_slope", "eig. slope", 2), ("pc_temporal_slope", "PC t-slope", 2),
)
BASELINE_COLUMNS = (  # its second table: each order-dependent measure against its three baselines
    ("", "measured"), ("_permuted", "random perm."), ("_permuted_excess", "excess vs random"),
    ("_group_order", "group order"), ("_group_order_excess", "excess vs group order"),
    ("_within_group", "within group"), ("_within_group_excess", "excess vs within group"),
)
COLUMN_DEFINITIONS = {  # every column heading of the tables, defined once (console legend, report.html)
    "alpha": "spectral decay exponent of the (time x channel) power spectrum, S(f) ~ f^-alpha (Sec. 3.1, "
             "Appendix C); higher: smoother map",
    "LPI": "Local Predictability Index (Sec. 3.2): mean over channels of the ridge R^2 of a channel from its "
           "+-r neighbours, r = ceil(lambda C)",
    "PR": "participation ratio (sum lambda)^2 / sum lambda^2 of the channel-covariance eigenvalues: the effective "
          "number of dimensions, 1 to C (order-invariant)",
    "eig. slope": "decay beta of the sorted channel-covariance eigenvalues, lambda_k ~ k^-beta (order-invariant)",
    "PC t-slope": "temporal-only PSD slope of each principal component, weighted by its eigenvalue: smoothness in "
                  "time without reference to channel order",
    "measured": "the measure on the channels in their own order",
    "random perm.": "mean of the measure over K random channel orders (same values, no channel order)",
    "group order": "mean over K orders that keep contiguous groups of g channels whole and shuffle the groups' order",
    "within group": "mean over K orders that shuffle the channels inside each group of g, groups in place",
    "excess vs random": "measured - random perm.: what the channel order carries",
    "excess vs group order": "measured - group order: order across group boundaries (~0 for block structure "
                             "without order)",
    "excess vs within group": "measured - within group: order inside the groups",
    "alpha perm.": "alpha over K random channel orders (mean)", "alpha excess": "alpha - alpha perm.",
    "LPI perm.": "LPI over K random channel orders (mean)", "LPI excess": "LPI - LPI perm.",
}


def format_measure(value: float | None, interval: list | None = None, digits: int = 3) -> str:
    """0.883 [0.878, 0.887]; "-" for a missing value; no brackets without an interval."""
    if value is None:
        return "-"
    text = f"{value:.{digits}f}"
    if interval and interval[0] is not None and interval[1] is not None:
        text += f" [{interval[0]:.{digits}f}, {interval[1]:.{digits}f}]"
    return text


def measures_table(summary: dict[str, dict], columns=TABLE_COLUMNS) -> tuple[list[str], list[list[str]]]:
    """(headings, rows): one row per representation, each measure with its bootstrap interval."""
    rows = [[label, *(format_measure(s.get(k), (s.get("intervals") or {}).get(k), d) for k, _, d in columns)]
            for label, s in summary.items()]
    return ["representation", *(h for _, h, _ in columns)], rows


def headline_table(summary: dict[str, dict]) -> tuple[list[str], list[list[str]]]:
    """(headings, rows) of the measures themselves: one row per representation, with intervals."""
    return measures_table(summary, HEADLINE_COLUMNS)


def baseline_table(summary: dict[str, dict]) -> tuple[list[str], list[list[str]]]:
    """(headings, rows) of alpha and LPI against the random, group-order and within-group baselines: one row
    per representation and measure; "-" where a baseline does not apply (see the groups line)."""
    headings = ["representation", "measure", *(h for _, h in BASELINE_COLUMNS)]
    rows = []
    for label, s in summary.items():
        intervals = s.get("intervals") or {}
        for measure, name, digits in (("alpha", "alpha", 2), ("lpi", "LPI", 3)):
            keys = [measure + suffix.replace("_permuted_excess", "_excess") for suffix, _ in BASELINE_COLUMNS]
            rows.append([label, name, *(format_measure(s.get(k), intervals.get(k), digits) for k in keys)])
    return headings, rows


def support_lines(label: str, controls: dict) -> list[str]:
    """What one representation's numbers rest on, in words (console and report.html)."""
    sup = controls.get("support")
    if not sup:
        return []
    spec, frames = sup["spectrum"], sup["frames"]
    groups = controls.get("groups") or {}

    def interval(part: dict) -> str:
        return "with intervals" if part["interval"] else "no interval"

    lines = [f"{label}: alpha and PC t-slope rest on {spec['clips']} of {spec['of_clips']} clips "
             f"({spec['windows']} {spec['unit']}, {spec['effective_clips']:.1f} effective clips; {interval(spec)}); "
             f"LPI, PR and eig. slope on {frames['clips']} clips ({frames['frames']} frames, "
             f"{frames['effective_clips']:.1f} effective clips; {interval(frames)})"]
    if groups.get("applies"):
        lines.append(f"{label}: groups of {groups['size']} channels ({groups['count']} groups; {groups['source']})")
    elif groups:
        lines.append(f"{label}: no group baselines: {groups.get('note')}")
    return lines


def text_table(headings: list[str], rows: list[list[str]]) -> str:
    """Columns padded to their widest cell, for the terminal."""
    widths = [max(len(str(r[i])) for r in [headings, *rows]) for i in range(len(headings))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in [headings, *rows]]
    return "\n".join([lines[0], "  ".join("-" * w for w in widths), *lines[1:]])
