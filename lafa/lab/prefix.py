"""How much of a latent an encoding's first k channels hold, against the most any k channels can (link 1;
docs/lab.md, "Prefix masking and the prefix capture", says why).

Prefix masking rewards a PCA-ordered Y, an order of variance that the alignment (`lafa.lab.alignment`) cannot
see. The prefix capture of an encoding Y of Z is

    P_k(Y) = R^2(Z_n from Y_n[:k]) / share_k,   share_k = (lam_(1) + ... + lam_(k)) / tr K_chan

(least squares with an intercept, the frames of every clip pooled): in [0, 1] up to sampling error, 1 when Y's
first k channels span the top-k principal subspace. For a linear Y = A Z it is a closed form, R^2 = tr(K B^T
(B K B^T)^-1 B K) / tr K with B = A[:k] (`prefix_capture_linear`).
"""

from __future__ import annotations

import numpy as np
import torch


def principal_share(k_chan: np.ndarray, k: int) -> float:
    """share_k: the k largest eigenvalues of K_chan (C, C) over its trace."""
    lam = np.sort(np.linalg.eigvalsh(np.asarray(k_chan, np.float64)))[::-1]
    return float(lam[:k].sum() / lam.sum())


def prefix_capture_linear(k_chan: np.ndarray, rows: np.ndarray) -> float:
    """P_k of the linear encoding whose first k channels are `rows` (k, C) applied to Z, in closed form."""
    k = np.asarray(k_chan, np.float64)
    b = np.atleast_2d(np.asarray(rows, np.float64))
    kb = k @ b.T  # (C, k)
    explained = np.trace(kb @ np.linalg.solve(b @ kb, kb.T))
    return float(explained / np.trace(k) / principal_share(k, b.shape[0]))


def _frames(x: torch.Tensor) -> np.ndarray:
    """(B, C, N) -> every frame's channel vector (B N, C), float64."""
    return x.detach().double().transpose(1, 2).reshape(-1, x.shape[1]).cpu().numpy()


def prefix_capture(y: torch.Tensor, z: torch.Tensor, k: int, k_chan: np.ndarray) -> float:
    """P_k of an encoding y (B, C_y, N) of latents z (B, C, N) with the exact channel covariance k_chan (C, C)."""
    if not 1 <= k <= y.shape[1]:
        raise ValueError(f"prefix capture needs 1 <= k <= the encoding's {y.shape[1]} channels, got {k}")
    yk, zf = _frames(y[:, :k]), _frames(z)  # (B N, k), (B N, C)
    yk, zf = yk - yk.mean(0), zf - zf.mean(0)
    coef, *_ = np.linalg.lstsq(yk, zf, rcond=None)  # (k, C)
    residual = zf - yk @ coef
    r2 = 1.0 - float((residual**2).sum() / (zf**2).sum())
    return r2 / principal_share(k_chan, k)
