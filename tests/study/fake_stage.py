"""A tiny, fast, deterministic stage for the study tests only: linear regression on synthetic data.

Every training batch is a pure function of (data_seed, global_step), so a run resumed from a step checkpoint
sees exactly the batches an uninterrupted run sees and logs the same `val/loss` curve.
"""

from __future__ import annotations

import time

import torch
from lightning.pytorch import LightningDataModule, LightningModule
from torch.utils.data import DataLoader


class LinearRegression(LightningModule):
    def __init__(self, dim: int = 8, lr: float = 0.01, batch_size: int = 16, noise: float = 0.1,
                 data_seed: int = 0, val_size: int = 128,
                 step_sleep: float = 0.0, autoencoder_ckpt: str | None = None):
        super().__init__()
        self.save_hyperparameters()
        self.linear = torch.nn.Linear(dim, 1)
        g = torch.Generator().manual_seed(data_seed)
        self.register_buffer("w_true", torch.randn(dim, 1, generator=g), persistent=False)
        self.register_buffer("val_x", torch.randn(val_size, dim, generator=g), persistent=False)
        self.register_buffer("val_y", self.val_x @ self.w_true, persistent=False)

    def _batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        g = torch.Generator().manual_seed(self.hparams.data_seed * 1_000_003 + self.global_step)
        x = torch.randn(self.hparams.batch_size, self.hparams.dim, generator=g)
        y = x @ self.w_true + self.hparams.noise * torch.randn(self.hparams.batch_size, 1, generator=g)
        return x, y

    def training_step(self, batch, batch_idx):  # noqa: ANN001
        if self.hparams.step_sleep:
            time.sleep(self.hparams.step_sleep)  # lets a test kill the run between checkpoints
        x, y = self._batch()
        loss = torch.nn.functional.mse_loss(self.linear(x), y)
        self.log("train/loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):  # noqa: ANN001
        self.log("val/loss", torch.nn.functional.mse_loss(self.linear(self.val_x), self.val_y))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)


class StepTicks(LightningDataModule):
    """Placeholder batches: the model draws its own data from the step, the loader only paces the loop."""

    def __init__(self, steps_per_epoch: int = 1000):
        super().__init__()
        self.steps_per_epoch = steps_per_epoch

    def train_dataloader(self) -> DataLoader:
        return DataLoader(range(self.steps_per_epoch), batch_size=1)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(range(1), batch_size=1)
