"""Gaussian statistics of embeddings and the Frechet distance between two Gaussians.

FD = ||mu1 - mu2||^2 + tr(S1) + tr(S2) - 2 tr(sqrt(S1 S2)), as FD_openl3 in Stability-AI's
stable-audio-metrics computes it. tr(sqrt(S1 S2)) by "sqrtm", the reference's route (scipy's sqrtm, its
1e-6 diagonal retry), or "eigen", the default: tr(sqrt(A S2 A)) with A = S1^(1/2), two symmetric
eigen-decompositions (faster and stable for 1024-d covariances). An imaginary part beyond the reference's
1e-3 raises ComplexSqrtError, below it is round-off; non-finite features or statistics raise
NonFiniteFeaturesError (docs/metrics.md, "FD_openl3").
"""

from __future__ import annotations

import numpy as np
from scipy import linalg

SQRTM_EPS = 1e-6  # diagonal offset of the reference's retry
IMAG_ATOL = 1e-3  # the reference's np.allclose(diag(covmean).imag, 0, atol=1e-3)


class NonFiniteFeaturesError(ValueError):
    """Features or statistics hold NaN or infinity (a failed embedding, silent audio normalised by zero)."""


class ComplexSqrtError(ValueError):
    """sqrt(S1 S2) has a significant imaginary part: the statistics are not valid covariances of real data."""


def check_finite(name: str, array: np.ndarray) -> None:
    """Raise NonFiniteFeaturesError naming `name` and where the first bad value sits."""
    bad = ~np.isfinite(array)
    if bad.any():
        where = np.argwhere(bad)[0].tolist()
        raise NonFiniteFeaturesError(
            f"{name} holds {int(bad.sum())} non-finite values (NaN/inf), the first at index {where}: "
            "the Frechet distance is undefined (check the audio and the embedding model)"
        )


def gaussian_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, D) samples -> mean (D,) and unbiased covariance (D, D), in float64."""
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2:
        raise ValueError(f"features must be (N, D), got shape {features.shape}")
    if features.shape[0] < 2:
        raise ValueError(f"need at least 2 samples for a covariance, got {features.shape[0]}")
    check_finite("features", features)
    return features.mean(axis=0), np.atleast_2d(np.cov(features, rowvar=False, ddof=1))


def _trace_sqrt_product_sqrtm(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    covmean = linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * SQRTM_EPS
        covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        imag = np.abs(np.diagonal(covmean).imag)
        if not np.allclose(imag, 0, atol=IMAG_ATOL):
            raise ComplexSqrtError(
                f"sqrt(S1 S2) has an imaginary component of up to {np.abs(covmean.imag).max():.3g} "
                f"(diagonal {imag.max():.3g} > {IMAG_ATOL}); the reference rejects it too"
            )
        covmean = covmean.real
    return float(np.trace(covmean))


def _check_eigenvalues(w: np.ndarray, what: str) -> np.ndarray:
    """Clip round-off negatives to 0; a negative eigenvalue whose root exceeds IMAG_ATOL raises, unless it is
    within the round-off of the largest one (numpy's matrix_rank tolerance, D eps max|w|: fewer frames than
    dimensions give a singular covariance whose zero eigenvalues come out as -1e-4 at a 1e11 scale)."""
    roundoff = w.size * np.finfo(np.float64).eps * np.abs(w).max() if w.size else 0.0
    if w.size and w.min() < -roundoff and np.sqrt(-w.min()) > IMAG_ATOL:
        raise ComplexSqrtError(
            f"{what} has an eigenvalue {w.min():.3g}: its square root would add an imaginary part "
            f"{np.sqrt(-w.min()):.3g} > {IMAG_ATOL} (not a covariance of real data)"
        )
    return np.clip(w, 0.0, None)


def _trace_sqrt_product_eigen(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    w, v = np.linalg.eigh((sigma1 + sigma1.T) / 2)
    a = (v * np.sqrt(_check_eigenvalues(w, "sigma1"))) @ v.T  # S1^(1/2)
    m = a @ sigma2 @ a  # similar to S1 S2 (up to the null space of S1), symmetric PSD
    w = np.linalg.eigvalsh((m + m.T) / 2)
    return float(np.sqrt(_check_eigenvalues(w, "S1^1/2 S2 S1^1/2")).sum())


def frechet_distance(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, method: str = "eigen"
) -> float:
    """Frechet distance between N(mu1, sigma1) and N(mu2, sigma2); method "eigen" or "sqrtm"."""
    mu1, mu2 = (np.atleast_1d(np.asarray(mu, np.float64)) for mu in (mu1, mu2))
    sigma1, sigma2 = (np.atleast_2d(np.asarray(sigma, np.float64)) for sigma in (sigma1, sigma2))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (mu1.size, mu1.size):
        raise ValueError(f"mismatched statistics: mu {mu1.shape} vs {mu2.shape}, sigma {sigma1.shape} vs "
                         f"{sigma2.shape}")
    for name, value in (("mu1", mu1), ("sigma1", sigma1), ("mu2", mu2), ("sigma2", sigma2)):
        check_finite(name, value)
    routes = {"eigen": _trace_sqrt_product_eigen, "sqrtm": _trace_sqrt_product_sqrtm}
    if method not in routes:
        raise ValueError(f"unknown method {method!r} (eigen or sqrtm)")
    tr_covmean = routes[method](sigma1, sigma2)
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * tr_covmean)
