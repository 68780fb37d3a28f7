"""How well a latent's channel correlation matches the ideal ordered latent's (link 1 of docs/lab.md, which
derives the closed-form references).

The ideal is arm (1), U_dct diag(sqrt lam) s, whose channel covariance is known exactly
(`GaussianLatentSpec(basis="dct").channel_covariance`). The alignment is the cosine between the two channel
*correlation* matrices, blind to each channel's scale and to reversing the DCT order:

    A(S, S*) = <R, R*>_F / (||R||_F ||R*||_F),   R = D^-1/2 S D^-1/2.

References: 1 for the ideal; sqrt(C) / ||R*||_F for decorrelated channels; (C + S^2 / (C (C - 1))) /
||R*||_F^2 for the ideal in a uniformly random channel order (expectation; S = the sum of R*'s off-diagonal
entries).
"""

from __future__ import annotations

import numpy as np
import torch


def correlation(covariance: np.ndarray) -> np.ndarray:
    """Covariance (C, C) -> correlation (C, C)."""
    d = np.sqrt(np.clip(np.diag(covariance), 1e-300, None))
    return covariance / np.outer(d, d)


def alignment(covariance: np.ndarray, reference: np.ndarray) -> float:
    """Cosine between the channel correlation matrices of `covariance` and `reference` (both (C, C))."""
    r, s = correlation(np.asarray(covariance, np.float64)), correlation(np.asarray(reference, np.float64))
    return float((r * s).sum() / (np.linalg.norm(r) * np.linalg.norm(s)))


def alignment_white(reference: np.ndarray) -> float:
    """A of decorrelated channels (R = I) against `reference`: sqrt(C) / ||R*||_F."""
    s = correlation(np.asarray(reference, np.float64))
    return float(np.sqrt(s.shape[0]) / np.linalg.norm(s))


def alignment_permuted(reference: np.ndarray) -> float:
    """Expected A of the reference with its channels in a uniformly random order, against itself."""
    s = correlation(np.asarray(reference, np.float64))
    c = s.shape[0]
    off = s.sum() - np.trace(s)
    return float((c + off**2 / (c * (c - 1))) / (s**2).sum())


def channel_covariance(latents: torch.Tensor) -> np.ndarray:
    """Latents (B, C, N) -> the channel covariance (C, C) of their frames pooled (each channel's mean removed)."""
    x = latents.detach().double().transpose(1, 2).reshape(-1, latents.shape[1]).cpu().numpy()
    return np.cov(x, rowvar=False)
