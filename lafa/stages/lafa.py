"""Stage I+: train the LAFA bottleneck (paper Sec. 4, Fig. 4) on a frozen waveform VAE.

The VAE comes from `vae_ckpt` (official Stable Audio Open weights or a `lafa fit` VAE checkpoint), is frozen
(no gradients, eval mode, never in the optimiser) and encodes each batch under `torch.no_grad()`; only LAFA
trains. Paper defaults (Sec. 5.1): lr 5e-5, rho = 1.0 (Fig. 5). Table 5's switches are `model.span` and
`model.causal`, Table 6's is `model.decoder` ("flow" | "vit"). Validation and test metrics (Tables 4 and 7)
and the latent's normalisation statistics: docs/lafa.md.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
from lightning.pytorch import LightningModule

from lafa.checkpoints import load_sao_vae
from lafa.data.geometry import frame_keep
from lafa.diffusion.objectives import masked_mse_pooled
from lafa.errors import LafaUserError
from lafa.metrics.reconstruction import ReconstructionMetrics
from lafa.models.autoencoder import LafaAutoencoder, VaeAutoencoder
from lafa.models.lafa import LAFA_PRESETS, Lafa, LafaConfig
from lafa.models.oobleck import OobleckVAE
from lafa.models.presets import as_mapping, build_model
from lafa.models.spectrum_loss import power_law_loss
from lafa.models.vae_engine import InferenceVAE
from lafa.stages.checks import check_crop, check_range
from lafa.stages.loading import load_autoencoder
from lafa.stages.media import log_audio, log_image, media_loggers


def load_frozen_vae(path: str | Path, vae_args: dict | None = None) -> OobleckVAE:
    """The VAE LAFA is trained on: a `lafa fit` VAE checkpoint or official SAO weights (`load_autoencoder`), or,
    with `vae_args` (OobleckVAE arguments), a raw weights file of a VAE of another size. Any other autoencoder
    with `encode_mean`/`decode` (the locality study's stand-in latent, `lafa.stages.standin`) works too; a LAFA
    checkpoint does not (LAFA on LAFA is not a model lafa offers)."""
    if vae_args:
        return load_sao_vae(path, **vae_args)
    autoencoder = load_autoencoder(path)
    if isinstance(autoencoder, VaeAutoencoder):
        return autoencoder.vae
    if isinstance(autoencoder, LafaAutoencoder) or not hasattr(autoencoder, "encode_mean"):
        raise LafaUserError(f"{path} holds a {type(autoencoder).__name__}; LAFA trains on a plain VAE: give a VAE "
                            f"stage checkpoint or Stable Audio Open VAE weights as vae_ckpt")
    return autoencoder


class LafaStage(LightningModule):
    def __init__(
        self,
        vae_ckpt: str | None,
        vae_args: dict | None = None,
        # vae_ckpt null: no VAE, LAFA trains on the batches' `latent` (B, latent_channels, N) as they are (the
        # ground-truth lab's Gaussian latents, lafa.data.gaussian_latents); no audio metrics
        latent_channels: int | None = None,
        # the LAFA model: lafa.models.lafa.Lafa's arguments and a size `preset` (LAFA_PRESETS, default paper):
        # masking (Sec. 4.1, 5.4), encoder/decoder sizes, the latent as a latent (docs/lafa.md)
        model: LafaConfig | dict | None = None,
        # latent normalisation: batches of each validation that measure the LAFA latent's statistics
        norm_batches: int = 16,
        # optimisation (Sec. 5.1: lr 5e-5)
        lr: float = 5e-5,
        betas: Sequence[float] = (0.9, 0.999),
        weight_decay: float = 0.0,
        warmup_steps: int = 1000,
        # evaluation and logging
        eval_steps: Sequence[int] = (1, 2, 10),
        decode_steps: int = 2,
        # the posterior-mean estimate: the mean of this many independent `decode_steps` decodes of the same Y
        # (logged as {val,test}/k{decode_steps}/posterior_rel_mse; 0 or 1: not logged)
        posterior_samples: int = 4,
        num_audio_examples: int = 2,
        seed: int = 0,
    ) -> None:
        super().__init__()
        check_range({"lr": (lr, ">0"), "weight_decay": (weight_decay, ">=0"), "warmup_steps": (warmup_steps, ">=0"),
                     "decode_steps": (decode_steps, ">=1"), "norm_batches": (norm_batches, ">=1")})
        config = {"preset": "paper", **as_mapping(model)}
        self.save_hyperparameters(ignore=["model"])
        self.hparams["model"] = config  # plain values: checkpoints hold no config classes
        if vae_ckpt is None:
            if not latent_channels:
                raise ValueError("vae_ckpt null (LAFA on latent batches) needs latent_channels")
            self.vae = self.vae_engine = self.metrics = None
        else:
            self.vae = load_frozen_vae(vae_ckpt, vae_args).requires_grad_(False).eval()
            self.vae_engine = InferenceVAE(self.vae)  # the CPU inference engine on CPU float32 (plain elsewhere)
            self.metrics = ReconstructionMetrics(self.vae.sample_rate)
            latent_channels = self.vae.latent_dim
        self.lafa = build_model(Lafa, LAFA_PRESETS, config, latent_channels=latent_channels)

    def train(self, mode: bool = True) -> LafaStage:
        """Lightning switches the whole module to train mode; the frozen VAE stays in eval mode."""
        super().train(mode)
        if self.vae is not None:
            self.vae.eval()
        return self

    def as_autoencoder(self) -> LafaAutoencoder:
        if float(self.lafa.normalizer.count) == 0:
            warnings.warn("LAFA latent statistics were never measured (no validation ran): the latent is not "
                          "normalised", stacklevel=2)
        return LafaAutoencoder(self.vae, self.lafa, default_steps=self.hparams.decode_steps)

    # ---- shared ----------------------------------------------------------------------------------------------
    def _latents(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Frozen-VAE latent Z (B, C, N) in float32 and its real-frame mask (B, N) (None without padding mask);
        without a VAE, the batch's `latent` and its `keep` (real frames)."""
        if self.vae is None:
            keep = batch.get("keep")
            return batch["latent"].float(), None if keep is None else keep.bool()[:, : batch["latent"].shape[-1]]
        with torch.no_grad(), torch.autocast(self.device.type, enabled=False):  # frozen targets in float32
            z = self.vae_engine.encode_mean(batch["audio"].float()).float()
        return z, frame_keep(batch.get("keep"), self.vae.downsampling_ratio, z.shape[-1])

    def _vae_decode(self, z: torch.Tensor) -> torch.Tensor:
        """The frozen VAE's decoder in float32, outside any bf16 autocast."""
        with torch.autocast(self.device.type, enabled=False):
            return self.vae_engine.decode(z.float())

    def _measure_input(self, z: torch.Tensor, keep: torch.Tensor | None) -> None:
        """Once, on the first batch LAFA sees (every process's share): the VAE latent's statistics, frozen after."""
        normalizer = self.lafa.input_normalizer
        normalizer.reset()
        normalizer.accumulate(z, keep)
        normalizer.commit(self.trainer.strategy.reduce(normalizer.pending(), reduce_op="sum"))

    # ---- training --------------------------------------------------------------------------------------------
    def prepare_data(self) -> None:
        """Lightning's first hook, before any logger or callback writes: the crop check runs here too, so a refused
        config leaves nothing behind (`setup` runs it on every process)."""
        self.setup("")

    def setup(self, stage: str) -> None:
        if self._trainer is not None and self.vae is not None:  # latent batches (no VAE) have no audio crop
            check_crop(self.trainer.datamodule, self.vae.downsampling_ratio, "the frozen VAE")

    def configure_optimizers(self):
        h = self.hparams
        opt = torch.optim.AdamW(self.lafa.parameters(), lr=h.lr, betas=tuple(h.betas), weight_decay=h.weight_decay)
        warmup = max(int(h.warmup_steps), 1)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: min(1.0, (step + 1) / warmup))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        z0, keep = self._latents(batch)
        if self.lafa.needs_input_stats:
            self._measure_input(z0, keep)
        mask = self.lafa.masker(z0.shape[0], device=self.device)
        parts = self.lafa.objective(z0, mask, keep)
        self.log("train/loss", parts["loss"], prog_bar=True, batch_size=z0.shape[0])
        if "spectrum" in parts:
            self.log("train/spectrum_loss", parts["spectrum"], batch_size=z0.shape[0])
            self.log("train/reconstruction_loss", parts["reconstruction"], batch_size=z0.shape[0])
        return parts["loss"]

    # ---- evaluation ------------------------------------------------------------------------------------------
    def on_validation_epoch_start(self) -> None:
        self.lafa.normalizer.reset()

    def on_validation_epoch_end(self) -> None:
        """Store the LAFA latent statistics measured on this validation's first `norm_batches` batches."""
        normalizer = self.lafa.normalizer
        if self.trainer.sanity_checking:
            normalizer.reset()
            return
        sums = normalizer.pending()
        if sums is None:
            sums = torch.zeros(3, self.lafa.lafa_channels, dtype=torch.float64, device=self.device)
        sums = self.trainer.strategy.reduce(sums, reduce_op="sum")  # every process's batches
        if sums[0].sum() > 0:
            normalizer.commit(sums)
        normalizer.reset()

    @torch.no_grad()
    def validation_step(self, batch: dict, batch_idx: int) -> None:
        """Validation and test: the same metrics, under val/ or test/."""
        prefix = "test" if self.trainer.testing else "val"
        audio, padding = batch.get("audio"), batch.get("keep")
        z0, keep = self._latents(batch)
        if self.lafa.needs_input_stats:
            self._measure_input(z0, keep)
        b = z0.shape[0]
        variance = _channel_variance(z0, keep)  # what predicting each channel's mean scores
        gen = torch.Generator().manual_seed(self.hparams.seed + batch_idx)  # CPU: the same on every device
        mask = self.lafa.masker(b, gen).to(self.device)
        log = dict(batch_size=b, sync_dist=True)
        parts = self.lafa.objective(z0, mask, keep, gen)
        self.log(f"{prefix}/loss", parts["loss"], prog_bar=True, **log)
        if "spectrum" in parts:
            self.log(f"{prefix}/reconstruction_loss", parts["reconstruction"], **log)

        y = self.lafa.encode(z0, keep)  # nothing masked
        if prefix == "val" and batch_idx < self.hparams.norm_batches and not self.trainer.sanity_checking:
            self.lafa.normalizer.accumulate(y, keep)
        if self.vae is not None:
            vae_audio = self._vae_decode(z0)[..., : audio.shape[-1]]
            for name, value in self.metrics(vae_audio, audio, padding).items():
                self.log(f"{prefix}/vae/{name}", value, **log)
        decoded = {}
        for steps in list(self.hparams.eval_steps) if self.lafa.decoder_kind == "flow" else [None]:
            tag = f"k{steps}" if steps is not None else "vit"
            z_hat = self.lafa.decode(y, steps or 1, keep, gen).float()
            mse = masked_mse_pooled(z_hat, z0, keep)
            self.log(f"{prefix}/{tag}/latent_mse", mse, **log)
            self.log(f"{prefix}/{tag}/latent_rel_mse", mse / variance, prog_bar=tag == "k2", **log)
            if self.vae is None:
                continue
            audio_hat = self._vae_decode(z_hat)[..., : audio.shape[-1]]
            for name, value in self.metrics(audio_hat, audio, padding).items():
                self.log(f"{prefix}/{tag}/{name}", value, **log)
            decoded[tag] = (z_hat, audio_hat)
        self._log_posterior_mean(prefix, y, z0, keep, variance, gen, log, decoded)
        if batch_idx == 0 and self.global_rank == 0 and self.vae is not None:
            self._log_media(prefix, audio, vae_audio, z0, y, decoded)

    test_step = validation_step

    def _log_posterior_mean(self, prefix: str, y, z0, keep, variance, gen, log: dict, decoded: dict) -> None:
        """The posterior-mean estimate of Z0 given Y: the mean of `posterior_samples` decodes of `decode_steps`
        Euler steps from independent noise (the first is the k-step decode logged above, the others draw on
        after every other evaluation draw, so the other metrics do not change with this setting), and the
        unmasked Y's spectrum-matching loss where the model has one."""
        n, steps = int(self.hparams.posterior_samples), int(self.hparams.decode_steps)
        tag = f"k{steps}"
        if self.lafa.spectrum_weight > 0:
            with contextlib.suppress(ValueError):
                self.log(f"{prefix}/spectrum_loss", power_law_loss(y.float(), self.lafa.spectrum_slope,
                                                                   self.lafa.spectrum_window, keep), **log)
        if n < 2 or self.lafa.decoder_kind != "flow":
            return
        first = decoded[tag][0] if tag in decoded else self.lafa.decode(y, steps, keep, gen).float()
        total = first.clone()
        for _ in range(n - 1):
            total += self.lafa.decode(y, steps, keep, gen).float()
        mse = masked_mse_pooled(total / n, z0, keep)
        self.log(f"{prefix}/{tag}/posterior_mse", mse, **log)
        self.log(f"{prefix}/{tag}/posterior_rel_mse", mse / variance, **log)

    def _log_media(self, prefix: str, audio, vae_audio, z0, y, decoded: dict) -> None:
        """TensorBoard / W&B: input / VAE / LAFA audio (mono mix) and (channel x frame) images of Z, Y and Z0_hat."""
        loggers = media_loggers(self.loggers)
        if not loggers:
            return
        step, sr = self.global_step, self.vae.sample_rate

        def image(x: torch.Tensor) -> torch.Tensor:  # (C, N) -> (C, N) in [0, 1], low channels at the bottom
            x = x.float().flip(0)
            return (x - x.min()) / (x.max() - x.min()).clamp_min(1e-8)

        for i in range(min(self.hparams.num_audio_examples, audio.shape[0])):
            clips = {"input": audio[i], "vae": vae_audio[i]}
            clips.update({tag: a[i] for tag, (_, a) in decoded.items()})
            for name, clip in clips.items():
                log_audio(loggers, f"{prefix}/audio_{i}/{name}", clip, step, sr)
            log_image(loggers, f"{prefix}/latent_{i}/vae_z", image(z0[i]), step)
            log_image(loggers, f"{prefix}/latent_{i}/lafa_y", image(y[i]), step)
            for tag, (z_hat, _) in decoded.items():
                log_image(loggers, f"{prefix}/latent_{i}/z_hat_{tag}", image(z_hat[i]), step)


def _channel_variance(z: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
    """Mean over channels of each channel's variance over the real frames of the batch: (B, C, N) -> ()."""
    values = z.transpose(1, 2).reshape(-1, z.shape[1]) if keep is None else z.transpose(1, 2)[keep]  # (frames, C)
    return values.float().var(dim=0, unbiased=False).mean().clamp_min(1e-12)
