"""Radially averaged power spectrum and spectral decay exponent alpha (Sec. 3.1, Appendix C).

The ring average is pysteps' `rapsd` (pysteps.utils.spectral, Ruzanski & Chandrasekar 2011), Nyquist ring
included as pysteps has it, not as Appendix C writes it (docs/analysis.md, "How each number is computed").
It does not change when the map is transposed, so (C, T) latents and (T, C) maps give the same spectrum.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache

import numpy as np
import torch


def num_rings(h: int, w: int) -> int:
    """pysteps' ring count: ceil(l / 2) with l = max(h, w)."""
    return (max(h, w) + 1) // 2


def ring_frequencies(h: int, w: int) -> np.ndarray:
    """Normalised radial frequency f = r / max(h, w) of each ring, r = 0 .. num_rings - 1 (Appendix C)."""
    return np.arange(num_rings(h, w)) / max(h, w)


@lru_cache(maxsize=32)
def _half_grid(h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Ring index and multiplicity of each cell of an (h, w // 2 + 1) rfft2 spectrum.

    A real map's power is symmetric, P(kh, kw) = P(-kh, -kw), and a cell and its mirror share the ring, so
    the full-grid ring average is a weighted average over the half grid: weight 2 for the columns whose
    mirror is another column (0 < kw < w / 2), 1 for kw = 0 and, for even w, kw = w / 2.
    """
    kh = torch.fft.fftfreq(h, 1.0 / h).round().long()[:, None]  # 0, 1, .., -h//2, .., -1 (DFT order)
    kw = torch.arange(w // 2 + 1)[None, :]
    rings = torch.sqrt((kh * kh + kw * kw).double()).round().long()  # no ties: sqrt(n) is never k + 1/2
    weights = torch.where((kw == 0) | (2 * kw == w), 1.0, 2.0).double().expand(h, -1)
    return rings, weights


def rapsd(x: torch.Tensor) -> torch.Tensor:
    """Radially averaged power spectral density of each 2-D map: (..., h, w) -> (..., num_rings), float64.

    Equal to pysteps' ring average of the fftshift-ed |DFT|^2 / (h w) over the full grid; computed from the
    half spectrum of rfft2 (in the input's precision: float64 maps are exact to rounding).
    """
    h, w = x.shape[-2:]
    rings, weights = _half_grid(h, w)
    n = num_rings(h, w)
    keep = (rings < n).flatten()
    rings, weights = rings.flatten()[keep], weights.flatten()[keep]
    power = torch.fft.rfft2(x).abs().square().flatten(-2)[..., keep].double() / (h * w)  # (..., kept cells)
    sums = torch.zeros(*power.shape[:-1], n, dtype=torch.float64).index_add_(-1, rings, power * weights)
    return sums / torch.bincount(rings, weights=weights, minlength=n)


def windows(latent: torch.Tensor, window: int, hop: int | None = None) -> torch.Tensor:
    """(C, T) map -> (K, C, window): the full temporal windows, `hop` frames apart (default: window)."""
    hop = hop or window
    if latent.ndim != 2:
        raise ValueError(f"expected a (channels, frames) map, got shape {tuple(latent.shape)}")
    if latent.shape[-1] < window:
        return latent.new_zeros(0, latent.shape[0], window)
    return latent.unfold(-1, window, hop).permute(1, 0, 2)  # (K, C, window)


def mean_spectrum(maps: Iterable[torch.Tensor], window: int, hop: int | None = None) -> tuple[np.ndarray, np.ndarray, int]:
    """Spectrum averaged over clips and temporal windows (Sec. 3.1): (frequencies, S, number of windows).

    maps: (C, T_i) tensors (one per clip, real frames only); each contributes its full windows of `window`
    frames. All maps must have the same C, so every window has the same ring grid.
    """
    wins = [windows(m, window, hop) for m in maps]
    channels = {w.shape[1] for w in wins}
    if len(channels) > 1:
        raise ValueError(f"maps have different channel counts: {sorted(channels)}")
    wins = torch.cat(wins) if wins else torch.zeros(0)
    if len(wins) == 0:
        raise ValueError(f"no clip has a full window of {window} frames; lower the window or use longer clips")
    return ring_frequencies(wins.shape[1], window), rapsd(wins).mean(0).numpy(), len(wins)


def spectral_slope(freq: np.ndarray, spectrum: np.ndarray, num_points: int | None = None) -> tuple[float, float]:
    """Appendix C: drop DC, interpolate log S onto an even log-f grid, least squares log S = -alpha log f + b.

    Returns (alpha, b) in natural logs. num_points: size J of the grid (default: the number of non-DC rings).
    """
    keep, log_f, grid = _log_grid(freq, num_points)
    spectrum = np.asarray(spectrum, dtype=np.float64)
    if np.any(spectrum[keep] <= 0):
        raise ValueError("spectrum has non-positive power at a non-DC ring; cannot take its log")
    slope, intercept = np.polyfit(grid, np.interp(grid, log_f, np.log(spectrum[keep])), 1)
    return float(-slope), float(intercept)


def _log_grid(freq: np.ndarray, num_points: int | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(non-DC mask, log f on it, the even log-f grid of num_points, default one per non-DC frequency)."""
    freq = np.asarray(freq, dtype=np.float64)
    keep = freq > 0
    if keep.sum() < 2:
        raise ValueError("need at least two non-DC rings to fit a slope")
    log_f = np.log(freq[keep])
    return keep, log_f, np.linspace(log_f[0], log_f[-1], num_points or int(keep.sum()))


def slope_operator(freq: np.ndarray, num_points: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """`spectral_slope` as a linear map, for many spectra on one frequency grid at once.

    Returns (keep, op): keep (R,) marks the non-DC frequencies and op (2, keep.sum()) maps log S on them to
    (alpha, b): the interpolation onto the even log-f grid and the least-squares line are both linear in log S.
    """
    keep, log_f, grid = _log_grid(freq, num_points)
    interp = np.stack([np.interp(grid, log_f, e) for e in np.eye(len(log_f))], axis=1)  # (J, R') log S -> grid
    fit = np.linalg.pinv(np.stack([grid, np.ones_like(grid)], axis=1))  # (2, J): [slope, intercept]
    op = fit @ interp
    op[0] *= -1.0  # alpha = -slope
    return keep, op


def fit_slopes(freq: np.ndarray, spectra: np.ndarray, num_points: int | None = None) -> np.ndarray:
    """alpha of each spectrum on one grid: (..., R) -> (...,); NaN where a non-DC power is not positive."""
    keep, op = _cached_operator(tuple(np.asarray(freq, dtype=np.float64).tolist()), num_points)
    spectra = np.asarray(spectra, dtype=np.float64)[..., keep]
    with np.errstate(divide="ignore", invalid="ignore"):
        log_s = np.where(spectra > 0, np.log(np.where(spectra > 0, spectra, 1.0)), np.nan)
    return log_s @ op[0]


@lru_cache(maxsize=64)
def _cached_operator(freq: tuple[float, ...], num_points: int | None) -> tuple[np.ndarray, np.ndarray]:
    return slope_operator(np.asarray(freq), num_points)
