"""Local Predictability Index LPI_lambda (Sec. 3.2) and channel-correlation matrices (Fig. 3).

LPI_lambda(z) = (1/C) sum_c R^2(z_c <- {z_{c-r}, .., z_{c-1}, z_{c+1}, .., z_{c+r}}), r = ceil(lambda * C),
ridge regression over all N = B * T samples. lafa's reading of what the paper leaves open: channels are
standardised (mean 0, variance 1 over the N samples, so no intercept is needed), edge channels use the
neighbours that exist, the ridge penalty is ridge * ||w||^2 against the residual sum of squares over the
N samples (scikit-learn's `Ridge(alpha=ridge)` convention), and R^2 is in-sample. Everything follows from
the C x C Gram matrix of the standardised channels, so the cost is one (C x N) @ (N x C) product plus C
tiny solves done as one batch.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch


def stack_samples(maps: Iterable[torch.Tensor]) -> torch.Tensor:
    """(C, T_i) maps (clips of any length) -> (C, N) samples, N = sum T_i, float64."""
    maps = [m.double() for m in maps]
    if not maps:
        raise ValueError("no maps given")
    channels = {m.shape[0] for m in maps}
    if len(channels) != 1 or any(m.ndim != 2 for m in maps):
        raise ValueError(f"maps must be (channels, frames) with one channel count, got {[tuple(m.shape) for m in maps]}")
    return torch.cat(maps, dim=1)


def standardise(samples: torch.Tensor) -> torch.Tensor:
    """(C, N) -> (C, N) with each channel at mean 0, variance 1 (ddof 0); constant channels become 0."""
    centred = samples - samples.mean(dim=1, keepdim=True)
    std = centred.square().mean(dim=1, keepdim=True).sqrt()
    return torch.where(std > 0, centred / std.clamp_min(1e-300), torch.zeros_like(centred))


def channel_correlation(maps: Iterable[torch.Tensor]) -> torch.Tensor:
    """Pearson correlation between channels over all samples: (C, C), float64 (Fig. 3's heat maps)."""
    z = standardise(stack_samples(maps))
    return z @ z.T / z.shape[1]


def neighbour_radius(channels: int, lam: float) -> int:
    """r = ceil(lambda * C) (Sec. 3.2); at least 1."""
    return max(1, math.ceil(lam * channels - 1e-9))  # the epsilon keeps 0.06 * 50 = 3.0000000000000004 at 3


def lpi_per_channel(maps: Iterable[torch.Tensor], lam: float = 0.06, ridge: float = 1.0) -> torch.Tensor:
    """In-sample ridge R^2 of each channel from its +-r neighbours: (C,), float64. LPI is its mean."""
    z = standardise(stack_samples(maps))
    return lpi_from_gram(z @ z.T, lam, ridge)  # (C, C) Gram; diagonal N for every non-constant channel


def lpi_from_gram(gram: torch.Tensor, lam: float = 0.06, ridge: float = 1.0) -> torch.Tensor:
    """Per-channel ridge R^2 from the Gram matrix of the standardised channels: (..., C, C) -> (..., C).

    gram = z z^T over the N samples (diagonal N, or 0 for a constant channel), so any batch of Gram matrices
    (bootstrap resamples, channel permutations gram[p][:, p]) is scored in one batched solve.
    """
    channels = gram.shape[-1]
    r = neighbour_radius(channels, lam)
    offsets = torch.cat([torch.arange(-r, 0), torch.arange(1, r + 1)])  # (2r,)
    idx = torch.arange(channels)[:, None] + offsets[None, :]  # (C, 2r) neighbour channel of each slot
    valid = (idx >= 0) & (idx < channels)
    idx = idx.clamp(0, channels - 1)
    pair_valid = valid[:, :, None] & valid[:, None, :]  # (C, 2r, 2r)
    a_data = torch.where(pair_valid, gram[..., idx[:, :, None], idx[:, None, :]], 0.0)  # (..., C, 2r, 2r)
    a = a_data + torch.diag_embed(torch.where(valid, ridge, 1.0).to(gram.dtype))  # missing slots: identity rows
    b = torch.where(valid, gram[..., torch.arange(channels)[:, None], idx], 0.0)  # (..., C, 2r) X'y
    w = torch.linalg.solve(a, b[..., None])[..., 0]  # (..., C, 2r) ridge weights; 0 on missing slots
    # residual sum of squares: y.y - 2 w.X'y + w.X'X w, with y.y = N (or 0 for a constant channel)
    sst = gram.diagonal(dim1=-2, dim2=-1)
    sse = sst - 2 * (w * b).sum(-1) + (w[..., None, :] @ a_data @ w[..., :, None])[..., 0, 0]
    return torch.where(sst > 0, 1.0 - sse / sst.clamp_min(1e-300), torch.zeros_like(sst))


def lpi(maps: Iterable[torch.Tensor], lam: float = 0.06, ridge: float = 1.0) -> float:
    """LPI_lambda (Sec. 3.2): mean over channels of the neighbour-ridge R^2."""
    return float(lpi_per_channel(maps, lam, ridge).mean())
