"""How well a latent's channel correlation matches the ideal ordered latent's (link 1 of docs/lab.md).

Arm (3) of the lab is x = Q U_dct diag(sqrt lam) s: an order-free latent with a hidden local basis. The ideal
latent a channel-ordering map could reach is arm (1), U_dct diag(sqrt lam) s, whose channel covariance is known
exactly (`GaussianLatentSpec(basis="dct").channel_covariance`). The alignment of a latent with it is the cosine
between the two channel *correlation* matrices,

    A(S, S*) = <R, R*>_F / (||R||_F ||R*||_F),   R = D^-1/2 S D^-1/2,

in [0, 1] for covariances (the Frobenius product of two PSD matrices is >= 0). Correlations make A blind to each
channel's scale (LAFA's output heads scale channels freely), and A is the same for the DCT order and its
reversal (u_k(C - 1 - c) = (-1)^k u_k(c), so K_chan is unchanged by reversing the channels). Closed-form
references for a C-channel reference R*:
- the ideal latent itself (or any per-channel rescaling of it): 1;
- decorrelated channels (R = I): tr R* / (sqrt(C) ||R*||) = sqrt(C) / ||R*||_F;
- the ideal latent with its channels in a uniformly random order, in expectation over orders:
  (C + S^2 / (C (C - 1))) / ||R*||_F^2 with S the sum of R*'s off-diagonal entries (each off-diagonal entry of
  P R* P^T is a uniformly drawn off-diagonal entry of R*; the diagonal stays 1).
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
