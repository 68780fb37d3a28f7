"""The exact floor of lafa's DiT loss on a lab latent: Monte Carlo with the optimal denoiser, eigenvalues of K."""

import numpy as np
import pytest
import torch

from lafa.diffusion.objectives import diffusion_loss
from lafa.lab.floors import bayes_residual, loss_floor, loss_floors, optimal_prediction
from lafa.lab.spec import GaussianLatentSpec

T_GRID = (0.1, 0.3, 0.5, 0.7, 0.9)  # DitStage's default val_t


@pytest.mark.parametrize("objective", ["rf", "v"])
@pytest.mark.parametrize("spectrum,latent_scale", [("power_law", 1.0), ("vae_like", 1.7)])
def test_optimal_denoiser_monte_carlo_loss_equals_the_floor(objective, spectrum, latent_scale):
    """lafa's own diffusion_loss (x_t, target, masked mean) of the analytic E[target | x_t] on 1e5 draws is the
    closed-form floor within 1% at every t of the validation grid."""
    spec = GaussianLatentSpec(channels=8, frames=8, spectrum=spectrum, noise_channels=2, basis="rotated", rho=0.8)
    gen = torch.Generator().manual_seed(1)
    x0 = spec.sample(100_000, gen) / latent_scale  # the DiT's scaled latents
    keep = torch.ones(x0.shape[0], x0.shape[-1], dtype=torch.bool)
    for t in T_GRID:
        eps = torch.randn(x0.shape, generator=gen, dtype=torch.float64)
        loss = diffusion_loss(lambda x, tt, t=t: optimal_prediction(spec, x, t, objective, latent_scale),
                              x0, torch.full((x0.shape[0],), t), eps, objective, keep).mean().item()
        assert loss == pytest.approx(loss_floor(spec, t, objective, latent_scale), rel=0.01), t


@pytest.mark.parametrize("objective", ["rf", "v"])
def test_floor_is_the_mean_residual_over_the_eigenvalues_of_k(objective):
    """Independently of the mode machinery: eigenvalues of the full K = sum lam_k u_k u_k^T kron T_k."""
    spec = GaussianLatentSpec(channels=6, frames=7, spectrum="vae_like", noise_channels=2, temporal="power_law")
    u, t_cov = spec.basis_matrix, spec.temporal_covariance()
    k = sum(spec.eigenvalues[i] * np.kron(np.outer(u[:, i], u[:, i]), np.eye(7) if spec.white[i] else t_cov)
            for i in range(6))
    eig = np.linalg.eigvalsh(k)
    for t in T_GRID:
        a, s = (1 - t, t) if objective == "rf" else (np.cos(np.pi * t / 2), np.sin(np.pi * t / 2))
        assert loss_floor(spec, t, objective) == pytest.approx(np.mean(eig / (a * a * eig + s * s)), rel=1e-10)


def test_residual_formulas_and_limits():
    lam = np.array([0.01, 1.0, 30.0])
    np.testing.assert_allclose(bayes_residual(lam, 0.3, "rf"), lam / (0.49 * lam + 0.09))
    np.testing.assert_allclose(bayes_residual(lam, 0.0, "rf"), 1.0)  # x_t = x0 reveals x0; u = eps - x0 keeps eps
    np.testing.assert_allclose(bayes_residual(lam, 1.0, "rf"), lam)  # pure noise: x0's variance is left
    np.testing.assert_allclose(bayes_residual(lam, 1.0, "v"), lam)
    np.testing.assert_allclose(bayes_residual(np.ones(3), 0.4, "v"), 1.0)  # unit variance: v is unpredictable
    with pytest.raises(ValueError):
        bayes_residual(lam, 0.5, "eps")


def test_channel_order_keeps_the_floor_the_spectrum_changes_it():
    """Arms (1) dct, (2) permuted, (3) rotated share every per-t floor; (4) flat differs at every t."""
    floors = {b: loss_floors(GaussianLatentSpec(basis=b), T_GRID, "v") for b in ("dct", "permuted", "rotated")}
    flat = loss_floors(GaussianLatentSpec(spectrum="flat"), T_GRID, "v")
    for t in T_GRID:
        assert floors["permuted"][t] == pytest.approx(floors["dct"][t], rel=1e-12)
        assert floors["rotated"][t] == pytest.approx(floors["dct"][t], rel=1e-12)
        assert abs(flat[t] - floors["dct"][t]) > 0.02, t
    assert set(floors["dct"]) == set(T_GRID)
