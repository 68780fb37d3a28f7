"""Stage I: train (or fine-tune) the Oobleck waveform VAE the way Stable Audio trains it (Appendix D,
docs/vae.md).

Manual optimisation: odd global steps train the discriminator, even steps the VAE (stable-audio-tools'
alternation). The EMA is a callback in the YAML (`lafa.stages.ema.WarmupEMA`): validation, test and the
checkpoint's `state_dict` hold the averaged weights. Validation/test report STFT distance, mel distance and
SI-SDR on the real (unpadded) audio (Tables 4, 9).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from lightning.pytorch import LightningModule

from lafa.checkpoints import load_sao_vae
from lafa.data.geometry import real_samples
from lafa.metrics.reconstruction import ReconstructionMetrics
from lafa.models.autoencoder import VaeAutoencoder
from lafa.models.discriminators import MultiScaleSTFTDiscriminator
from lafa.models.oobleck import VAE_PRESETS, OobleckVAE, OobleckVAEConfig
from lafa.models.presets import as_mapping, model_arguments
from lafa.models.vae_engine import InferenceVAE
from lafa.models.vae_losses import (
    SpectralReconstructionLoss,
    feature_matching_loss,
    hinge_discriminator_loss,
    hinge_generator_loss,
)
from lafa.stages.checks import check_crop, check_range
from lafa.stages.media import log_audio, log_figure, media_loggers
from lafa.stages.schedules import inverse_lr_factor


class VaeStage(LightningModule):
    def __init__(
        self,
        # the VAE: lafa.models.oobleck.OobleckVAE's arguments and a size `preset` (VAE_PRESETS, default sao-1.0)
        model: OobleckVAEConfig | dict | None = None,
        pretrained: str | None = None,
        activation_checkpointing: bool = False,
        # discriminator (EnCodec multi-scale STFT)
        disc_filters: int = 64,
        disc_n_ffts: Sequence[int] = (2048, 1024, 512, 256, 128),
        disc_hop_lengths: Sequence[int] = (512, 256, 128, 64, 32),
        disc_win_lengths: Sequence[int] = (2048, 1024, 512, 256, 128),
        # spectral loss (auraloss MR-STFT)
        stft_fft_sizes: Sequence[int] = (2048, 1024, 512, 256, 128, 64, 32),
        stft_hop_sizes: Sequence[int] = (512, 256, 128, 64, 32, 16, 8),
        stft_win_lengths: Sequence[int] = (2048, 1024, 512, 256, 128, 64, 32),
        perceptual_weighting: bool = True,
        # loss weights (Stable Audio's values)
        stft_sum_diff_weight: float = 1.0,
        stft_channel_weight: float = 0.5,
        adversarial_weight: float = 0.1,
        feature_matching_weight: float = 5.0,
        kl_weight: float = 1e-4,
        adversarial_start_step: int = 0,
        # optimisation
        lr: float = 1.5e-4,
        disc_lr: float = 3e-4,
        betas: Sequence[float] = (0.8, 0.99),
        weight_decay: float = 1e-3,
        lr_inv_gamma: float = 200000.0,
        lr_power: float = 0.5,
        lr_warmup: float = 0.999,
        gradient_clip_norm: float = 0.0,
        # logging
        num_audio_examples: int = 2,
    ) -> None:
        super().__init__()
        config = {"preset": "sao-1.0", **as_mapping(model)}
        self.save_hyperparameters(ignore=["model"])
        self.hparams["model"] = config  # plain values: checkpoints hold no config classes
        check_range({"lr": (lr, ">0"), "disc_lr": (disc_lr, ">0"), "weight_decay": (weight_decay, ">=0"),
                     "lr_inv_gamma": (lr_inv_gamma, ">0"), "lr_warmup": (lr_warmup, "[0,1)"),
                     "gradient_clip_norm": (gradient_clip_norm, ">=0"), "adversarial_start_step": (adversarial_start_step, ">=0")})
        self.automatic_optimization = False
        self.vae_kwargs = vae_kwargs = model_arguments(OobleckVAE, VAE_PRESETS, config)
        self.vae = OobleckVAE(**vae_kwargs)
        self.vae.set_checkpointing(activation_checkpointing)
        io_channels, sample_rate = self.vae.io_channels, self.vae.sample_rate
        self.discriminator = MultiScaleSTFTDiscriminator(io_channels, disc_filters, tuple(disc_n_ffts),
                                                         tuple(disc_hop_lengths), tuple(disc_win_lengths))
        self.spectral_loss = SpectralReconstructionLoss(sample_rate, tuple(stft_fft_sizes), tuple(stft_hop_sizes),
                                                        tuple(stft_win_lengths), perceptual_weighting)
        self.metrics = ReconstructionMetrics(sample_rate)

    # ---- weights -------------------------------------------------------------------------------------------
    def prepare_data(self) -> None:
        """Lightning's first hook, before any logger or callback writes (a version folder, config.yaml): the crop
        check runs here too, so a refused config leaves nothing behind (`setup` runs it on every process)."""
        self._check_crop()

    def _check_crop(self) -> None:
        if self._trainer is not None:
            check_crop(self.trainer.datamodule, self.vae.downsampling_ratio, "the VAE")

    def setup(self, stage: str) -> None:
        """Fine-tuning: start from a VAE file (official SAO or `lafa export`); a resumed checkpoint overrides it."""
        self._check_crop()
        if stage == "fit" and self.hparams.pretrained:
            source = load_sao_vae(self.hparams.pretrained, **self.vae_kwargs)
            self.vae.load_state_dict(source.state_dict())

    def as_autoencoder(self) -> VaeAutoencoder:
        return VaeAutoencoder(self.vae)

    # ---- training ------------------------------------------------------------------------------------------
    def configure_optimizers(self):
        h = self.hparams
        opt_g = torch.optim.AdamW(self.vae.parameters(), lr=h.lr, betas=tuple(h.betas), weight_decay=h.weight_decay)
        opt_d = torch.optim.AdamW(self.discriminator.parameters(), lr=h.disc_lr, betas=tuple(h.betas),
                                  weight_decay=h.weight_decay)

        def factor(step: int) -> float:
            return inverse_lr_factor(step, h.lr_inv_gamma, h.lr_power, h.lr_warmup)

        return [opt_g, opt_d], [torch.optim.lr_scheduler.LambdaLR(o, factor) for o in (opt_g, opt_d)]

    def _step_optimizer(self, loss: torch.Tensor, index: int) -> None:
        opt = self.optimizers()[index]
        opt.zero_grad()
        self.manual_backward(loss)
        if self.hparams.gradient_clip_norm > 0:
            self.clip_gradients(opt, gradient_clip_val=self.hparams.gradient_clip_norm, gradient_clip_algorithm="norm")
        opt.step()
        self.lr_schedulers()[index].step()

    def training_step(self, batch: dict, batch_idx: int) -> None:
        h = self.hparams
        reals = batch["audio"]  # (B, 2, S)
        train_disc = self.global_step % 2 == 1
        batch_size = reals.shape[0]
        if train_disc:
            with torch.no_grad():
                decoded = self.vae(reals)[0]
            real_logits, _ = self.discriminator(reals)
            fake_logits, _ = self.discriminator(decoded.detach())
            loss = hinge_discriminator_loss(real_logits, fake_logits)
            self.loss_terms = {"disc_loss": loss.detach()}  # named by lafa.stages.finite.FiniteGuard if non-finite
            self._step_optimizer(loss, 1)
            self.log("train/disc_loss", loss.detach(), prog_bar=True, batch_size=batch_size)
            return
        decoded, kl = self.vae(reals)
        terms = self.spectral_loss(decoded, reals)
        terms["kl"] = kl
        loss = (h.stft_sum_diff_weight * terms["stft_sum_diff"]
                + h.stft_channel_weight * (terms["stft_left"] + terms["stft_right"]) + h.kl_weight * kl)
        if self.global_step >= h.adversarial_start_step and (h.adversarial_weight > 0 or h.feature_matching_weight > 0):
            with torch.no_grad():
                _, real_features = self.discriminator(reals)
            fake_logits, fake_features = self.discriminator(decoded)
            terms["adversarial"] = hinge_generator_loss(fake_logits)
            terms["feature_matching"] = feature_matching_loss(real_features, fake_features)
            loss = loss + h.adversarial_weight * terms["adversarial"] + h.feature_matching_weight * terms["feature_matching"]
        self.loss_terms = {k: v.detach() for k, v in terms.items()}
        self._step_optimizer(loss, 0)
        self.log("train/loss", loss.detach(), prog_bar=True, batch_size=batch_size)
        self.log_dict({f"train/{k}": v.detach() for k, v in terms.items()}, batch_size=batch_size)
        self.log("train/lr", self.optimizers()[0].param_groups[0]["lr"], batch_size=batch_size)

    # ---- evaluation ----------------------------------------------------------------------------------------
    @torch.no_grad()
    def reconstruct(self, audio: torch.Tensor) -> torch.Tensor:
        """Deterministic reconstruction (mean latent); any length (zero padded)."""
        ratio = self.vae.downsampling_ratio
        length = audio.shape[-1]
        padded = torch.nn.functional.pad(audio, (0, -length % ratio))
        # the CPU inference engine on CPU float32, the plain model elsewhere; a fresh one per call: the weights change
        # between calls (training, and the EMA callback swapping the averaged weights in for validation)
        vae = InferenceVAE(self.vae)
        return vae.decode(vae.encode_mean(padded))[..., :length].float()

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        """Validation and test: the metrics of the deterministic reconstruction, under val/ or test/."""
        split = "test" if self.trainer.testing else "val"
        audio = batch["audio"]
        decoded = self.reconstruct(audio)
        scores = self.metrics(decoded, audio, batch.get("keep"))
        self.log_dict({f"{split}/{k}": v for k, v in scores.items()}, batch_size=audio.shape[0], sync_dist=True,
                      prog_bar=split == "val")
        if batch_idx == 0 and self.global_rank == 0:
            self._log_examples(audio, decoded, batch.get("keep"), split)

    test_step = validation_step

    def _log_examples(self, reals: torch.Tensor, decoded: torch.Tensor, mask: torch.Tensor | None, split: str) -> None:
        """TensorBoard / W&B: real and reconstructed audio (mono mix: TensorBoard audio is one channel) and log-STFT
        images (lafa.stages.media)."""
        loggers = media_loggers(self.loggers)
        if not loggers or self.hparams.num_audio_examples <= 0:
            return
        from matplotlib.figure import Figure

        sr = self.vae.sample_rate
        lengths = real_samples({"audio": reals, "keep": mask}).tolist()
        for i in range(min(self.hparams.num_audio_examples, reals.shape[0])):
            n = lengths[i]
            fig = Figure(figsize=(10, 5))
            for row, (name, x) in enumerate((("real", reals[i, :, :n]), ("reconstruction", decoded[i, :, :n]))):
                mono = x.float().mean(0).cpu()
                mono = torch.nn.functional.pad(mono, (0, max(0, 2048 - mono.shape[-1])))  # torch.stft needs >= n_fft
                log_audio(loggers, f"{split}/example_{i}/{name}", mono, self.global_step, sr)
                spec = torch.stft(mono, 2048, 512, window=torch.hann_window(2048), return_complex=True).abs()
                ax = fig.add_subplot(2, 1, row + 1)
                ax.imshow((spec + 1e-5).log10().numpy(), origin="lower", aspect="auto", cmap="magma")
                ax.set_title(f"{name}: log10 |STFT| (n_fft 2048, hop 512)")
            fig.tight_layout()
            log_figure(loggers, f"{split}/example_{i}/spectrogram", fig, self.global_step)
