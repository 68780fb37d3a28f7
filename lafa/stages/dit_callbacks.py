"""Generation while a DiT trains: demo audio for fixed prompts, and the offline metric `val/fd_mel`.

Both use the stage's `generate()` with a fixed seed, so successive evaluations (and runs on different latent
spaces) see the same prompts and the same noise. Put this callback BEFORE `EMAWeightAveraging` in the
trainer's callback list: Lightning runs callbacks in order, and the EMA callback swaps the averaged weights
out at the end of validation, so only a callback listed before it generates with the EMA weights.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import TensorBoardLogger

from lafa.metrics.mel_fd import fd_mel


class DitSamplesCallback(Callback):
    """At the end of a validation, at most every `every_n_steps` optimiser steps:

    - renders `prompts` (each `seconds` long) and writes them to TensorBoard as `samples/{i}` (mono mix);
    - with `fd_mel_clips` > 0, generates audio for the captions (and seconds_total) of the first `fd_mel_clips`
      validation examples and logs `val/fd_mel`: the Frechet distance between the log-mel frame statistics of
      those generated clips and of the real validation clips (`lafa.metrics.mel_fd`; for latent batches the real
      clips are the autoencoder's reconstructions of the latents). It is an offline proxy, not FD_openl3.
    """

    def __init__(
        self,
        prompts: Sequence[str] = (),
        seconds: float = 10.0,
        every_n_steps: int = 1000,
        steps: int | None = None,
        cfg_scale: float | None = None,
        seed: int = 0,
        fd_mel_clips: int = 0,
        batch_size: int = 8,
    ) -> None:
        super().__init__()
        self.prompts, self.seconds, self.every_n_steps = list(prompts), float(seconds), every_n_steps
        self.sample_kwargs = {"steps": steps, "cfg_scale": cfg_scale}
        self.seed, self.fd_mel_clips, self.batch_size = seed, fd_mel_clips, batch_size
        self._last_step: int | None = None
        self._val: list[tuple[str, float, torch.Tensor, torch.Tensor | None, bool]] = []

    def _due(self, trainer: Trainer) -> bool:
        if trainer.sanity_checking:
            return False
        return self._last_step is None or trainer.global_step - self._last_step >= self.every_n_steps

    def on_validation_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._val = []

    def on_validation_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs, batch,
                                batch_idx: int, dataloader_idx: int = 0) -> None:
        if not self.fd_mel_clips or len(self._val) >= self.fd_mel_clips or not self._due(trainer):
            return
        totals = torch.as_tensor(batch["seconds_total"]).float().tolist()
        is_audio = "audio" in batch
        data = batch["audio"] if is_audio else batch["latent"]
        padding = batch.get("padding_mask")
        for i, caption in enumerate(batch["caption"]):
            if len(self._val) < self.fd_mel_clips:
                keep = None if padding is None else padding[i].detach().cpu()
                self._val.append((caption, totals[i], data[i].detach().float().cpu(), keep, is_audio))

    def _generate(self, pl_module, captions: list[str], seconds: list[float]) -> list[torch.Tensor]:
        clips = []
        for i in range(0, len(captions), self.batch_size):
            clips += pl_module.generate(captions[i: i + self.batch_size], seconds[i: i + self.batch_size],
                                        seed=self.seed + i, **self.sample_kwargs)
        return clips

    def _references(self, pl_module) -> list[torch.Tensor]:
        """The real validation clips (audio trimmed to its padding mask, or decoded latents)."""
        ae = pl_module.autoencoder
        refs = []
        for _, total, data, keep, is_audio in self._val:
            if is_audio:  # (io_channels, samples)
                refs.append(data[:, : int(keep.sum())] if keep is not None else data)
            else:
                z = data[None].to(pl_module.device)
                n = int(keep.sum()) if keep is not None else z.shape[-1]
                audio = ae.decode(z[..., :n], steps=pl_module.hparams.decode_steps)[0].float().cpu()
                refs.append(audio[:, : round(total * ae.sample_rate)])
        return refs

    @torch.no_grad()
    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not self._due(trainer):
            return
        self._last_step = trainer.global_step
        value = None
        if trainer.is_global_zero:
            sr = pl_module.autoencoder.sample_rate
            if self.prompts:
                clips = self._generate(pl_module, self.prompts, [self.seconds] * len(self.prompts))
                for logger in trainer.loggers:
                    if isinstance(logger, TensorBoardLogger):
                        for i, clip in enumerate(clips):
                            mono = clip.mean(dim=0, keepdim=True).clamp(-1, 1)
                            logger.experiment.add_audio(f"samples/{i}", mono, trainer.global_step, sample_rate=sr)
            if self._val:
                generated = self._generate(pl_module, [v[0] for v in self._val], [v[1] for v in self._val])
                value = fd_mel(generated, self._references(pl_module), sample_rate=sr)["value"]
        if self.fd_mel_clips:
            value = trainer.strategy.broadcast(value, src=0)
            if value is not None:
                pl_module.log("val/fd_mel", float(value), sync_dist=False)
