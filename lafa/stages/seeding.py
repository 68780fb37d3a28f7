"""Per-rank, per-batch random streams for training draws (noise, t, CFG drops, masks, dropout; docs/data.md).

LightningCLI's `seed_everything` seeds every DDP rank alike, so without this every rank would draw the same
noise and masks. Reseeding torch, numpy and python's `random` before every training batch from (seed, global
rank, epoch, batch index) makes the draws a pure function of the position in training: a resumed run draws
exactly what the uninterrupted run drew, with no RNG state to save. Model initialisation is untouched.
"""

from __future__ import annotations

import hashlib
import os
import random

import numpy as np
import torch
from lightning.pytorch import Callback, LightningModule, Trainer


class RankSeedCallback(Callback):
    """Reseeds the global RNGs before each training batch from (seed, global rank, epoch, batch index).

    seed: the base seed; None takes the one `seed_everything` set (LightningCLI's `seed_everything`), else 0.
    """

    def __init__(self, seed: int | None = None) -> None:
        self.seed = seed

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: object,
                             batch_idx: int) -> None:
        base = int(self.seed) if self.seed is not None else int(os.environ.get("PL_GLOBAL_SEED", 0))
        key = f"{base}/{trainer.global_rank}/{trainer.current_epoch}/{batch_idx}"
        s = int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "little") >> 1  # 63 bits
        torch.manual_seed(s)  # CPU and every CUDA device
        np.random.seed(s % 2**32)
        random.seed(s)
