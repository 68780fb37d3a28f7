"""The prefix capture of link 1 (lafa.lab.prefix): its sampled estimate against its closed form, and the bound."""

import numpy as np
import pytest
import torch

from lafa.lab.prefix import prefix_capture, prefix_capture_linear, principal_share
from lafa.lab.spec import GaussianLatentSpec

SPEC = GaussianLatentSpec(channels=16, frames=16, basis="rotated")  # arm (3): an order-free latent
K = 4


def sample():
    return SPEC.sample(512, torch.Generator().manual_seed(0)).double()  # (512, 16, 16): 8192 frames


def encode(rows, z):
    """The linear encoding y = A z per frame, A (C_y, C)."""
    return torch.einsum("yc,bcn->byn", torch.as_tensor(rows.copy()), z)


def test_principal_share_is_the_top_eigenvalues_share():
    lam = SPEC.eigenvalues  # power law, descending
    assert principal_share(SPEC.channel_covariance, K) == pytest.approx(lam[:K].sum() / lam.sum(), abs=1e-12)


def test_pca_ordered_prefix_reaches_the_bound_and_others_stay_under_it():
    u = SPEC.basis_matrix  # columns: eigenvectors, eigenvalues descending
    assert prefix_capture_linear(SPEC.channel_covariance, u.T[:K]) == pytest.approx(1.0, abs=1e-12)
    mixed = np.random.default_rng(0).normal(size=(K, K)) @ u.T[:K]  # any invertible mix of the top subspace
    assert prefix_capture_linear(SPEC.channel_covariance, mixed) == pytest.approx(1.0, abs=1e-12)
    rng = np.random.default_rng(1)
    for _ in range(50):  # the bound: no k rows of any encoding explain more
        assert prefix_capture_linear(SPEC.channel_covariance, rng.normal(size=(K, 16))) <= 1.0 + 1e-12
    bottom = u.T[::-1][:K]  # the PCA order reversed: the smallest components first
    lam = SPEC.eigenvalues
    assert prefix_capture_linear(SPEC.channel_covariance, bottom) == pytest.approx(
        lam[-K:].sum() / lam[:K].sum(), abs=1e-12)


@pytest.mark.parametrize("name", ["pca", "reversed", "identity", "scaled"])
def test_sampled_capture_matches_the_closed_form(name):
    u = SPEC.basis_matrix
    rows = {"pca": u.T, "reversed": u.T[::-1], "identity": np.eye(16),
            "scaled": np.diag(np.linspace(0.1, 10.0, 16)) @ u.T}[name]
    z = sample()
    measured = prefix_capture(encode(rows, z), z, K, SPEC.channel_covariance)
    assert measured == pytest.approx(prefix_capture_linear(SPEC.channel_covariance, rows[:K]), abs=0.02)


def test_the_prefix_must_fit_the_encoding():
    z = sample()[:4]
    with pytest.raises(ValueError, match="1 <= k <= the encoding's 3 channels, got 4"):
        prefix_capture(z[:, :3], z, 4, SPEC.channel_covariance)
