"""The exact Bayes floor of lafa's DiT losses on a Gaussian latent, and the optimal denoiser that reaches it.

For a mode of variance lam the best prediction of the target from x_t = a x0 + s eps is linear and leaves the
residual lam / (a^2 lam + s^2) for both `rf` and `v` (docs/lab.md, "The floors", derives it). The floor at t
is the mean residual over K's modes (`GaussianLatentSpec.mode_variances`), that of `val/loss` the mean over
the stage's `val_t` grid; a `latent_scale` s_l divides the DiT's latents: every mode variance becomes lam /
s_l^2.
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
