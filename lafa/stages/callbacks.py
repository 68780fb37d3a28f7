"""Lightning callbacks shared by the stages."""

from __future__ import annotations

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_warn

from lafa.analysis.figures import correlation_figure, eigen_figure, permutation_figure, psd_figure
from lafa.analysis.latent_report import AnalysisSettings, analyze_maps, output_group_size, summarise
from lafa.data.geometry import real_samples
from lafa.metrics.mel_fd import fd_mel
from lafa.models.log_mel import LogMel
from lafa.stages.dit_callbacks import DitSamplesCallback
from lafa.stages.media import log_figure, media_loggers


class LatentLocalityCallback(Callback):
    """At the end of validation, encode a few validation clips with `pl_module.as_autoencoder()` and log the
    spectral slope alpha and LPI of the latents (Sec. 3) beside those of the clips' log-mel, so locality can
    be watched while a stage trains; the PSD and correlation figures go to TensorBoard (docs/analysis.md).

    Works with any stage that has `as_autoencoder()` and validates on audio batches; the first `num_clips` real
    clips of each validation epoch are used. Logged, for `latent` and `mel` (averaged over DDP ranks):
    analysis/<name>_<measure> for alpha, lpi and every control of `lafa.analysis.controls`, with `permutations`
    random channel orders; `bootstrap` > 0 also logs each measure's interval bounds (<measure>_low / _high),
    which need `min_clips` effective clips. The group-aware baselines use `group_size` when given (0: none),
    else the output group of a LAFA autoencoder's encoder, else the analysis default.
    """

    def __init__(self, num_clips: int = 8, lam: float = 0.06, ridge: float = 1.0, window: int = 64,
                 every_n_epochs: int = 1, log_figures: bool = True, n_mels: int = 64, permutations: int = 20,
                 bootstrap: int = 100, confidence: float = 0.95, seed: int = 0, min_clips: int = 10,
                 group_size: int | None = None) -> None:
        super().__init__()
        self.num_clips, self.every_n_epochs, self.log_figures = num_clips, every_n_epochs, log_figures
        self.lam, self.ridge, self.window, self.n_mels = lam, ridge, window, n_mels
        self.permutations, self.bootstrap, self.confidence, self.seed = permutations, bootstrap, confidence, seed
        self.min_clips, self.group_size = min_clips, group_size
        self._clips: list[torch.Tensor] = []
        self._warned = False

    def _active(self, trainer: Trainer) -> bool:
        return not trainer.sanity_checking and trainer.current_epoch % self.every_n_epochs == 0

    def on_validation_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._clips = []

    def on_validation_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs, batch,
                                batch_idx: int, dataloader_idx: int = 0) -> None:
        if not self._active(trainer) or len(self._clips) >= self.num_clips:
            return
        if not isinstance(batch, dict) or "audio" not in batch:
            return
        audio = batch["audio"].detach()
        lengths = real_samples(batch).tolist()
        for clip, n in zip(audio, lengths, strict=True):
            if len(self._clips) < self.num_clips and n > 0:
                self._clips.append(clip[:, : int(n)].float().cpu())

    @torch.no_grad()
    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not self._active(trainer):
            return
        if not self._clips:
            if not self._warned:
                rank_zero_warn("LatentLocalityCallback: validation batches carry no `audio`; nothing analysed")
                self._warned = True
            return
        autoencoder = pl_module.as_autoencoder()
        ratio = autoencoder.downsampling_ratio
        clips = [c for c in self._clips if c.shape[-1] >= ratio]
        latents = [autoencoder.encode(c[None, :, : c.shape[-1] // ratio * ratio].to(pl_module.device))[0].float().cpu()
                   for c in clips]  # (C, frames) each, one clip at a time: no padding enters the latents
        mel = LogMel(sample_rate=autoencoder.sample_rate, hop_length=ratio, n_fft=max(ratio, 4 * self.n_mels),
                     n_mels=self.n_mels)
        mels = [mel(c[None])[0] for c in clips]
        shortest = min(min(z.shape[-1] for z in latents), min(m.shape[-1] for m in mels))
        window = min(self.window, shortest)
        settings = AnalysisSettings(lam=self.lam, ridge=self.ridge, window=window, hop=window,
                                    permutations=self.permutations, bootstrap=self.bootstrap, confidence=self.confidence,
                                    min_clips=self.min_clips, group_size=self.group_size)
        try:
            results = {"latent": analyze_maps(latents, settings, self.seed, output_group_size(autoencoder)),
                       "mel": analyze_maps(mels, settings, self.seed)}
        except ValueError as exc:  # e.g. a constant latent at init: training goes on, the user is told why
            rank_zero_warn(f"LatentLocalityCallback: nothing logged at step {trainer.global_step}: {exc}")
            return
        latent = results["latent"]
        if latent["samples"] < 20 * 2 * latent["neighbour_radius"] and not self._warned:
            rank_zero_warn(f"LatentLocalityCallback: {latent['samples']} latent frames for {2 * latent['neighbour_radius']} "
                           "neighbours; in-sample R^2 is inflated (about 2r / N for unrelated channels): "
                           "raise num_clips or the validation crop for a meaningful LPI")
            self._warned = True
        logged = {}
        for name, r in results.items():
            summary = summarise(r)
            for key, value in summary.items():
                if key != "intervals" and value is not None:
                    logged[f"analysis/{name}_{key}"] = float(value)
            for key, (low, high) in (summary.get("intervals") or {}).items():
                if low is not None:
                    logged[f"analysis/{name}_{key}_low"], logged[f"analysis/{name}_{key}_high"] = low, high
        pl_module.log_dict(logged, sync_dist=True)
        loggers, step = media_loggers(trainer.loggers), trainer.global_step  # TensorBoard / W&B
        if self.log_figures and trainer.is_global_zero and loggers:
            log_figure(loggers, "analysis/psd", psd_figure(results), step)
            panels = {k: {**r, "lam": settings.lam} for k, r in results.items()}
            log_figure(loggers, "analysis/correlation", correlation_figure(panels), step)
            log_figure(loggers, "analysis/permutation", permutation_figure(results), step)
            log_figure(loggers, "analysis/eigen", eigen_figure(results), step)


class FdMelCriterionCallback(DitSamplesCallback):
    """The two reference values of the DiT learning criterion (issue 22, docs/study.md "Real music"), measured once
    before the first training step on the first 2 `fd_mel_clips` validation examples, in validation order, and
    written to every logger at step 0 (a run resumed past step 0 measures nothing again):

    - `val/fd_mel_untrained`: `val/fd_mel` of the untrained DiT, exactly as `DitSamplesCallback` (same clips,
      captions, lengths, seeds, sampler `steps` and `cfg_scale`: give it the same values) measures it later;
    - `val/fd_mel_floor`: the same Frechet distance between the first `fd_mel_clips` real clips (the references of
      `val/fd_mel`) and the next `fd_mel_clips` real clips: two disjoint real sets of the same size."""

    def __init__(self, fd_mel_clips: int = 8, steps: int | None = None, cfg_scale: float | None = None,
                 seed: int = 0, batch_size: int = 8) -> None:
        super().__init__(prompts=(), every_n_steps=1, steps=steps, cfg_scale=cfg_scale, seed=seed,
                         fd_mel_clips=fd_mel_clips, batch_size=batch_size)

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        return None  # no weight averaging to run before: it measures before any training

    def _due(self, trainer: Trainer) -> bool:
        return False  # never at a validation: only in on_train_start

    @torch.no_grad()
    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.global_step > 0 or not self.fd_mel_clips or not trainer.is_global_zero:
            return
        n = self.fd_mel_clips
        loader = trainer.datamodule.val_dataloader() if trainer.datamodule is not None else trainer.val_dataloaders
        clips = []
        for batch in loader:
            self._collect(pl_module, batch, clips, 2 * n)
            if len(clips) >= 2 * n:
                break
        if len(clips) < 2 * n:
            rank_zero_warn(f"FdMelCriterionCallback: {len(clips)} validation clips, fewer than the {2 * n} the "
                           "floor needs; nothing measured")
            return
        first, second = clips[:n], clips[n:]
        sr = pl_module.autoencoder.sample_rate
        was_training = pl_module.training
        pl_module.eval()
        try:
            references = self._references(pl_module, first)
            untrained = fd_mel(self._generate(pl_module, first), references, sample_rate=sr)["value"]
            floor = fd_mel(self._references(pl_module, second), references, sample_rate=sr)["value"]
        finally:
            pl_module.train(was_training)
        for logger in trainer.loggers:
            logger.log_metrics({"val/fd_mel_untrained": float(untrained), "val/fd_mel_floor": float(floor)}, step=0)
