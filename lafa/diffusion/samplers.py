"""ODE samplers from t = 1 (noise) to t = 0 on a uniform t grid, any number of steps: the DiTs' and LAFA's.

Rectified flow: Euler and Heun on dx/dt = u. v-objective: DDIM (eta = 0) and DPM-Solver++(2M) (Lu et al. 2022,
multistep second order in data prediction; first order on the first and last steps, as k-diffusion does).
`fn(x, t)` is the (guided) network with t of shape (B,).

The grid: `time_grid(steps)` (Python floats, the DiTs') or `tensor_time_grid(steps)` (float32 `torch.linspace`,
LAFA's flow decoder); the two differ in the last bit for most step counts, and each keeps its checkpoints'
validated outputs bit-identical. `euler` takes either.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from itertools import pairwise

import torch
from tqdm import tqdm

from lafa.diffusion.objectives import predictions

SAMPLERS = {"rf": ("euler", "heun"), "v": ("dpmpp_2m", "ddim")}
ModelFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def time_grid(steps: int) -> list[float]:
    """steps + 1 times from 1 down to 0."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    return [1.0 - i / steps for i in range(steps + 1)]


def tensor_time_grid(steps: int, device: torch.device | str | None = None) -> torch.Tensor:
    """steps + 1 float32 times from 1 down to 0 (torch.linspace)."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    return torch.linspace(1.0, 0.0, steps + 1, device=device)


def _call(fn: ModelFn, x: torch.Tensor, t: float | torch.Tensor) -> torch.Tensor:
    return fn(x, torch.full((x.shape[0],), float(t), device=x.device, dtype=torch.float32)).to(x.dtype)


def euler(fn: ModelFn, x: torch.Tensor, ts: Sequence[float] | torch.Tensor, progress: bool = False) -> torch.Tensor:
    """Rectified flow, first order: x <- x + (t_next - t) u(x, t); the step in the grid's own arithmetic."""
    for t, t_next in tqdm(list(pairwise(ts)), disable=not progress, desc="euler"):
        step = t_next - t
        x = x + (step.to(x.dtype) if isinstance(step, torch.Tensor) else step) * _call(fn, x, t)
    return x


def heun(fn: ModelFn, x: torch.Tensor, ts: list[float], progress: bool = False) -> torch.Tensor:
    """Rectified flow, second order (Heun); the last step to t = 0 is an Euler step (EDM practice)."""
    for t, t_next in tqdm(list(pairwise(ts)), disable=not progress, desc="heun"):
        u = _call(fn, x, t)
        x_euler = x + (t_next - t) * u
        if t_next == 0:
            x = x_euler
        else:
            x = x + (t_next - t) * 0.5 * (u + _call(fn, x_euler, t_next))
    return x


def _alpha_sigma(t: float) -> tuple[float, float]:
    return math.cos(0.5 * math.pi * t), math.sin(0.5 * math.pi * t)


def ddim(fn: ModelFn, x: torch.Tensor, ts: list[float], progress: bool = False) -> torch.Tensor:
    """v-objective, deterministic DDIM: x <- alpha_next x0 + sigma_next eps."""
    for t, t_next in tqdm(list(pairwise(ts)), disable=not progress, desc="ddim"):
        x0, eps = predictions(_call(fn, x, t), x, torch.tensor([t]), "v")
        a_next, s_next = _alpha_sigma(t_next)
        x = a_next * x0 + s_next * eps
    return x


def dpmpp_2m(fn: ModelFn, x: torch.Tensor, ts: list[float], progress: bool = False) -> torch.Tensor:
    """v-objective, DPM-Solver++(2M) with lambda = log(alpha / sigma)."""
    old_x0, h_prev = None, None
    for t, t_next in tqdm(list(pairwise(ts)), disable=not progress, desc="dpmpp_2m"):
        x0, _ = predictions(_call(fn, x, t), x, torch.tensor([t]), "v")
        a, s = _alpha_sigma(t)
        a_next, s_next = _alpha_sigma(t_next)
        if t_next == 0:
            x = x0  # sigma_next = 0: the last step lands on the data prediction
            break
        # exp(-h) with h = lambda_next - lambda; t = 1 has alpha = 0, lambda = -inf, so exp(-h) = 0 there
        exp_neg_h = (s_next * a) / (a_next * s)
        h = math.inf if a == 0 else math.log(a_next / s_next) - math.log(a / s)
        if old_x0 is None or not math.isfinite(h_prev):
            d = x0
        else:
            r = h_prev / h
            d = (1 + 1 / (2 * r)) * x0 - (1 / (2 * r)) * old_x0
        x = (s_next / s) * x + a_next * (1 - exp_neg_h) * d
        old_x0, h_prev = x0, h
    return x


_FUNCS = {"euler": euler, "heun": heun, "ddim": ddim, "dpmpp_2m": dpmpp_2m}


def sample(
    fn: ModelFn, noise: torch.Tensor, steps: int, objective: str, sampler: str | None = None, progress: bool = False
) -> torch.Tensor:
    """Integrate from noise at t = 1 to t = 0 in `steps` steps; sampler defaults to euler (rf) / dpmpp_2m (v)."""
    if objective not in SAMPLERS:
        raise ValueError(f"unknown objective {objective!r} (one of {tuple(SAMPLERS)})")
    sampler = sampler or SAMPLERS[objective][0]
    if sampler not in SAMPLERS[objective]:
        raise ValueError(f"sampler {sampler!r} does not fit objective {objective!r} (use one of {SAMPLERS[objective]})")
    return _FUNCS[sampler](fn, noise, time_grid(steps), progress=progress)
