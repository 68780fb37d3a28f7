"""The eigen route on singular covariances at the scale of random-weight OpenL3 embeddings (fewer frames than
dimensions): round-off negatives of the null space are relative to the largest eigenvalue, not absolute."""

import numpy as np
import pytest

from lafa.metrics.frechet import ComplexSqrtError, frechet_distance, gaussian_stats


def test_few_frames_at_large_scale_match_the_low_rank_closed_form():
    rng = np.random.default_rng(0)
    d = 256
    scales = np.geomspace(1e-3, 3e5, d)  # eigenvalues 1e-6 ... 1e11, as a random-weight OpenL3 gives
    a = rng.standard_normal((12, d)) * scales
    b = rng.standard_normal((9, d)) * scales + 10.0
    (mu1, s1), (mu2, s2) = gaussian_stats(a), gaussian_stats(b)
    w = np.linalg.eigvalsh(s1)
    assert w.min() < 0 and np.sqrt(-w.min()) > 1e-3  # what the absolute test alone rejected
    # S = U U^T with U = centred samples^T / sqrt(n - 1): tr sqrt(S1 S2) = sum of singular values of U2^T U1
    u1 = (a - mu1).T / np.sqrt(len(a) - 1)
    u2 = (b - mu2).T / np.sqrt(len(b) - 1)
    tr = np.linalg.svd(u2.T @ u1, compute_uv=False).sum()
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * tr
    assert frechet_distance(mu1, s1, mu2, s2, method="eigen") == pytest.approx(
        expected, rel=1e-6
    )  # traces of ~1e11: float64 round-off


def test_a_negative_eigenvalue_beyond_round_off_still_raises():
    s = np.diag([1e6, 1.0, -1e-2])  # -0.01 is far beyond 3 eps 1e6 = 7e-10
    with pytest.raises(ComplexSqrtError):
        frechet_distance(np.zeros(3), s, np.zeros(3), np.eye(3), method="eigen")
