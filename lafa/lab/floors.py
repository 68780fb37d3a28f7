"""The exact Bayes floor of lafa's DiT losses on a Gaussian latent, and the optimal denoiser that reaches it.

lafa's objectives (`lafa.diffusion.objectives`, t = 1 is noise) regress a target y on x_t = a x0 + s eps:
`rf` a = 1 - t, s = t, y = eps - x0; `v` a = cos(pi t / 2), s = sin(pi t / 2), y = a eps - s x0. For a mode of x0
with variance lam (independent of every other mode, x0 and eps jointly Gaussian) the best prediction of y from
x_t is linear, E[y | x_t] = Cov(y, x_t) / Var(x_t) x_t, and its mean squared error Var(y) - Cov(y, x_t)^2 / Var(x_t)
simplifies (with a^2 + s^2 = 1 for `v`) to lam / (a^2 lam + s^2): lam / ((1 - t)^2 lam + t^2) for `rf`.
The DiT's loss (per-example masked mean, every lab frame real) is the mean over the C N elements of the squared
error, and an orthonormal change of basis keeps sums of squares, so the floor at t is the mean of that residual
over K's modes (`GaussianLatentSpec.mode_variances`). `val/loss` is the mean over the stage's `val_t` grid, so its
floor is the mean of the per-t floors. A `latent_scale` s_l divides the DiT's latents: every mode variance becomes lam / s_l^2.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from lafa.diffusion.objectives import alpha_sigma
from lafa.lab.spec import GaussianLatentSpec


def coefficients(t: float, objective: str) -> tuple[float, float]:
    """(a, s) of x_t = a x0 + s eps: lafa's own `alpha_sigma`, so the floor follows its parameterisation."""
    a, s = alpha_sigma(torch.tensor(float(t), dtype=torch.float64), objective)
    return float(a), float(s)


def bayes_residual(variances: np.ndarray, t: float, objective: str) -> np.ndarray:
    """Minimum mean squared error of the objective's target for modes of these variances: lam / (a^2 lam + s^2)."""
    a, s = coefficients(t, objective)
    lam = np.asarray(variances, dtype=np.float64)
    return lam / (a * a * lam + s * s)


def loss_floor(spec: GaussianLatentSpec, t: float, objective: str, latent_scale: float = 1.0) -> float:
    """The lowest expected DiT loss at t on latents of `spec` divided by latent_scale (mean over elements)."""
    return float(bayes_residual(spec.mode_variances / latent_scale**2, t, objective).mean())


def loss_floors(spec: GaussianLatentSpec, ts: Sequence[float], objective: str,
                latent_scale: float = 1.0) -> dict[float, float]:
    """{t: floor} for a validation grid; the floor of `val/loss` is the mean of the values."""
    return {float(t): loss_floor(spec, float(t), objective, latent_scale) for t in ts}


def optimal_prediction(spec: GaussianLatentSpec, x_t: torch.Tensor, t: float, objective: str,
                       latent_scale: float = 1.0) -> torch.Tensor:
    """E[target | x_t] (..., C, N) for latents of `spec` divided by latent_scale: in each mode the regression
    coefficient Cov(y, x_t) / Var(x_t) = (s - a lam) / (a^2 lam + s^2) (rf) or a s (1 - lam) / (a^2 lam + s^2) (v)."""
    a, s = coefficients(t, objective)
    lam = torch.from_numpy(spec.mode_variances / latent_scale**2)
    var_x = a * a * lam + s * s
    cov = (s - a * lam) if objective == "rf" else a * s * (1.0 - lam)
    return spec.from_modes(spec.to_modes(x_t) * (cov / var_x))  # to_modes is linear: scale enters via lam
