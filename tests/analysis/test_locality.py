"""LPI against closed forms (AR(1) and MA(1) channels), limits, and a direct per-channel ridge solve."""

import numpy as np
import pytest
import torch

from lafa.analysis.locality import channel_correlation, lpi, lpi_per_channel, neighbour_radius

N = 40000  # samples; in-sample R^2 bias is about 2r / N


def ar1_channels(channels: int, phi: float, n: int, seed: int) -> torch.Tensor:
    """z_c = phi z_{c-1} + sqrt(1 - phi^2) e_c along the channel axis, unit variance: (C, n)."""
    rng = np.random.default_rng(seed)
    z = np.empty((channels, n))
    z[0] = rng.standard_normal(n)
    for c in range(1, channels):
        z[c] = phi * z[c - 1] + np.sqrt(1 - phi**2) * rng.standard_normal(n)
    return torch.from_numpy(z)


@pytest.mark.parametrize("lam", [0.06, 0.13])
def test_ar1_channels_give_analytic_lpi(lam):
    """Markov chain: interior R^2 = 2 phi^2 / (1 + phi^2) (both neighbours), edges phi^2, for any r >= 1."""
    channels, phi = 16, 0.8
    assert neighbour_radius(channels, lam) == (1 if lam == 0.06 else 3)
    z = ar1_channels(channels, phi, N, seed=0)
    interior, edge = 2 * phi**2 / (1 + phi**2), phi**2
    expected = ((channels - 2) * interior + 2 * edge) / channels
    # split into "clips" to exercise the B * T flattening
    got = lpi([z[:, : N // 2], z[:, N // 2 :]], lam=lam, ridge=1.0)
    assert got == pytest.approx(expected, abs=0.01)


def test_ma1_channels_give_analytic_lpi():
    """z_c = (e_c + e_{c+1}) / sqrt 2: with r = 1, interior R^2 = 1/4 + 1/4 = 1/2, edges 1/4."""
    channels = 16
    e = torch.randn(channels + 1, N, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    z = (e[:-1] + e[1:]) / np.sqrt(2)
    per = lpi_per_channel([z], lam=0.06, ridge=1.0)
    assert per[0].item() == pytest.approx(0.25, abs=0.02)
    assert per[-1].item() == pytest.approx(0.25, abs=0.02)
    assert per[1:-1].mean().item() == pytest.approx(0.5, abs=0.01)


def test_independent_channels_lpi_near_zero():
    z = torch.randn(64, 20000, generator=torch.Generator().manual_seed(4))
    assert lpi([z]) == pytest.approx(0.0, abs=0.005)


def test_duplicated_neighbours_lpi_near_one():
    base = torch.randn(32, 5000, generator=torch.Generator().manual_seed(5))
    z = base.repeat_interleave(2, dim=0)  # channels 2k and 2k+1 identical
    assert lpi([z]) == pytest.approx(1.0, abs=1e-3)


def test_scale_invariance_and_constant_channel():
    z = ar1_channels(8, 0.5, 5000, seed=6)
    scaled = z * torch.arange(1, 9, dtype=torch.float64)[:, None] + 7.0
    torch.testing.assert_close(lpi_per_channel([scaled]), lpi_per_channel([z]))
    z[3] = 2.0  # a constant channel predicts nothing and is predicted trivially: R^2 = 0
    per = lpi_per_channel([z])
    assert per[3].item() == 0.0
    assert torch.isfinite(per).all()


def naive_ridge_r2(z: np.ndarray, lam: float, ridge: float) -> np.ndarray:
    """Reference: per channel, build the design matrix and solve the ridge normal equations directly."""
    z = (z - z.mean(1, keepdims=True)) / z.std(1, keepdims=True)
    channels = z.shape[0]
    r = int(np.ceil(lam * channels - 1e-9))
    out = []
    for c in range(channels):
        nb = [j for j in range(c - r, c + r + 1) if j != c and 0 <= j < channels]
        x, y = z[nb].T, z[c]
        w = np.linalg.solve(x.T @ x + ridge * np.eye(len(nb)), x.T @ y)
        out.append(1 - np.sum((y - x @ w) ** 2) / np.sum(y**2))
    return np.array(out)


@pytest.mark.parametrize("ridge", [0.0, 1.0, 500.0])
def test_lpi_matches_direct_ridge_solve(ridge):
    rng = np.random.default_rng(7)
    z = rng.standard_normal((20, 300)).cumsum(0) + rng.standard_normal((20, 300))
    got = lpi_per_channel([torch.from_numpy(z)], lam=0.1, ridge=ridge).numpy()
    np.testing.assert_allclose(got, naive_ridge_r2(z, 0.1, ridge), rtol=1e-8, atol=1e-10)


def test_channel_correlation_matches_numpy():
    z = np.random.default_rng(8).standard_normal((6, 500)).cumsum(0)
    got = channel_correlation([torch.from_numpy(z[:, :200]), torch.from_numpy(z[:, 200:])]).numpy()
    np.testing.assert_allclose(got, np.corrcoef(z), atol=1e-12)
