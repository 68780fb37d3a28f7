"""Radially averaged power spectrum and spectral decay exponent alpha (Sec. 3.1, Appendix C).

The ring average is the one of pysteps' `rapsd` (pysteps.utils.spectral, Ruzanski & Chandrasekar 2011):
power of the fftshift-ed 2-D DFT divided by the number of cells, integer rings round(sqrt(kt^2 + kc^2)) on
the centred index grid, ring count ceil(l / 2) with l = max(T, C), and frequency f = r / l. (Appendix C
writes r up to floor(l / 2); pysteps, the code the paper names, stops one ring earlier for even l, at the
last ring that is full along the longer axis. lafa follows pysteps.) The ring average does not change when
the map is transposed, so (C, T) latents and (T, C) maps give the same spectrum.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch


def centred_indices(n: int) -> torch.Tensor:
    """DFT indices in fftshift order: -floor(n/2) .. ceil(n/2) - 1 (DC at index floor(n/2))."""
    return torch.arange(n) - n // 2


def ring_index(h: int, w: int) -> torch.Tensor:
    """(h, w) long: round(sqrt(kh^2 + kw^2)) of every cell of an fftshift-ed (h, w) spectrum."""
    kh, kw = centred_indices(h)[:, None], centred_indices(w)[None, :]
    return torch.sqrt((kh * kh + kw * kw).double()).round().long()  # no ties: sqrt(n) is never k + 1/2


def num_rings(h: int, w: int) -> int:
    """pysteps' ring count: ceil(l / 2) with l = max(h, w)."""
    return (max(h, w) + 1) // 2


def ring_frequencies(h: int, w: int) -> np.ndarray:
    """Normalised radial frequency f = r / max(h, w) of each ring, r = 0 .. num_rings - 1 (Appendix C)."""
    return np.arange(num_rings(h, w)) / max(h, w)


def power_spectrum(x: torch.Tensor) -> torch.Tensor:
    """(..., h, w) real -> (..., h, w) fftshift-ed |DFT|^2 / (h * w), DC at (h // 2, w // 2)."""
    spec = torch.fft.fftshift(torch.fft.fft2(x.double()), dim=(-2, -1))
    return spec.abs().square() / (x.shape[-2] * x.shape[-1])


def rapsd(x: torch.Tensor) -> torch.Tensor:
    """Radially averaged power spectral density of each 2-D map: (..., h, w) -> (..., num_rings), float64."""
    h, w = x.shape[-2:]
    rings = ring_index(h, w).flatten()
    n = num_rings(h, w)
    keep = rings < n
    power = power_spectrum(x).flatten(-2)[..., keep]  # (..., cells in the kept rings)
    rings = rings[keep]
    sums = torch.zeros(*power.shape[:-1], n, dtype=power.dtype).index_add_(-1, rings, power)
    counts = torch.bincount(rings, minlength=n).to(power.dtype)
    return sums / counts


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
    total, count, channels = None, 0, None
    for m in maps:
        if channels is not None and m.shape[0] != channels:
            raise ValueError(f"maps have different channel counts: {channels} and {m.shape[0]}")
        channels = m.shape[0]
        wins = windows(m, window, hop)
        if len(wins) == 0:
            continue
        s = rapsd(wins).sum(0)
        total = s if total is None else total + s
        count += len(wins)
    if count == 0:
        raise ValueError(f"no clip has a full window of {window} frames; lower the window or use longer clips")
    return ring_frequencies(channels, window), (total / count).numpy(), count


def spectral_slope(freq: np.ndarray, spectrum: np.ndarray, num_points: int | None = None) -> tuple[float, float]:
    """Appendix C: drop DC, interpolate log S onto an even log-f grid, least squares log S = -alpha log f + b.

    Returns (alpha, b) in natural logs. num_points: size J of the grid (default: the number of non-DC rings).
    """
    freq, spectrum = np.asarray(freq, dtype=np.float64), np.asarray(spectrum, dtype=np.float64)
    keep = freq > 0
    if keep.sum() < 2:
        raise ValueError("need at least two non-DC rings to fit a slope")
    if np.any(spectrum[keep] <= 0):
        raise ValueError("spectrum has non-positive power at a non-DC ring; cannot take its log")
    log_f, log_s = np.log(freq[keep]), np.log(spectrum[keep])
    grid = np.linspace(log_f[0], log_f[-1], num_points or int(keep.sum()))
    slope, intercept = np.polyfit(grid, np.interp(grid, log_f, log_s), 1)
    return float(-slope), float(intercept)
