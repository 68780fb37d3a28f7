"""Generation while a DiT trains: demo audio for fixed prompts, and the offline metric `val/fd_mel` (docs/dit.md).

Both use the stage's generation with a fixed seed (CPU generators). They generate with the EMA weights: at setup
this callback moves itself before the first weight-averaging callback of the trainer, which swaps the averaged
weights out at the end of validation.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import WeightAveraging

from lafa.data.geometry import frames_for, real_samples, trim
from lafa.metrics.mel_fd import fd_mel
from lafa.stages.checks import FD_MEL_OFF, check_fd_mel_clips
from lafa.stages.media import log_audio


class DitSamplesCallback(Callback):
    """At the end of a validation, at most every `every_n_steps` optimiser steps:

    - renders `prompts` (each `seconds` long) and writes them to TensorBoard as `samples/{i}` (mono mix);
    - with `fd_mel_clips` > 0, generates audio for the first `fd_mel_clips` validation examples (each exactly as
      long as its crop's real audio, with its caption and seconds_start) and logs `val/fd_mel`: the Frechet
      distance of their log-mel frame statistics to the real crops' (`lafa.metrics.mel_fd`; latent batches: the
      autoencoder's reconstructions of the real frames). An offline proxy, not FD_openl3.
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
        self._val: list[tuple[str, float, int, torch.Tensor, bool]] = []  # caption, start, samples, data, audio?

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Run before every weight-averaging callback, so that generation sees the averaged (EMA) weights."""
        callbacks = list(trainer.callbacks)
        first = next((i for i, c in enumerate(callbacks) if isinstance(c, WeightAveraging)), None)
        if first is not None and callbacks.index(self) > first:
            callbacks.remove(self)
            callbacks.insert(first, self)
            trainer.callbacks = callbacks  # a new list: the hook loop running now iterates over the old one

    def _due(self, trainer: Trainer) -> bool:
        if trainer.sanity_checking:
            return False
        return self._last_step is None or trainer.global_step - self._last_step >= self.every_n_steps

    def on_validation_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._val = []

    def on_validation_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs, batch,
                                batch_idx: int, dataloader_idx: int = 0) -> None:
        if self.fd_mel_clips and len(self._val) < self.fd_mel_clips and self._due(trainer):
            self._collect(pl_module, batch, self._val, self.fd_mel_clips)

    @staticmethod
    def _collect(pl_module, batch: dict, kept: list, limit: int) -> None:
        """Appends the batch's examples to `kept` until it holds `limit`: (caption, start, samples, data, audio?);
        one too short for fd_mel's STFT is refused (`check_fd_mel_clips`)."""
        ae = pl_module.autoencoder
        samples = real_samples(batch, ae.downsampling_ratio).tolist()
        starts = torch.as_tensor(batch.get("seconds_start", torch.zeros(len(samples)))).float().tolist()
        is_audio = "audio" in batch
        data = batch["audio"] if is_audio else batch["latent"]
        for i, caption in enumerate(batch["caption"]):
            if len(kept) < limit:
                check_fd_mel_clips([batch["id"][i]], [samples[i]], ae.sample_rate, "val", FD_MEL_OFF)
                kept.append((caption, starts[i], int(samples[i]), data[i].detach().float().cpu(), is_audio))

    def _generate(self, pl_module, clips: list[tuple]) -> list[torch.Tensor]:
        """Audio for (caption, start, samples, ...) tuples, `batch_size` at a time."""
        out = []
        for i in range(0, len(clips), self.batch_size):
            part = clips[i : i + self.batch_size]
            out += pl_module.generate_samples([c[0] for c in part], [c[2] for c in part], [c[1] for c in part],
                                              seed=self.seed + i, **self.sample_kwargs)
        return out

    def _references(self, pl_module, clips: list[tuple]) -> list[torch.Tensor]:
        """The real validation crops trimmed to their real audio (latent batches: the decoded real frames)."""
        ratio = pl_module.autoencoder.downsampling_ratio
        refs = []
        for i, (_, _, samples, data, is_audio) in enumerate(clips):
            if is_audio:  # (io_channels, samples)
                refs += trim(data[None], [samples])
            else:
                gen = torch.Generator().manual_seed(self.seed + i)
                decoded = pl_module.decode_latents(data[None], [frames_for(samples, ratio)], generator=gen)
                refs += trim(decoded, [samples])
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
                clips = self._generate(pl_module, [(p, 0.0, round(self.seconds * sr)) for p in self.prompts])
                for i, clip in enumerate(clips):  # TensorBoard / W&B (lafa.stages.media)
                    log_audio(trainer.loggers, f"samples/{i}", clip, trainer.global_step, sr)
            if self._val:
                generated = self._generate(pl_module, self._val)
                value = fd_mel(generated, self._references(pl_module, self._val), sample_rate=sr)["value"]
        if self.fd_mel_clips:
            value = trainer.strategy.broadcast(value, src=0)
            if value is not None:
                pl_module.log("val/fd_mel", float(value), sync_dist=False)
