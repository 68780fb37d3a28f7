"""Figures of the analysis (matplotlib, Agg): PSD curves with fitted slopes (Fig. 2), channel-correlation
heat maps with LPI in the titles (Fig. 3), and the channel-ablation residual grid (Fig. 6)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure  # the object API: no pyplot state, renders with Agg
from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter


def log_ticks(low: float, high: float, most: int = 7) -> list[float]:
    """Tick values m x 10^k (m in 1, 2, 3, 5; fewer when that makes more than `most`) inside [low, high], for
    a log axis; a range holding fewer than two gets its ends."""
    for subs in ((1, 2, 3, 5), (1, 2, 5), (1, 3), (1,)):
        ticks = [m * 10.0**k for k in range(math.floor(math.log10(low)) - 1, math.ceil(math.log10(high)) + 1)
                 for m in subs if low * (1 - 1e-9) <= m * 10.0**k <= high * (1 + 1e-9)]
        if len(ticks) <= most:
            break
    return ticks if len(ticks) >= 2 else sorted({low, high, *ticks})


def psd_figure(curves: dict[str, dict]) -> Figure:
    """curves: label -> {"freq", "spectrum", "alpha", "intercept"}. Each spectrum is drawn divided by its sum
    (pysteps' `normalize`), so representations of different scale share the axes; alpha is unchanged."""
    fig = Figure(figsize=(6, 4.5), layout="constrained")
    ax = fig.subplots()
    lows, highs = [], []
    for i, (label, c) in enumerate(curves.items()):
        f, s = np.asarray(c["freq"]), np.asarray(c["spectrum"])
        keep = f > 0
        lows.append(f[keep].min())
        highs.append(f[keep].max())
        scale = s[keep].sum()
        color = f"C{i}"
        spec = ((c.get("controls") or {}).get("support") or {}).get("spectrum")
        rests = f"; {spec['clips']} of {spec['of_clips']} clips, {spec['windows']} windows" if spec else ""
        ax.loglog(f[keep], s[keep] / scale, color=color, label=f"{label} (alpha = {c['alpha']:.2f}{rests})")
        fit = np.exp(c["intercept"]) * f[keep] ** (-c["alpha"]) / scale
        ax.loglog(f[keep], fit, color=color, linestyle="--", linewidth=1)
    # fixed 1-2-5 ticks with plain labels: a log axis spanning about one decade otherwise labels its minor
    # ticks too, and the labels overlap
    ax.xaxis.set_major_locator(FixedLocator(log_ticks(min(lows), max(highs))))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set(xlabel="normalised radial frequency f", ylabel="S(f) / sum S",
           title="Radially averaged power spectrum (dashed: fitted power law)")
    ax.legend(fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    return fig


def correlation_figure(panels: dict[str, dict]) -> Figure:
    """panels: label -> {"corr": (C, C), "lpi": float, "lam": float}, one heat map each, side by side."""
    n = len(panels)
    fig = Figure(figsize=(4 * n + 1, 4.4), layout="constrained")
    axes = fig.subplots(1, n, squeeze=False)
    image = None
    for ax, (label, p) in zip(axes[0], panels.items(), strict=True):
        image = ax.imshow(np.asarray(p["corr"]), cmap="RdBu_r", vmin=-1, vmax=1, interpolation="nearest")
        ax.set_title(f"{label}\nLPI_{p['lam']:g} = {p['lpi']:.3f}", fontsize=9)
        ax.set(xlabel="channel", ylabel="channel")
    fig.colorbar(image, ax=axes[0].tolist(), shrink=0.8, label="correlation")
    return fig


def ablation_figure(residuals: np.ndarray, label: str) -> Figure:
    """residuals: (C, n_mels, frames) log-mel residuals, one panel per ablated channel (Appendix G)."""
    residuals = np.asarray(residuals)
    channels = residuals.shape[0]
    cols = math.ceil(math.sqrt(channels))
    rows = math.ceil(channels / cols)
    limit = float(np.abs(residuals).max()) or 1.0
    fig = Figure(figsize=(1.6 * cols, 1.3 * rows + 0.4), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    for c, ax in enumerate(axes.flat):
        ax.set_xticks([])
        ax.set_yticks([])
        if c >= channels:
            ax.axis("off")
            continue
        ax.imshow(residuals[c], origin="lower", aspect="auto", cmap="RdBu_r", vmin=-limit, vmax=limit)
        ax.set_title(f"ch {c}", fontsize=6, pad=1)
    fig.suptitle(f"{label}\nlog-mel residual, one channel replaced by noise", fontsize=9)
    return fig


def save_figure(fig: Figure, path: str | Path, dpi: int = 120) -> Path:
    """Write a PNG."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    return path


BASELINE_STYLES = (  # (key suffix, legend, x offset, marker, colour) of each baseline in permutation_figure
    ("permuted", "random channel orders", 0.0, "o", "0.6"),
    ("group_order", "group order shuffled", 0.14, "^", "tab:purple"),
    ("within_group", "shuffled within groups", 0.28, "s", "tab:olive"),
)


def permutation_figure(results: dict[str, dict]) -> Figure:
    """results: label -> analyze_maps output. alpha and LPI of each representation (dot, with its bootstrap
    interval where there is one) beside its baselines: random channel orders, group order shuffled, channels
    shuffled within groups (small markers: each order; bar: their mean). The x labels say what each rests on."""
    fig = Figure(figsize=(2.2 * len(results) + 4, 4.2), layout="constrained")
    axes = fig.subplots(1, 2)
    for ax, (name, title) in zip(axes, (("alpha", "spectral slope alpha"), ("lpi", "LPI")), strict=True):
        for i, r in enumerate(results.values()):
            c = r["controls"]
            for suffix, legend, dx, marker, colour in BASELINE_STYLES:
                values = (c.get(f"{name}_{suffix}") or {}).get("values") or []
                ax.scatter(np.full(len(values), i + dx), values, s=8, marker=marker, color=colour,
                           label=legend if i == 0 else None)
                if values:
                    ax.hlines(np.mean(values), i + dx - 0.05, i + dx + 0.05, color="0.2")
            m = c[name]
            if m["low"] is not None:  # a percentile interval need not contain the estimate: drawn as a bar
                ax.vlines(i - 0.15, m["low"], m["high"], color=f"C{i}", linewidth=2)
            ax.plot([i - 0.15], [m["value"]], "o", color=f"C{i}", label="measured (interval if any)" if i == 0 else None)
        ticks = []
        for label, r in results.items():
            sup = r["controls"]["support"]["spectrum" if name == "alpha" else "frames"]
            if name == "alpha":
                ticks.append(f"{label}\n{sup['clips']}/{sup['of_clips']} clips, {sup['windows']} win.")
            else:
                ticks.append(f"{label}\n{sup['clips']} clips, {sup['frames']} fr.")
        ax.set_xticks(range(len(results)), ticks, fontsize=7)
        ax.set_title(title, fontsize=9)
        ax.grid(True, axis="y", alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle("measured vs the same latent with its channels reordered (three baselines)", fontsize=9)
    return fig


def eigen_figure(results: dict[str, dict]) -> Figure:
    """Order-invariant view: normalised eigen-spectrum of the channel covariance (participation ratio and
    decay slope in the legend) and the temporal PSD slope of each principal component."""
    fig = Figure(figsize=(10, 4), layout="constrained")
    ax_eig, ax_pc = fig.subplots(1, 2)
    for i, (label, r) in enumerate(results.items()):
        c = r["controls"]
        lam = np.asarray(c["eigenvalues"], dtype=float)
        keep = lam > 0
        ranks = np.arange(1, len(lam) + 1)
        slope = c["eigen_decay_slope"]["value"]
        ax_eig.loglog(ranks[keep], lam[keep] / lam.sum(), color=f"C{i}",
                      label=f"{label} (PR {c['participation_ratio']['value']:.1f}, slope "
                            f"{'-' if slope is None else f'{slope:.2f}'})")
        pcs = np.array([np.nan if s is None else s for s in c["pc_temporal_slope"]["per_component"]], dtype=float)
        ax_pc.plot(ranks, pcs, ".-", color=f"C{i}", label=label)
    ax_eig.set(xlabel="rank k", ylabel="eigenvalue / trace")
    ax_eig.set_title("channel-covariance eigen-spectrum", fontsize=9)
    ax_eig.grid(True, which="both", alpha=0.3)
    ax_eig.legend(fontsize=7)
    ax_pc.set(xlabel="principal component", ylabel="temporal PSD slope")
    ax_pc.set_title("temporal-only PSD slope per principal component", fontsize=9)
    ax_pc.grid(True, alpha=0.3)
    ax_pc.legend(fontsize=7)
    return fig
