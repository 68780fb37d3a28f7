"""A spectrum-matching loss on a latent (the rival remedy of Spectrum Matching, ESM, arXiv 2603.14645; the
choices lafa made where the paper is open: docs/lafa.md, "Rival remedies"). The spectrum is the one
`lafa.analysis` measures alpha on (Sec. 3.1, Appendix C), computed here differentiably in torch:


  1. Y (B, C, N) is cut into temporal windows of `window` frames (hop = window) that hold real frames only;
  2. each (channel x time) window's 2-D DFT power |X|^2 / (C W) is ring-averaged over integer rings
     round(sqrt(kc^2 + kt^2)) (`lafa.analysis.spectrum.rapsd`'s rings, f = r / max(C, W));
  3. the ring spectra are averaged over all windows of the batch (the analysis averages over clips' windows);
  4. DC is dropped and log S is interpolated onto an even log-f grid (`slope_operator`'s grid): g_j at x_j.

L_spec = mean_j (g_j + alpha_t x_j - mean_k (g_k + alpha_t x_k))^2: the mean squared residual of log S from
the best power law with the target exponent alpha_t (its level free), so its gradient moves the measured alpha
towards alpha_t; it is blind to Y's scale and channel mean (DC).
"""

from __future__ import annotations

import numpy as np
import torch

from lafa.analysis.spectrum import _half_grid, num_rings, ring_frequencies, slope_operator


def ring_spectrum(windows: torch.Tensor) -> torch.Tensor:
    """Ring-averaged power of (..., h, w) maps, differentiable: (..., num_rings) in the input's dtype."""
    h, w = windows.shape[-2:]
    rings, weights = _half_grid(h, w)
    n = num_rings(h, w)
    keep = (rings < n).flatten()
    rings, weights = rings.flatten()[keep].to(windows.device), weights.flatten()[keep].to(windows.device)
    power = torch.fft.rfft2(windows).abs().square().flatten(-2)[..., keep] / (h * w)
    weights = weights.to(power.dtype)
    sums = torch.zeros(*power.shape[:-1], n, dtype=power.dtype, device=power.device)
    sums = sums.index_add(-1, rings, power * weights)
    counts = torch.zeros(n, dtype=power.dtype, device=power.device).index_add(0, rings, weights)
    return sums / counts


def log_spectrum_on_grid(y: torch.Tensor, window: int, frame_keep: torch.Tensor | None = None
                         ) -> tuple[torch.Tensor, torch.Tensor]:
    """(x, g): the even log-f grid and log S of Y (B, C, N) interpolated onto it (steps 1-4 above).

    Windows that hold a padding frame (frame_keep (B, N) False) are left out. `window` shrinks to N when the
    crop is shorter. Raises ValueError when no window is left."""
    b, c, n = y.shape
    window = min(window, n)
    wins = y.unfold(-1, window, window)  # (B, C, K, W)
    if frame_keep is not None:
        whole = frame_keep.unfold(-1, window, window).all(dim=-1)  # (B, K)
    else:
        whole = torch.ones(wins.shape[0], wins.shape[2], dtype=torch.bool, device=y.device)
    if not bool(whole.any()):
        raise ValueError(f"no temporal window of {window} real frames in the batch")
    spectra = ring_spectrum(wins.permute(0, 2, 1, 3))  # (B, K, R) in Y's dtype
    weight = whole.to(spectra.dtype)
    spectrum = (spectra * weight[..., None]).sum(dim=(0, 1)) / weight.sum()  # (R,)
    freq = ring_frequencies(c, window)
    keep, _ = slope_operator(freq)
    log_f = np.log(freq[keep])
    grid = np.linspace(log_f[0], log_f[-1], int(keep.sum()))
    interp = np.stack([np.interp(grid, log_f, e) for e in np.eye(len(log_f))], axis=1)  # (J, R')
    interp_t = torch.as_tensor(interp, dtype=spectrum.dtype, device=y.device)
    log_s = spectrum[torch.as_tensor(keep, device=y.device)].clamp_min(1e-30).log()
    return torch.as_tensor(grid, dtype=spectrum.dtype, device=y.device), interp_t @ log_s


def power_law_loss(y: torch.Tensor, target_slope: float, window: int = 64,
                   frame_keep: torch.Tensor | None = None) -> torch.Tensor:
    """L_spec of Y (B, C, N): the mean squared residual of its log spectrum from a power law f^-target_slope."""
    x, g = log_spectrum_on_grid(y, window, frame_keep)
    residual = g + target_slope * x
    return (residual - residual.mean()).square().mean()

