"""Ground-truth metrics while a DiT trains on the lab's latents (`GaussianLatentDataModule`), with no stage code
(docs/lab.md): `val/loss_floor`, `val/excess_loss`, `val/excess_loss_t{t}` from the exact floors of
`lafa.lab.floors`, and `val/exact_fd` of `fd_clips` generated latents (seed, `steps`, `cfg_scale`) against the
true Gaussian, beside `val/exact_fd_baseline` (real latents of the same count, mean over `baseline_draws`) and
`val/exact_fd_oracle` (the exact denoiser with the same sampler and noise), both computed once.
"""

from __future__ import annotations

import torch
from lightning.pytorch import Callback, LightningModule, Trainer

from lafa.data.geometry import seconds_total
from lafa.lab.floors import loss_floors
from lafa.lab.frechet import exact_fd, fd_baseline, oracle_fd
from lafa.lab.spec import GaussianLatentSpec


class GroundTruthCallback(Callback):
    def __init__(self, fd_clips: int = 64, frames_per_vector: int = 1, steps: int | None = None,
                 cfg_scale: float = 1.0, baseline_draws: int = 8, seed: int = 0) -> None:
        super().__init__()
        self.fd_clips, self.frames_per_vector, self.steps = fd_clips, frames_per_vector, steps
        self.cfg_scale, self.baseline_draws, self.seed = cfg_scale, baseline_draws, seed
        self._reference: dict[str, float] | None = None  # the baseline and oracle FDs (model-independent)

    @staticmethod
    def spec(trainer: Trainer) -> GaussianLatentSpec:
        spec = getattr(trainer.datamodule, "spec", None)
        if not isinstance(spec, GaussianLatentSpec):
            raise TypeError("GroundTruthCallback needs the lab's data: data.class_path "
                            "lafa.data.gaussian_latents.GaussianLatentDataModule")
        return spec

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking:
            return
        spec, h = self.spec(trainer), pl_module.hparams
        floors = loss_floors(spec, h.val_t, h.objective, h.latent_scale)
        metrics = trainer.callback_metrics
        for t, floor in floors.items():
            if f"val/loss_t{t:g}" in metrics:
                pl_module.log(f"val/excess_loss_t{t:g}", float(metrics[f"val/loss_t{t:g}"]) - floor)
        floor = sum(floors.values()) / len(floors)
        pl_module.log("val/loss_floor", floor)
        if "val/loss" in metrics:
            pl_module.log("val/excess_loss", float(metrics["val/loss"]) - floor)
        if self.fd_clips > 0:
            self._log_fd(trainer, pl_module, spec)

    def _log_fd(self, trainer: Trainer, pl_module: LightningModule, spec: GaussianLatentSpec) -> None:
        data, h = trainer.datamodule.hparams, pl_module.hparams
        n = self.fd_clips
        total = seconds_total(spec.frames * data.downsampling_ratio, data.sample_rate)
        z = pl_module.sample_latents([data.caption] * n, [total] * n, spec.frames, steps=self.steps,
                                     cfg_scale=self.cfg_scale, seed=self.seed)
        pl_module.log("val/exact_fd", exact_fd(z.cpu(), spec, self.frames_per_vector))
        if self._reference is None:
            noise = torch.randn(n, spec.channels, spec.frames, generator=torch.Generator().manual_seed(self.seed))
            steps = h.steps if self.steps is None else self.steps  # the draw sample_latents makes from `seed`
            self._reference = {
                "val/exact_fd_baseline": fd_baseline(spec, n, self.frames_per_vector, self.baseline_draws, self.seed)[0],
                "val/exact_fd_oracle": oracle_fd(spec, noise, steps, h.objective, h.sampler, h.latent_scale,
                                                 self.frames_per_vector),
            }
        for name, value in self._reference.items():
            pl_module.log(name, value)
