"""Crop, zero-pad and mask along the last axis: audio (C, S) with sample_size, latents (C, N) with latent_size.

Sec. 5.1: "clips shorter than 30 sec are padded with a training-time mask"; the mask is True on real
samples (or frames) and False on the zero padding after them.
"""

from __future__ import annotations

import random

import torch


def draw_start(length: int, size: int, rng: random.Random | None) -> int:
    """Random crop start in [0, length - size] (train) or 0 (rng None: val/test, deterministic)."""
    if rng is None or length <= size:
        return 0
    return rng.randint(0, length - size)


def crop_pad(x: torch.Tensor, size: int, start: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(C, L) -> (C, size) window from `start`, zero padded at the end, and its bool mask (size,)."""
    piece = x[..., start:start + size]
    real = piece.shape[-1]
    piece = torch.nn.functional.pad(piece, (0, size - real))  # (C, real) -> (C, size)
    return piece.contiguous(), torch.arange(size) < real

