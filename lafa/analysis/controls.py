"""Controls that tell channel locality from redundancy, and intervals for every measure (docs/analysis.md).

alpha and LPI (Sec. 3) depend on the order of the channels, but a high score does not prove an ordered,
local latent: low-rank (redundant) data scores high under any order. So each is reported beside its
channel-permutation baseline: the same latent with its channels shuffled by K random permutations (same
values, same covariance spectrum, no channel order). "Locality excess" = measured - mean over permutations.
Beside them, order-invariant descriptions of the latent that no channel permutation (nor rotation) changes:
the eigen-spectrum of the channel covariance (participation ratio, decay slope) and the temporal-only PSD
slope of each principal component. Every measure gets a percentile bootstrap interval over clips (the clip
is the unit of resampling: frames within a clip are correlated).

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
                      seed: int = 0) -> dict:
    """Every locality measure of one representation, with permutation baselines and bootstrap intervals.

    latents: (N, C, T) or a list of (C, T_i) maps (clips, real frames only). lam, ridge: LPI_lambda (Sec. 3.2);
    window, hop, grid_points: the spectrum and slope fit of alpha (Sec. 3.1, Appendix C), also used for the
    temporal PSD of the principal components. permutations: K random channel orders of the same latent;
    bootstrap: B resamples of the clips (with replacement); confidence: of the percentile intervals.

    Returns {measure: {"value", "low", "high", ...}} for each name in MEASURES, plus "eigenvalues" (sorted
    channel-covariance eigenvalues), "counts" and "settings". *_permuted hold the mean, std, min, max and
    values over the K permutations; *_excess = measured - permuted mean, with the one-sided permutation
    p-value (1 + #{permuted >= measured}) / (K + 1). Intervals are None when fewer than 2 clips (or resamples)
    allow one. The PC slope's interval keeps the principal directions of the full sample fixed.
    """
    maps = _as_maps(latents)
    hop = hop or window
    channels = maps[0].shape[0]
    rng = np.random.default_rng(seed)
    perms = torch.from_numpy(np.stack([np.arange(channels)] + [rng.permutation(channels) for _ in range(permutations)]))
    stats = _clip_statistics(maps, perms, window, hop)
    if float(stats["windows"].sum()) == 0:
        raise ValueError(f"no clip has a full window of {window} frames; lower the window or use longer clips")
    clips = len(maps)
    freq = ring_frequencies(channels, window)
    slope_operator(freq, grid_points)  # fails early on a window too short for a slope

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

    # bootstrap over clips
    resampled = bootstrap if clips > 1 else 0
    reps = {name: np.full(resampled, np.nan) for name in MEASURES}
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
            if permutations:
                reps["lpi_permuted"][part], reps["alpha_permuted"][part] = lpi_b[:, 1:].mean(1), alpha_b[part, 1:].mean(1)
                reps["lpi_excess"][part] = lpi_b[:, 0] - lpi_b[:, 1:].mean(1)
                reps["alpha_excess"][part] = alpha_b[part, 0] - alpha_b[part, 1:].mean(1)
            for j, b in enumerate(range(part.start, part.stop)):
                reps["participation_ratio"][b] = participation_ratio(eig_b[j])
                reps["eigen_decay_slope"][b] = eigen_decay_slope(eig_b[j])[0]
                reps["pc_temporal_slope"][b] = pc_slope(pc_b[b])[1]

    def entry(name: str, value: float, **extra) -> dict:
        low, high = _interval(reps[name], confidence)
        return {"value": _finite(value), "low": low, "high": high, **extra}

    out = {
        "alpha": entry("alpha", alphas[0]),
        "lpi": entry("lpi", lpis[0]),
        "participation_ratio": entry("participation_ratio", pr, fraction=_finite(pr / channels)),
        "eigen_decay_slope": entry("eigen_decay_slope", decay, ranks=ranks),
        "pc_temporal_slope": entry("pc_temporal_slope", pc_mean, per_component=[_finite(s) for s in pc_slopes],
                                   components=int(significant.sum()), weighting="eigenvalue"),
    }
    for name, values in (("alpha", alphas), ("lpi", lpis)):
        if permutations:
            perm = values[1:]
            out[f"{name}_permuted"] = entry(f"{name}_permuted", perm.mean(), std=_finite(perm.std(ddof=1)) if len(perm) > 1 else None,
                                            min=float(perm.min()), max=float(perm.max()), values=perm.tolist())
            out[f"{name}_excess"] = entry(f"{name}_excess", values[0] - perm.mean(),
                                          p_value=float((1 + (perm >= values[0]).sum()) / (len(perm) + 1)))
        else:
            out[f"{name}_permuted"] = out[f"{name}_excess"] = {"value": None, "low": None, "high": None}
    out = {name: out[name] for name in MEASURES}
    out["eigenvalues"] = lam_np.tolist()
    out["counts"] = {"clips": clips, "channels": channels, "samples": int(n.item()), "windows": int(stats["windows"].sum()),
                     "bootstrap_valid": {k: int(np.isfinite(v).sum()) for k, v in reps.items()}}
    out["settings"] = {"lam": lam, "ridge": ridge, "window": window, "hop": hop, "grid_points": grid_points,
                       "permutations": permutations, "bootstrap": bootstrap, "confidence": confidence,
                       "seed": seed, "resampling_unit": "clip", "interval": "percentile"}
    return out
