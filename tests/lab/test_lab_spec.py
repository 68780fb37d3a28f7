"""The lab's latent distribution: stated covariance, equal total variance, shared eigenvalues across bases."""

import numpy as np
import pytest
import torch

from lafa.lab.spec import BASES, SPECTRA, GaussianLatentSpec, dct_basis

ARMS = [(s, b) for s in SPECTRA for b in BASES]


def full_covariance(spec: GaussianLatentSpec) -> np.ndarray:
    """K (C N, C N) of vec(x) in (channel, frame) order, built term by term from the docstring's definition."""
    u, lam = spec.basis_matrix, spec.eigenvalues
    t = spec.temporal_covariance()
    return sum(lam[k] * np.kron(np.outer(u[:, k], u[:, k]), np.eye(spec.frames) if spec.white[k] else t)
               for k in range(spec.channels))


@pytest.mark.parametrize("spectrum,basis", ARMS)
def test_total_variance_is_c_n_in_every_arm(spectrum, basis):
    spec = GaussianLatentSpec(channels=16, frames=12, spectrum=spectrum, basis=basis, noise_channels=4)
    assert spec.eigenvalues.sum() == pytest.approx(16)
    assert np.trace(spec.channel_covariance) == pytest.approx(16)
    assert spec.mode_variances.sum() == pytest.approx(16 * 12)
    assert np.trace(full_covariance(spec)) == pytest.approx(16 * 12)


@pytest.mark.parametrize("spectrum,basis", ARMS)
def test_mode_variances_are_the_eigenvalues_of_k(spectrum, basis):
    spec = GaussianLatentSpec(channels=8, frames=10, spectrum=spectrum, basis=basis, noise_channels=3,
                              temporal="power_law", temporal_exponent=0.7)
    np.testing.assert_allclose(np.sort(spec.mode_variances.ravel()), np.linalg.eigvalsh(full_covariance(spec)),
                               atol=1e-10)


def test_bases_are_orthonormal_permutation_and_rotation_of_dct():
    u = dct_basis(12)
    np.testing.assert_allclose(u.T @ u, np.eye(12), atol=1e-12)
    np.testing.assert_allclose(u[:, 0], 1 / np.sqrt(12))
    perm = GaussianLatentSpec(channels=12, basis="permuted", basis_seed=3).basis_matrix
    rows = [int(np.argmin(np.abs(u - r).sum(1))) for r in perm]
    assert sorted(rows) == list(range(12)) and rows != list(range(12))
    np.testing.assert_allclose(perm, u[rows], atol=0)
    rot = GaussianLatentSpec(channels=12, basis="rotated", basis_seed=3).basis_matrix
    np.testing.assert_allclose(rot.T @ rot, np.eye(12), atol=1e-12)
    again = GaussianLatentSpec(channels=12, basis="rotated", basis_seed=3).basis_matrix
    other = GaussianLatentSpec(channels=12, basis="rotated", basis_seed=4).basis_matrix
    assert np.array_equal(rot, again) and not np.allclose(rot, other)


def test_arms_share_channel_eigenvalues_flat_does_not():
    eig = {b: np.linalg.eigvalsh(GaussianLatentSpec(channels=16, basis=b).channel_covariance) for b in BASES}
    np.testing.assert_allclose(eig["permuted"], eig["dct"], atol=1e-12)
    np.testing.assert_allclose(eig["rotated"], eig["dct"], atol=1e-12)
    flat = np.linalg.eigvalsh(GaussianLatentSpec(channels=16, spectrum="flat").channel_covariance)
    np.testing.assert_allclose(flat, 1.0, atol=1e-12)
    assert np.abs(flat - eig["dct"]).max() > 1


def test_vae_like_has_white_noise_tail():
    spec = GaussianLatentSpec(channels=16, spectrum="vae_like", noise_channels=4, noise_level=0.05, exponent=1.0)
    lam = spec.eigenvalues
    np.testing.assert_allclose(lam[:12] / lam[0], np.arange(1, 13) ** -1.0)
    np.testing.assert_allclose(lam[12:] / lam[0], 0.05)
    assert spec.white.tolist() == [False] * 12 + [True] * 4


def assert_covariance(samples: np.ndarray, cov: np.ndarray) -> None:
    """Sample second moments (n, D) within 5 standard errors sqrt((K_ii K_jj + K_ij^2) / n) of cov."""
    d = np.diag(cov)
    se = np.sqrt((np.outer(d, d) + cov**2) / len(samples))
    assert np.all(np.abs(samples.T @ samples / len(samples) - cov) < 5 * se)


def test_samples_have_the_stated_covariance():
    spec = GaussianLatentSpec(channels=6, frames=5, spectrum="vae_like", noise_channels=2, basis="rotated", rho=0.7)
    x = spec.sample(40000, torch.Generator().manual_seed(0)).flatten(1).numpy()  # (n, C N)
    assert_covariance(x, full_covariance(spec))
    modes = spec.to_modes(torch.from_numpy(x).view(-1, 6, 5)).flatten(1).numpy()
    assert_covariance(modes, np.diag(spec.mode_variances.ravel()))
    np.testing.assert_allclose(spec.from_modes(torch.from_numpy(modes).view(-1, 6, 5)).flatten(1).numpy(), x,
                               atol=1e-10)


def test_bad_knobs_are_refused():
    for kwargs in ({"spectrum": "pink"}, {"basis": "shuffled"}, {"temporal": "ar2"}, {"rho": 1.0},
                   {"spectrum": "vae_like", "noise_channels": 64}, {"temporal": "power_law", "temporal_exponent": 0}):
        with pytest.raises(ValueError):
            GaussianLatentSpec(**kwargs)
