"""The one EMA of lafa: Lightning's `WeightAveraging` with ema_pytorch's warm-up, as Stable Audio trains with it
(docs/vae.md).

decay_n = min(decay, 1 - (1 + n)^-power) for the n-th update (n = 0 copies the weights), applied as
ema <- lerp(ema, w, 1 - decay_n). `every_n_steps` = 2 updates after the VAE stage's generator steps only.
"""

from __future__ import annotations

import torch
from lightning.pytorch.callbacks import WeightAveraging


class WarmupEMA(WeightAveraging):
    def __init__(self, decay: float = 0.9999, power: float = 0.75, every_n_steps: int = 1,
                 start_step: int = 0) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        if every_n_steps < 1:
            raise ValueError(f"every_n_steps must be >= 1, got {every_n_steps}")
        super().__init__(multi_avg_fn=self._average, use_buffers=True)
        self.decay, self.power, self.every_n_steps, self.start_step = decay, power, every_n_steps, start_step

    @torch.no_grad()
    def _average(self, ema: list[torch.Tensor], current: list[torch.Tensor], num_averaged: torch.Tensor) -> None:
        n = int(num_averaged)
        decay = self.decay if self.power == 0 else min(self.decay, 1.0 - (1.0 + n) ** -self.power)
        floats = [(e, c) for e, c in zip(ema, current, strict=True) if e.is_floating_point()]
        if floats:
            torch._foreach_lerp_([e for e, _ in floats], [c.detach() for _, c in floats], 1.0 - decay)
        for e, c in zip(ema, current, strict=True):  # integer buffers (counters) follow the training copy
            if not e.is_floating_point():
                e.copy_(c)

    def should_update(self, step_idx: int | None = None, epoch_idx: int | None = None) -> bool:
        return step_idx is not None and step_idx >= self.start_step and step_idx % self.every_n_steps == 0
