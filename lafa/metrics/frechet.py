"""Gaussian statistics of embeddings and the Frechet distance between two Gaussians.

FD = ||mu1 - mu2||^2 + tr(S1) + tr(S2) - 2 tr(sqrt(S1 S2)), as FD_openl3 in Stability-AI's
stable-audio-metrics computes it (docs/metrics.md). Two routes to tr(sqrt(S1 S2)):
- "sqrtm": scipy's matrix square root of S1 S2, retried with 1e-6 added to both diagonals when it is not
  finite, real part taken (the reference's route);
- "eigen": tr(sqrt(S1 S2)) = tr(sqrt(A S2 A)) with A = S1^(1/2), a symmetric positive semi-definite matrix,
  so two symmetric eigen-decompositions give it (faster and stable for 1024-d covariances; the default).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy import linalg

SQRTM_EPS = 1e-6  # diagonal offset of the reference's retry


def gaussian_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, D) samples -> mean (D,) and unbiased covariance (D, D), in float64."""
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2:
        raise ValueError(f"features must be (N, D), got shape {features.shape}")
    if features.shape[0] < 2:
        raise ValueError(f"need at least 2 samples for a covariance, got {features.shape[0]}")
    mu = features.mean(axis=0)
    sigma = np.cov(features, rowvar=False, ddof=1)
    return mu, np.atleast_2d(sigma)


def _trace_sqrt_product_sqrtm(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    covmean = linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * SQRTM_EPS
        covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    return float(np.trace(np.real(covmean)))


def _psd_sqrt(sigma: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((sigma + sigma.T) / 2)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def _trace_sqrt_product_eigen(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    a = _psd_sqrt(sigma1)
    m = a @ sigma2 @ a  # similar to S1 S2 (up to the null space of S1), symmetric PSD
    w = np.linalg.eigvalsh((m + m.T) / 2)
    return float(np.sqrt(np.clip(w, 0.0, None)).sum())


def frechet_distance(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, method: str = "eigen"
) -> float:
    """Frechet distance between N(mu1, sigma1) and N(mu2, sigma2); method "eigen" or "sqrtm"."""
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = (
        np.atleast_2d(np.asarray(sigma1, np.float64)),
        np.atleast_2d(np.asarray(sigma2, np.float64)),
    )
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (mu1.size, mu1.size):
        raise ValueError(
            f"mismatched statistics: mu {mu1.shape} vs {mu2.shape}, sigma {sigma1.shape} vs {sigma2.shape}"
        )
    if method == "eigen":
        tr_covmean = _trace_sqrt_product_eigen(sigma1, sigma2)
    elif method == "sqrtm":
        tr_covmean = _trace_sqrt_product_sqrtm(sigma1, sigma2)
    else:
        raise ValueError(f"unknown method {method!r} (eigen or sqrtm)")
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * tr_covmean)


def save_stats(path: str | Path, mu: np.ndarray, sigma: np.ndarray, **meta: str | int | float) -> None:
    """Write mean, covariance and scalar metadata (number of frames, settings, weight hashes) to a .npz."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    extra = {f"meta_{k}": np.asarray(v) for k, v in meta.items()}
    with open(path, "wb") as f:  # an open file keeps numpy from appending ".npz" to other suffixes
        np.savez(f, mu=np.asarray(mu, np.float64), sigma=np.asarray(sigma, np.float64), **extra)


def load_stats(path: str | Path) -> tuple[np.ndarray, np.ndarray, dict]:
    """Read what save_stats wrote: (mu, sigma, meta)."""
    with np.load(path, allow_pickle=False) as data:
        if "mu" not in data or "sigma" not in data:
            raise ValueError(f"{path} holds no 'mu'/'sigma' arrays (not a lafa statistics file)")
        meta = {k[len("meta_") :]: data[k].item() for k in data.files if k.startswith("meta_")}
        return data["mu"], data["sigma"], meta
