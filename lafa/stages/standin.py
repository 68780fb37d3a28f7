"""A fixed linear map of an autoencoder's latent, measured on data: the locality study's controls (docs/study.md).

`lafa fit` with this stage measures the base latent's mean and channel covariance over the training batches
(no gradients, no optimiser) and stores the map A = R W as buffers: W is ZCA whitening Sigma^-1/2 (`whiten`;
eigenvalues floored at `whiten_eps` x their mean), R a Haar-random orthogonal matrix from `rotation_seed` (None:
identity). Base "log_mel" (`mel_args`) is the stand-in for a VAE latent. Validation logs `val/offdiag_corr`
(mean |correlation| between distinct channels) and `val/channel_var` (mean channel variance).
"""

from __future__ import annotations

import torch
from lightning.pytorch import LightningModule

from lafa.data.geometry import frame_keep
from lafa.models.autoencoder import LinearLatentAutoencoder, random_rotation
from lafa.models.log_mel import LogMelAutoencoder, LogMelAutoencoderConfig
from lafa.models.presets import as_mapping, build_model
from lafa.stages.frozen import Frozen


class LatentTransformStage(LightningModule):
    def __init__(
        self,
        base: str = "log_mel",
        mel_args: LogMelAutoencoderConfig | dict | None = None,  # LogMelAutoencoder's arguments (base log_mel)
        latent_dim: int = 64,
        whiten: bool = True,
        whiten_eps: float = 1e-3,
        rotation_seed: int | None = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["mel_args"])
        self.hparams["mel_args"] = as_mapping(mel_args)  # plain values: checkpoints hold no config classes
        if base == "log_mel":
            ae = build_model(LogMelAutoencoder, {}, mel_args)
        else:
            from lafa.stages.loading import load_autoencoder

            ae = load_autoencoder(base, latent_dim=latent_dim)
        self.frozen = Frozen(module=ae.requires_grad_(False).eval())
        c = ae.latent_dim
        self.register_buffer("sums", torch.zeros(c + 1, c + 1, dtype=torch.float64))  # [1, z]^T [1, z] over frames
        self.register_buffer("matrix", torch.eye(c, dtype=torch.float64))
        self.register_buffer("mean", torch.zeros(c, 1, dtype=torch.float64))
        rotation = random_rotation(c, rotation_seed) if rotation_seed is not None else torch.eye(c, dtype=torch.float64)
        self.register_buffer("rotation", rotation)
        self.automatic_optimization = False

    @property
    def base(self) -> torch.nn.Module:
        return self.frozen.module.to(self.device)

    def configure_optimizers(self):
        return None  # nothing trains: fit only measures statistics

    def _base_frames(self, batch: dict) -> torch.Tensor:
        """The base latent's real frames of a batch: (frames, C) float64."""
        padding = batch.get("keep")
        with torch.no_grad():
            z = self.base.encode(batch["audio"], padding).double()  # (B, C, N)
        keep = frame_keep(padding, self.base.downsampling_ratio, z.shape[-1])
        z = z.transpose(1, 2)  # (B, N, C)
        return z.reshape(-1, z.shape[-1]) if keep is None else z[keep]

    def training_step(self, batch: dict, batch_idx: int) -> None:
        z = self._base_frames(batch)
        ones = torch.ones(z.shape[0], 1, dtype=z.dtype, device=z.device)
        x = torch.cat((ones, z), dim=1)
        sums = self.trainer.strategy.reduce(x.T @ x, reduce_op="sum")  # every process's frames
        self.sums += sums
        self._commit()
        self.log("train/frames", self.sums[0, 0].float(), batch_size=z.shape[0])

    def _commit(self) -> None:
        n = self.sums[0, 0]
        mean = self.sums[0, 1:] / n
        cov = self.sums[1:, 1:] / n - torch.outer(mean, mean)
        if self.hparams.whiten:
            evals, evecs = torch.linalg.eigh(cov)
            floor = self.hparams.whiten_eps * evals.clamp_min(0).mean()
            w = evecs @ torch.diag(evals.clamp_min(0).add(floor).rsqrt()) @ evecs.T  # ZCA: Sigma^-1/2
            self.mean.copy_(mean[:, None])
        else:
            w = torch.eye(len(mean), dtype=torch.float64, device=mean.device)
        self.matrix.copy_(self.rotation @ w)

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        z = self._base_frames(batch)
        y = (z - self.mean[:, 0]) @ self.matrix.T  # (frames, C)
        corr = torch.corrcoef(y.T)
        c = corr.shape[0]
        offdiag = (corr.abs().sum() - corr.diagonal().abs().sum()) / (c * (c - 1))
        self.log("val/offdiag_corr", offdiag.float(), batch_size=z.shape[0], sync_dist=True)
        self.log("val/channel_var", y.var(dim=0).mean().float(), batch_size=z.shape[0], sync_dist=True)

    def as_autoencoder(self) -> LinearLatentAutoencoder:
        if float(self.sums[0, 0]) == 0 and self.hparams.whiten:
            raise ValueError("the whitening statistics were never measured (no training batch ran)")
        return LinearLatentAutoencoder(self.frozen.module, self.matrix.float(), self.mean.float()).eval()
