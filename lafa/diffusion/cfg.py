"""Classifier-free guidance: condition dropout in training (0.1, Stable Audio Open), guidance at sampling."""

from __future__ import annotations

from collections.abc import Callable

import torch


def drop_mask(
    batch: int, p: float, device: torch.device | str | None = None, generator: torch.Generator | None = None
) -> torch.Tensor:
    """(B,) bool: True where an example's condition is replaced by the null condition (probability p)."""
    return torch.rand(batch, device=device, generator=generator) < p


def cfg_combine(cond_out: torch.Tensor, uncond_out: torch.Tensor, scale: float) -> torch.Tensor:
    """uncond + scale (cond - uncond): scale 1 is the conditional model, 0 the unconditional one."""
    return uncond_out + scale * (cond_out - uncond_out)


def guided(model: Callable[..., torch.Tensor], cond: dict[str, torch.Tensor], scale: float) -> Callable:
    """A (x, t) -> output callable: the model under `cond`, guided with `scale`.

    cond holds the model's condition tensors with batch first (text, text_mask, seconds_start, seconds_total).
    For scale != 1 the conditional and null passes run as one doubled batch (cond_drop False, then True).
    """
    if scale == 1.0:
        return lambda x, t: model(x, t, **cond)
    doubled = {k: torch.cat((v, v)) for k, v in cond.items()}

    def fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        drop = torch.cat((torch.zeros(b, dtype=torch.bool), torch.ones(b, dtype=torch.bool))).to(x.device)
        out = model(torch.cat((x, x)), torch.cat((t, t)), cond_drop=drop, **doubled)
        return cfg_combine(out[:b], out[b:], scale)

    return fn
