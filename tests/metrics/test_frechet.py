import numpy as np
import pytest
from scipy import linalg

from lafa.metrics.frechet import (
    ComplexSqrtError,
    NonFiniteFeaturesError,
    frechet_distance,
    gaussian_stats,
)


def _random_spd(rng: np.random.Generator, d: int, rank: int | None = None) -> np.ndarray:
    a = rng.standard_normal((d, rank or d))
    return a @ a.T / d


@pytest.mark.parametrize("method", ["eigen", "sqrtm"])
def test_diagonal_gaussians_match_closed_form(method):
    # commuting covariances: FD = |mu1 - mu2|^2 + sum (sqrt(a) - sqrt(b))^2
    rng = np.random.default_rng(0)
    a, b = rng.uniform(0.1, 3.0, 6), rng.uniform(0.1, 3.0, 6)
    mu1, mu2 = rng.standard_normal(6), rng.standard_normal(6)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    got = frechet_distance(mu1, np.diag(a), mu2, np.diag(b), method=method)
    assert got == pytest.approx(expected, rel=1e-10)


def test_one_dimensional_closed_form():
    # 1-D: FD = (m1 - m2)^2 + (s1 - s2)^2 with standard deviations s
    assert frechet_distance([1.0], [[4.0]], [-2.0], [[9.0]]) == pytest.approx(9.0 + 1.0)


def test_general_covariances_routes_agree_with_scipy_trace():
    rng = np.random.default_rng(1)
    s1, s2 = _random_spd(rng, 20), _random_spd(rng, 20)
    mu1, mu2 = rng.standard_normal(20), rng.standard_normal(20)
    tr = np.trace(np.real(linalg.sqrtm(s1 @ s2)))
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * tr
    eig = frechet_distance(mu1, s1, mu2, s2, method="eigen")
    sq = frechet_distance(mu1, s1, mu2, s2, method="sqrtm")
    assert eig == pytest.approx(expected, rel=1e-8)
    assert sq == pytest.approx(eig, rel=1e-8)


def test_rank_deficient_covariances_routes_agree():
    # fewer samples than dimensions (a short demo set): both routes stay finite and agree
    rng = np.random.default_rng(2)
    s1, s2 = _random_spd(rng, 32, rank=5), _random_spd(rng, 32, rank=7)
    mu = np.zeros(32)
    eig = frechet_distance(mu, s1, mu, s2, method="eigen")
    sq = frechet_distance(mu, s1, mu, s2, method="sqrtm")
    assert np.isfinite(eig) and eig > 0
    assert sq == pytest.approx(eig, rel=1e-5, abs=1e-6)


def test_identical_statistics_give_zero():
    rng = np.random.default_rng(3)
    s = _random_spd(rng, 16)
    assert frechet_distance(np.ones(16), s, np.ones(16), s) == pytest.approx(0.0, abs=1e-9)


def test_sample_statistics_converge_to_closed_form():
    rng = np.random.default_rng(4)
    x = rng.normal(1.0, 2.0, size=(200_000, 2))
    y = rng.normal(0.0, 1.0, size=(200_000, 2))
    mu1, s1 = gaussian_stats(x)
    mu2, s2 = gaussian_stats(y)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(2 * (1.0 + 1.0), rel=0.02)


def test_gaussian_stats_is_unbiased():
    x = np.array([[0.0, 1.0], [2.0, 3.0], [4.0, 8.0]])
    mu, sigma = gaussian_stats(x)
    np.testing.assert_allclose(mu, x.mean(0))
    centred = x - x.mean(0)
    np.testing.assert_allclose(sigma, centred.T @ centred / (len(x) - 1))
    with pytest.raises(ValueError, match="at least 2"):
        gaussian_stats(x[:1])


def test_mismatched_shapes_are_rejected():
    with pytest.raises(ValueError, match="mismatched"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))


def test_nan_feature_is_named_not_a_bare_linalg_error():
    x = np.random.default_rng(5).standard_normal((10, 4))
    x[3, 2] = np.nan
    with pytest.raises(NonFiniteFeaturesError, match=r"features holds 1 non-finite values .* index \[3, 2\]"):
        gaussian_stats(x)
    s = np.eye(4)
    s[1, 1] = np.inf
    for method in ("eigen", "sqrtm"):
        with pytest.raises(NonFiniteFeaturesError, match="sigma2"):
            frechet_distance(np.zeros(4), np.eye(4), np.zeros(4), s, method=method)


@pytest.mark.parametrize("method", ["eigen", "sqrtm"])
def test_significant_imaginary_square_root_is_rejected(method):
    # an indefinite "covariance": sqrt(S1 S2) is genuinely complex; the reference raises, so does lafa
    s1 = np.diag([1.0, 2.0, -0.5])
    s2 = np.eye(3)
    with pytest.raises(ComplexSqrtError, match="imaginary"):
        frechet_distance(np.zeros(3), s1, np.zeros(3), s2, method=method)


@pytest.mark.parametrize("method", ["eigen", "sqrtm"])
def test_round_off_negative_eigenvalues_are_tolerated(method):
    # -1e-9 on the diagonal: imaginary part 3e-5 < 1e-3, the reference takes the real part; so does lafa
    s1 = np.diag([1.0, 2.0, -1e-9])
    got = frechet_distance(np.zeros(3), s1, np.zeros(3), np.eye(3), method=method)
    expected = 3.0 - 1e-9 + 3.0 - 2 * (1.0 + np.sqrt(2.0))
    assert got == pytest.approx(expected, rel=1e-6)
