"""Controls that tell channel locality from redundancy, and intervals for every measure (docs/analysis.md,
"Locality or redundancy? The controls").

alpha and LPI (Sec. 3) beside their baselines (the same latent in K random channel orders, and in K orders
that keep contiguous groups of `group_size` channels: group order shuffled, channels shuffled within groups),
order-invariant measures (channel-covariance eigen-spectrum, temporal PSD slope of each principal component),
and a percentile bootstrap interval over clips for each where at least `min_clips` effective clips carry it.

Everything is computed from per-clip sufficient statistics (frame count, mean, centred scatter matrix,
summed window spectra under each permutation, summed PC periodograms), so a bootstrap resample is a weighted
sum of them: no latent is re-read or re-transformed per resample.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from lafa.analysis.locality import lpi_from_gram, neighbour_radius
from lafa.analysis.spectrum import fit_slopes, rapsd, ring_frequencies, slope_operator, windows

MEASURES = ("alpha", "alpha_permuted", "alpha_excess", "lpi", "lpi_permuted", "lpi_excess",
            "participation_ratio", "eigen_decay_slope", "pc_temporal_slope")
GROUP_BASELINES = ("group_order", "within_group")  # the group-aware baselines (module docstring)
GROUP_MEASURES = tuple(f"{m}_{b}{suffix}" for b in GROUP_BASELINES for m in ("alpha", "lpi") for suffix in ("", "_excess"))
ALL_MEASURES = MEASURES + GROUP_MEASURES
# which per-clip units carry each measure: full temporal windows (the spectra) or frames (LPI, covariance)
SPECTRUM_MEASURES = tuple(m for m in ALL_MEASURES if m.startswith("alpha")) + ("pc_temporal_slope",)
FRAME_MEASURES = tuple(m for m in ALL_MEASURES if m not in SPECTRUM_MEASURES)
MIN_CLIPS = 10  # effective clips below which a measure gets no bootstrap interval (docs/analysis.md)
DEFAULT_GROUP_SIZE = 8  # the LAFA encoder's output group at its defaults (64 -> 64 channels, groups of 8)
EIGEN_FLOOR = 1e-10  # eigenvalues below this fraction of the largest are numerical zeros (rank deficiency)
ELEMENTS = 2**23  # float64 elements of one batched LPI solve (64 MiB): wide latents are scored in slices


def participation_ratio(eigenvalues: np.ndarray | torch.Tensor) -> float:
    """(sum lambda)^2 / sum lambda^2: the effective number of dimensions, from 1 (one direction) to C (all equal)."""
    lam = np.clip(np.asarray(eigenvalues, dtype=np.float64), 0.0, None)
    square = float((lam * lam).sum())
    return float(lam.sum() ** 2 / square) if square > 0 else float("nan")


def eigen_decay_slope(eigenvalues: np.ndarray | torch.Tensor, floor: float = EIGEN_FLOOR) -> tuple[float, int]:
    """Power-law decay beta of the sorted eigenvalues, lambda_k ~ k^-beta, and the number of ranks fitted.

    Fitted like alpha (Appendix C's recipe): log lambda interpolated onto an even grid in log k, least squares;
    ranks below floor * lambda_1 (numerical zeros) are left out. NaN if fewer than two ranks remain.
    """
    lam = np.sort(np.asarray(eigenvalues, dtype=np.float64))[::-1]
    used = int((lam > floor * lam[0]).sum()) if lam[0] > 0 else 0
    if used < 2:
        return float("nan"), used
    return float(fit_slopes(np.arange(1, used + 1), lam[:used])), used


def excess_name(measure: str, baseline: str) -> str:
    """alpha, permuted -> alpha_excess (the random baseline's, named as before); lpi, group_order ->
    lpi_group_order_excess."""
    return f"{measure}_excess" if baseline == "permuted" else f"{measure}_{baseline}_excess"


def effective_clips(weights: np.ndarray | Sequence[float]) -> float:
    """Kish's effective number of clips (sum w)^2 / sum w^2 of per-clip weights (windows or frames): the
    number of clips for equal weights, ~1 when one clip carries nearly everything; 0 without any weight."""
    w = np.asarray(weights, dtype=np.float64)
    square = float((w * w).sum())
    return float(w.sum() ** 2 / square) if square > 0 else 0.0


def group_baseline_problem(channels: int, group_size: int | None) -> str | None:
    """Why the group-aware baselines do not apply to `channels` in groups of `group_size` (None: they do)."""
    if not group_size:
        return "no group size given"
    if group_size <= 1 or group_size >= channels:
        return f"group size {group_size} leaves nothing to shuffle for {channels} channels (needs 1 < g < C)"
    if channels % group_size:
        return f"group size {group_size} does not divide {channels} channels"
    return None


def group_permutations(channels: int, group_size: int, count: int, kind: str,
                       rng: np.random.Generator) -> np.ndarray:
    """(count, C) channel orders (new channel i = old channel p[i]) that keep contiguous groups of group_size:
    "group_order": the groups in a random order, each whole and in its own order; "within_group": the channels
    of each group in a random order, every group in place."""
    groups = channels // group_size
    offsets = np.arange(group_size)
    out = []
    for _ in range(count):
        if kind == "group_order":
            out.append((rng.permutation(groups)[:, None] * group_size + offsets[None, :]).ravel())
        elif kind == "within_group":
            out.append((np.arange(groups)[:, None] * group_size
                        + np.stack([rng.permutation(group_size) for _ in range(groups)])).ravel())
        else:
            raise ValueError(f"unknown group baseline {kind!r}; one of {GROUP_BASELINES}")
    return np.stack(out) if out else np.zeros((0, channels), dtype=np.int64)


def _as_maps(latents: torch.Tensor | Sequence[torch.Tensor]) -> list[torch.Tensor]:
    if isinstance(latents, torch.Tensor):
        if latents.ndim != 3:
            raise ValueError(f"expected latents (N, C, T), got shape {tuple(latents.shape)}")
        latents = list(latents)
    maps = [m.detach().cpu() for m in latents]
    if not maps:
        raise ValueError("no latents given")
    if any(m.ndim != 2 for m in maps) or len({m.shape[0] for m in maps}) != 1:
        raise ValueError(f"latents must be (C, T_i) with one channel count, got {[tuple(m.shape) for m in maps]}")
    return maps


def _clip_statistics(maps: list[torch.Tensor], perms: torch.Tensor, window: int, hop: int) -> dict:
    """Per clip: frames, mean (C,), centred scatter (C, C), summed window spectra under each permutation
    (P, R) and window count; float64 except the spectra, which keep the maps' precision like `mean_spectrum`."""
    counts, means, scatters, spectra, nwin = [], [], [], [], []
    channels = maps[0].shape[0]
    rings = len(ring_frequencies(channels, window))
    for m in maps:
        x = m.double()
        mu = x.mean(1)
        d = x - mu[:, None]
        counts.append(x.shape[1])
        means.append(mu)
        scatters.append(d @ d.T)
        wins = windows(m, window, hop)  # (K_i, C, window)
        nwin.append(len(wins))
        if len(wins):
            spectra.append(rapsd(wins[:, perms, :]).sum(0))  # (K_i, P, C, window) -> (P, R)
        else:
            spectra.append(torch.zeros(len(perms), rings, dtype=torch.float64))
    return {"counts": torch.tensor(counts, dtype=torch.float64), "means": torch.stack(means),
            "scatters": torch.stack(scatters), "spectra": torch.stack(spectra),
            "windows": torch.tensor(nwin, dtype=torch.float64)}


def _pc_periodogram(m: torch.Tensor, vectors: torch.Tensor, window: int, hop: int) -> torch.Tensor:
    """(C, T) map -> (C, window // 2 + 1): summed over its windows, the temporal periodogram of each principal
    component (the window projected onto the eigenvectors); zeros for a clip shorter than a window."""
    wins = windows(m.double(), window, hop)  # (K, C, window)
    if len(wins) == 0:
        return torch.zeros(m.shape[0], window // 2 + 1, dtype=torch.float64)
    projected = torch.einsum("ck,wct->wkt", vectors, wins)  # (K, C, window): component k of each window
    return (torch.fft.rfft(projected, dim=-1).abs().square() / window).sum(0)


def _pooled(stats: dict, weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Clip weights (..., clips) -> (N (...,), centred scatter (..., C, C)) of the weighted union of the clips'
    frames: within-clip scatter plus the between-clip term of the clip means (centred at the pooled mean of
    all clips first, so the raw second moment loses no precision)."""
    d = stats["means"] - (stats["counts"][:, None] * stats["means"]).sum(0) / stats["counts"].sum()  # (clips, C)
    wn = weights * stats["counts"]  # (..., clips)
    n = wn.sum(-1)
    shift = wn @ d / n[..., None]  # (..., C): resample mean minus pooled mean
    channels = d.shape[1]
    within = (weights @ stats["scatters"].flatten(1)).unflatten(-1, (channels, channels))
    between = (wn @ (d[:, :, None] * d[:, None, :]).flatten(1)).unflatten(-1, (channels, channels))
    return n, within + between - n[..., None, None] * shift[..., :, None] * shift[..., None, :]


def _standardised_gram(n: torch.Tensor, scatter: torch.Tensor) -> torch.Tensor:
    """Gram matrix of the standardised channels (diagonal n; 0 rows for a constant channel), as `standardise`:
    (...,), (..., C, C) -> (..., C, C)."""
    std = (scatter.diagonal(dim1=-2, dim2=-1) / n[..., None]).sqrt()
    inv = torch.where(std > 0, 1.0 / std.clamp_min(1e-300), torch.zeros_like(std))
    return scatter * inv[..., :, None] * inv[..., None, :]


def _lpis(n: torch.Tensor, scatter: torch.Tensor, perms: torch.Tensor, lam: float, ridge: float) -> torch.Tensor:
    """LPI of the latent under each channel permutation: (...,), (..., C, C) -> (..., P)."""
    gram = _standardised_gram(n, scatter)
    channels, batch = gram.shape[-1], gram[..., 0, 0].numel()
    width = 2 * neighbour_radius(channels, lam)
    per_call = max(1, ELEMENTS // (batch * channels * max(channels, width * width)))  # bounds the solve's memory
    return torch.cat([lpi_from_gram(gram[..., p[:, :, None], p[:, None, :]], lam, ridge).mean(-1)  # gram of z[p]
                      for p in perms.split(per_call)], dim=-1)


def _interval(samples: np.ndarray, confidence: float) -> tuple[float | None, float | None]:
    samples = samples[np.isfinite(samples)]
    if len(samples) < 2:
        return None, None
    q = (1.0 - confidence) / 2.0
    return float(np.quantile(samples, q)), float(np.quantile(samples, 1.0 - q))


def _finite(x: float) -> float | None:
    return float(x) if x is not None and math.isfinite(x) else None


def locality_measures(latents: torch.Tensor | Sequence[torch.Tensor], lam: float = 0.06, ridge: float = 1.0,
                      window: int = 64, hop: int | None = None, grid_points: int | None = None,
                      permutations: int = 20, bootstrap: int = 200, confidence: float = 0.95,
                      seed: int = 0, min_clips: int = MIN_CLIPS, group_size: int | None = DEFAULT_GROUP_SIZE,
                      group_source: str = "given") -> dict:
    """Every locality measure of one representation, with permutation baselines and bootstrap intervals.

    latents: (N, C, T) or a list of (C, T_i) maps (clips, real frames only); the knobs are those of
    `lafa.analysis.latent_report.AnalysisSettings` (group_size None or 0: no group baselines), group_source
    says where group_size came from (reported as is).

    Returns {measure: {"value", "low", "high", ...}} for each name in ALL_MEASURES (the baselines with the
    mean, std, min, max and values over their K orders, each *_excess with its one-sided permutation p-value),
    plus "eigenvalues" (sorted), "counts", "support", "warnings", "groups" and "settings" (docs/analysis.md).
    Intervals are None where fewer than min_clips effective clips carry the measure (or no resample is drawn).
    The PC slope's interval keeps the principal directions of the full sample fixed.
    """
    maps = _as_maps(latents)
    hop = hop or window
    channels = maps[0].shape[0]
    rng = np.random.default_rng(seed)
    orders = {"permuted": np.stack([rng.permutation(channels) for _ in range(permutations)])
              if permutations else np.zeros((0, channels), dtype=np.int64)}
    group_problem = group_baseline_problem(channels, group_size)
    if group_problem is None and permutations:
        group_rng = np.random.default_rng([seed, 22])  # its own stream: the random orders and resamples stay as before
        for kind in GROUP_BASELINES:
            orders[kind] = group_permutations(channels, group_size, permutations, kind, group_rng)
    rows, start = {}, 1  # row 0: the channels as given
    for kind, o in orders.items():
        rows[kind] = slice(start, start + len(o))
        start += len(o)
    perms = torch.from_numpy(np.concatenate([np.arange(channels)[None], *orders.values()]).astype(np.int64))
    stats = _clip_statistics(maps, perms, window, hop)
    if float(stats["windows"].sum()) == 0:
        raise ValueError(f"no clip has a full window of {window} frames; lower the window or use longer clips")
    clips = len(maps)
    freq = ring_frequencies(channels, window)
    slope_operator(freq, grid_points)  # fails early on a window too short for a slope

    # what the measures rest on: clips with a full window (spectra) and clips with frames (LPI, covariance)
    support = {}
    for part, measures, unit, count, per_clip in (
            ("spectrum", SPECTRUM_MEASURES, f"windows of {window} frames", "windows", stats["windows"]),
            ("frames", FRAME_MEASURES, "frames", "frames", stats["counts"])):
        per_clip = per_clip.numpy()
        effective = effective_clips(per_clip)
        support[part] = {"measures": list(measures), "unit": unit, "clips": int((per_clip > 0).sum()),
                         "of_clips": clips, count: int(per_clip.sum()), "effective_clips": effective,
                         "interval": bool(bootstrap and effective >= max(2, min_clips))}

    # full sample
    n, scatter = _pooled(stats, torch.ones(clips, dtype=torch.float64))
    lpis = _lpis(n, scatter, perms, lam, ridge).numpy()  # (P,)
    alphas = fit_slopes(freq, (stats["spectra"].sum(0) / stats["windows"].sum()).numpy(), grid_points)  # (P,)
    eigenvalues, vectors = torch.linalg.eigh(scatter / n)
    eigenvalues, vectors = eigenvalues.flip(0).clamp_min(0.0), vectors.flip(1)  # descending
    lam_np = eigenvalues.numpy()
    pr = participation_ratio(lam_np)
    decay, ranks = eigen_decay_slope(lam_np)
    significant = lam_np > EIGEN_FLOOR * lam_np[0] if lam_np[0] > 0 else np.zeros(channels, bool)

    # temporal-only PSD of each principal component, summed over every clip's windows: (clips, C, F)
    t_freq = np.fft.rfftfreq(window)
    pc_spectra = torch.stack([_pc_periodogram(m, vectors, window, hop) for m in maps])
    pc_weights = lam_np * significant

    def pc_slope(spectra: np.ndarray) -> tuple[np.ndarray, float]:
        slopes = fit_slopes(t_freq, spectra, grid_points)  # (..., C)
        ok = significant & np.isfinite(slopes)
        mean = float((slopes[..., ok] * pc_weights[ok]).sum(-1) / pc_weights[ok].sum()) if ok.any() else float("nan")
        return slopes, mean

    pc_slopes, pc_mean = pc_slope((pc_spectra.sum(0) / stats["windows"].sum()).numpy())

    # bootstrap over clips (drawn whenever there are 2 clips; an interval is reported only with enough support)
    resampled = bootstrap if clips > 1 else 0
    reps = {name: np.full(resampled, np.nan) for name in ALL_MEASURES}
    if resampled:
        weights = torch.from_numpy(np.stack([np.bincount(rng.integers(0, clips, clips), minlength=clips)
                                             for _ in range(bootstrap)])).double()  # (B, clips)
        win_b = weights @ stats["windows"]  # (B,)
        spec_b = torch.einsum("bi,ipr->bpr", weights, stats["spectra"]) / win_b[:, None, None]
        alpha_b = fit_slopes(freq, spec_b.numpy(), grid_points)  # (B, P); NaN where a resample has no window
        pc_b = (torch.einsum("bi,ikf->bkf", weights, pc_spectra) / win_b[:, None, None]).numpy()
        width = 2 * neighbour_radius(channels, lam)
        chunk = max(1, ELEMENTS // (len(perms) * channels * max(channels, width * width)))  # resamples per solve
        for start in range(0, bootstrap, chunk):
            part = slice(start, min(start + chunk, bootstrap))
            n_b, scatter_b = _pooled(stats, weights[part])  # (b,), (b, C, C)
            lpi_b = _lpis(n_b, scatter_b, perms, lam, ridge).numpy()  # (b, P)
            eig_b = torch.linalg.eigvalsh(scatter_b / n_b[:, None, None]).numpy()  # (b, C)
            reps["lpi"][part], reps["alpha"][part] = lpi_b[:, 0], alpha_b[part, 0]
            for kind, rows_k in rows.items():
                if rows_k.stop > rows_k.start:
                    lpi_k, alpha_k = lpi_b[:, rows_k].mean(1), alpha_b[part, rows_k].mean(1)
                    reps[f"lpi_{kind}"][part], reps[f"alpha_{kind}"][part] = lpi_k, alpha_k
                    reps[excess_name("lpi", kind)][part] = lpi_b[:, 0] - lpi_k
                    reps[excess_name("alpha", kind)][part] = alpha_b[part, 0] - alpha_k
            for j, b in enumerate(range(part.start, part.stop)):
                reps["participation_ratio"][b] = participation_ratio(eig_b[j])
                reps["eigen_decay_slope"][b] = eigen_decay_slope(eig_b[j])[0]
                reps["pc_temporal_slope"][b] = pc_slope(pc_b[b])[1]

    def entry(name: str, value: float, **extra) -> dict:
        carried = support["spectrum" if name in SPECTRUM_MEASURES else "frames"]["interval"]
        low, high = _interval(reps[name], confidence) if carried else (None, None)
        return {"value": _finite(value), "low": low, "high": high, **extra}

    out = {
        "alpha": entry("alpha", alphas[0]),
        "lpi": entry("lpi", lpis[0]),
        "participation_ratio": entry("participation_ratio", pr, fraction=_finite(pr / channels)),
        "eigen_decay_slope": entry("eigen_decay_slope", decay, ranks=ranks),
        "pc_temporal_slope": entry("pc_temporal_slope", pc_mean, per_component=[_finite(s) for s in pc_slopes],
                                   components=int(significant.sum()), weighting="eigenvalue"),
    }
    for kind in ("permuted", *GROUP_BASELINES):
        for name, values in (("alpha", alphas), ("lpi", lpis)):
            rows_k = rows.get(kind)
            if rows_k is None or rows_k.stop == rows_k.start:
                note = group_problem if kind in GROUP_BASELINES and group_problem else "no permutations asked for"
                out[f"{name}_{kind}"] = out[excess_name(name, kind)] = {"value": None, "low": None, "high": None,
                                                                       "note": note}
                continue
            base = values[rows_k]
            out[f"{name}_{kind}"] = entry(f"{name}_{kind}", base.mean(),
                                          std=_finite(base.std(ddof=1)) if len(base) > 1 else None,
                                          min=float(base.min()), max=float(base.max()), values=base.tolist())
            out[excess_name(name, kind)] = entry(excess_name(name, kind), values[0] - base.mean(),
                                                 p_value=float((1 + (base >= values[0]).sum()) / (len(base) + 1)))
    out = {name: out[name] for name in ALL_MEASURES}
    out["eigenvalues"] = lam_np.tolist()
    out["counts"] = {"clips": clips, "channels": channels, "samples": int(n.item()), "windows": int(stats["windows"].sum()),
                     "bootstrap_valid": {k: int(np.isfinite(v).sum()) for k, v in reps.items()}}
    out["support"] = support
    out["warnings"] = support_warnings(support, window, bootstrap, min_clips, lam, channels)
    out["groups"] = {"size": group_size or None, "source": group_source, "count": channels // group_size
                     if group_problem is None else None, "applies": group_problem is None, "note": group_problem}
    out["settings"] = {"lam": lam, "ridge": ridge, "window": window, "hop": hop, "grid_points": grid_points,
                       "permutations": permutations, "bootstrap": bootstrap, "confidence": confidence,
                       "seed": seed, "resampling_unit": "clip", "interval": "percentile", "min_clips": min_clips,
                       "group_size": group_size or None}
    return out


def support_warnings(support: dict, window: int, bootstrap: int, min_clips: int, lam: float,
                     channels: int) -> list[str]:
    """One line per figure that rests on too little: clips that add nothing to the spectra, measures without
    an interval for want of clips, an in-sample LPI on too few frames."""
    lines = []
    spec, frames = support["spectrum"], support["frames"]
    if spec["clips"] < spec["of_clips"]:
        lines.append(f"{spec['of_clips'] - spec['clips']} of {spec['of_clips']} clips are shorter than the "
                     f"{window}-frame window: alpha, its baselines and the PC t-slope rest on the other "
                     f"{spec['clips']} ({spec['windows']} windows)")
    for part, names in ((spec, "alpha, its baselines and the PC t-slope"), (frames, "LPI, its baselines, PR and eig. slope")):
        if bootstrap and not part["interval"]:
            lines.append(f"{names}: no interval: {part['effective_clips']:.1f} effective clips "
                         f"({part['clips']} clip{'' if part['clips'] == 1 else 's'}, {part.get('windows', part.get('frames'))} "
                         f"{part['unit']}) "
                         f"carry them, fewer than the {max(2, min_clips)} needed to resample")
    width = 2 * neighbour_radius(channels, lam)
    if frames["frames"] < 20 * width:
        lines.append(f"LPI rests on {frames['frames']} frames for {width} neighbours: in-sample R^2 is inflated by "
                     f"about 2r / N = {width / frames['frames']:.2f} for unrelated channels")
    return lines
