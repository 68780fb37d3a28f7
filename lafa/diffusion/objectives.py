"""The diffusion objectives of lafa, for the DiTs (paper Sec. 5.1) and LAFA's flow decoder (Sec. 4.3). t = 1 is noise.

- "v": x_t = alpha x0 + sigma eps with alpha = cos(pi t / 2), sigma = sin(pi t / 2); target v = alpha eps - sigma x0.
- "rf" (rectified flow): x_t = (1 - t) x0 + t eps; target u = eps - x0 (LAFA's decoder, Sec. 4.3, and DiT-SAO-rf).

The two masked losses differ only in how padded clips weigh (both ignore padded frames; `keep` (B, N) is True on
real frames): `masked_mse_per_example` gives every example the same weight (the DiTs: per-example losses, then the
batch mean, as stable-audio-tools reduces), `masked_mse_pooled` gives every real frame the same weight (LAFA: one
mean over all real frames of the batch, so a short clip counts for its length).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

OBJECTIVES = ("v", "rf")
T_SAMPLERS = ("uniform", "logit_normal")


def _check(objective: str) -> None:
    if objective not in OBJECTIVES:
        raise ValueError(f"unknown objective {objective!r} (one of {OBJECTIVES})")


def alpha_sigma(t: torch.Tensor, objective: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Signal and noise coefficients at t (any shape)."""
    _check(objective)
    if objective == "v":
        return torch.cos(0.5 * math.pi * t), torch.sin(0.5 * math.pi * t)
    return 1 - t, t


def _expand(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return t.reshape(-1, *([1] * (like.ndim - 1))).to(like.dtype)


def noisy(x0: torch.Tensor, eps: torch.Tensor, t: torch.Tensor, objective: str) -> torch.Tensor:
    """x_t for per-example t (B,)."""
    alpha, sigma = alpha_sigma(_expand(t, x0), objective)
    return alpha * x0 + sigma * eps


def target(x0: torch.Tensor, eps: torch.Tensor, t: torch.Tensor, objective: str) -> torch.Tensor:
    """What the network regresses: v = alpha eps - sigma x0, or u = eps - x0."""
    alpha, sigma = alpha_sigma(_expand(t, x0), objective)
    return alpha * eps - sigma * x0 if objective == "v" else eps - x0


def predictions(
    out: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor, objective: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Network output at (x_t, t) -> (x0 estimate, eps estimate)."""
    alpha, sigma = alpha_sigma(_expand(t, x_t), objective)
    if objective == "v":
        return alpha * x_t - sigma * out, sigma * x_t + alpha * out
    return x_t - sigma * out, x_t + alpha * out  # rf: x0 = x_t - t u, eps = x_t + (1 - t) u


def sample_t(
    n: int,
    kind: str = "uniform",
    device: torch.device | str | None = None,
    generator: torch.Generator | None = None,
    mean: float = 0.0,
    std: float = 1.0,
) -> torch.Tensor:
    """Training times (n,): uniform on [0, 1), or logit-normal sigmoid(N(mean, std^2))."""
    if kind == "uniform":
        return torch.rand(n, device=device, generator=generator)
    if kind == "logit_normal":
        return torch.sigmoid(mean + std * torch.randn(n, device=device, generator=generator))
    raise ValueError(f"unknown t sampler {kind!r} (one of {T_SAMPLERS})")


def masked_mse_per_example(pred: torch.Tensor, tgt: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
    """Per-example mean squared error (B,) over channels and the frames where keep (B, N) is True."""
    err = (pred.float() - tgt.float()).pow(2).mean(dim=1)  # (B, C, N) -> (B, N)
    if keep is None:
        return err.mean(dim=-1)
    m = keep.to(err.dtype)
    return (err * m).sum(-1) / m.sum(-1).clamp_min(1.0)


def masked_mse_pooled(pred: torch.Tensor, tgt: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
    """One mean squared error () over channels and every real frame of the batch; pred, tgt (B, C, N), keep (B, N)."""
    err = (pred.float() - tgt.float()).pow(2)
    if keep is None:
        return err.mean()
    k = keep[:, None, :].to(err.dtype)
    return (err * k).sum() / (k.sum() * err.shape[1]).clamp_min(1.0)


def diffusion_loss(
    model_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    x0: torch.Tensor,
    t: torch.Tensor,
    eps: torch.Tensor,
    objective: str,
    keep: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-example loss (B,) of model_fn(x_t, t) against the objective's target, padded frames ignored."""
    x_t = noisy(x0, eps, t, objective)
    return masked_mse_per_example(model_fn(x_t, t), target(x0, eps, t, objective), keep)
