"""Per-rank, per-batch random streams for training draws (noise, t, CFG drops, masks, dropout).

LightningCLI's `seed_everything` seeds every DDP rank alike, and the stages draw from the global RNGs, so
without this every rank would draw the same noise and masks (a global batch on 8 GPUs would repeat each
draw 8 times). DiT's and nanoGPT's training scripts offset the seed by the rank; lafa goes one step further
and reseeds torch, numpy and python's `random` before every training batch from (seed, global rank, epoch,
batch index). The draws are then a pure function of the position in training: a run resumed from any
checkpoint draws exactly what the uninterrupted run drew, with no RNG state to save, on any number of ranks.
Model initialisation (before training) is untouched: every rank starts from the same weights.
"""

from __future__ import annotations

import hashlib
import os
import random

import numpy as np
import torch
from lightning.pytorch import Callback, LightningModule, Trainer


def batch_seed(seed: int, rank: int, epoch: int, batch_idx: int) -> int:
    """A 63-bit seed for one training batch on one rank."""
    digest = hashlib.blake2b(f"{seed}/{rank}/{epoch}/{batch_idx}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


class RankSeedCallback(Callback):
    """Reseeds the global RNGs before each training batch from (seed, global rank, epoch, batch index).

    seed: the base seed; None takes the one `seed_everything` set (LightningCLI's `seed_everything`), else 0.
    """

    def __init__(self, seed: int | None = None) -> None:
        self.seed = seed

    def _base(self) -> int:
        if self.seed is not None:
            return int(self.seed)
        return int(os.environ.get("PL_GLOBAL_SEED", 0))

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: object,
                             batch_idx: int) -> None:
        s = batch_seed(self._base(), trainer.global_rank, trainer.current_epoch, batch_idx)
        torch.manual_seed(s)  # CPU and every CUDA device
        np.random.seed(s % 2**32)
        random.seed(s)
