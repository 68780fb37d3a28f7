"""Exact Frechet distance against the lab's Gaussian: window covariance, sampled estimates, the baseline."""

import numpy as np
import pytest
import torch

from lafa.lab.frechet import exact_fd, fd_baseline, gaussian_fd, oracle_fd, window_covariance, window_vectors
from lafa.lab.spec import GaussianLatentSpec

SPEC = GaussianLatentSpec(channels=12, frames=24, spectrum="vae_like", noise_channels=3, rho=0.8)


def test_window_covariance_is_the_covariance_of_sampled_windows():
    x = SPEC.sample(20000, torch.Generator().manual_seed(0))
    for w in (1, 3):
        v = window_vectors(x, w)  # (20000 * 24 // w, 12 w)
        assert v.shape == (20000 * (24 // w), 12 * w)
        cov = window_covariance(SPEC, w)
        d = np.diag(cov)
        se = np.sqrt((np.outer(d, d) + cov**2) / 20000)  # clips are independent; windows within one are not
        assert np.all(np.abs(v.T @ v / len(v) - cov) < 5 * se)
    assert np.allclose(window_covariance(SPEC, 1), SPEC.channel_covariance)
    np.testing.assert_array_equal(window_vectors(x[:1], 2)[0], x[0, :, :2].reshape(-1).numpy())  # (channel, frame)


@pytest.mark.parametrize("w", [1, 2])
def test_exact_fd_of_another_gaussian_equals_its_closed_form(w):
    """Samples of spec B scored against spec A's exact law: the closed-form FD(A, B) plus the estimator's bias,
    which the real-vs-real baseline of the same count bounds."""
    other = GaussianLatentSpec(channels=12, frames=24, spectrum="flat", rho=0.5)
    closed = gaussian_fd(SPEC, other, w)
    assert closed > 1.0
    fd = exact_fd(other.sample(8000, torch.Generator().manual_seed(1)), SPEC, w)
    bias, _ = fd_baseline(other, 8000, w, draws=2, seed=2)
    assert abs(fd - closed) < 0.02 * closed + 2 * bias


def test_real_samples_score_the_baseline_which_falls_with_the_sample_count():
    fd = [exact_fd(SPEC.sample(200, torch.Generator().manual_seed(s)), SPEC) for s in range(10, 16)]
    mean, std = fd_baseline(SPEC, 200, draws=12, seed=3)
    assert 0 < mean and abs(np.mean(fd) - mean) < 3 * std
    big, _ = fd_baseline(SPEC, 800, draws=6, seed=4)
    assert big < 0.5 * mean  # ~ 1 / n: a quarter, up to noise
    assert fd_baseline(SPEC, 50, draws=3, seed=5) == fd_baseline(SPEC, 50, draws=3, seed=5)


def test_closed_form_fd_is_zero_for_the_same_law_and_sees_a_rotation():
    assert gaussian_fd(SPEC, SPEC) == pytest.approx(0.0, abs=1e-9)
    rotated = GaussianLatentSpec(channels=12, frames=24, spectrum="vae_like", noise_channels=3, rho=0.8,
                                 basis="rotated")
    assert gaussian_fd(SPEC, rotated) > 1.0  # same eigenvalues, different directions: a different law


@pytest.mark.parametrize("objective", ["rf", "v"])
def test_the_optimal_denoiser_through_lafas_sampler_reaches_the_baseline_with_enough_steps(objective):
    """The probability-flow ODE of the exact denoiser carries N(0, I) to the true law: with many steps its
    samples score like real draws of the same count; with few steps the discretisation error shows."""
    spec = GaussianLatentSpec(channels=12, frames=16, rho=0.8)
    noise = torch.randn(128, 12, 16, generator=torch.Generator().manual_seed(0))
    mean, std = fd_baseline(spec, 128, draws=8, seed=1)
    assert oracle_fd(spec, noise, 100, objective) < mean + 3 * std
    assert oracle_fd(spec, noise, 3, objective) > 2 * mean
    scaled = oracle_fd(spec, noise, 100, objective, latent_scale=2.0)  # the DiT's space is x / 2; FD in x's
    assert scaled < mean + 3 * std
