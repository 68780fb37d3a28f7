"""The autoencoder interface everything downstream of Stage I uses (DiT, analysis, latent shards, generate).

The plain waveform VAE, VAE + LAFA and a fixed linear map of either (`LinearLatentAutoencoder`: whitening, a
random rotation) expose it, so a DiT or an analysis runs on any latent space.

Padding: `encode(audio, sample_keep)` takes the (B, S) bool mask of real samples; a latent frame is real when
its first sample is (`lafa.data.geometry.frame_keep`). Padded samples are zeroed before the VAE and LAFA's
time attention never attends to padding frames, so the real frames of a padded clip do not depend on its
padding. The VAE runs through `InferenceVAE` (`self.engine`; `inference_engine=False`: always the plain
model).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

import torch
from torch import nn

from lafa.data.geometry import frame_keep
from lafa.models.vae_engine import InferenceVAE

if TYPE_CHECKING:
    from lafa.models.lafa import Lafa
    from lafa.models.oobleck import OobleckVAE


@runtime_checkable
class Autoencoder(Protocol):
    sample_rate: int  # audio rate in Hz (44100 for SAO)
    io_channels: int  # audio channels (2)
    latent_dim: int  # latent channels C
    downsampling_ratio: int  # audio samples per latent frame (2048 for SAO)

    def encode(self, audio: torch.Tensor, sample_keep: torch.Tensor | None = None) -> torch.Tensor:
        """(B, io_channels, S), sample_keep (B, S) bool (True = real sample) -> (B, latent_dim, S // ratio);
        deterministic, normalised; real frames do not depend on the padding's content."""
        ...

    def decode(
        self, latent: torch.Tensor, steps: int | None = None, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """(B, latent_dim, N) -> (B, io_channels, N * downsampling_ratio); steps: flow steps where relevant;
        generator: the draws of a stochastic decoder."""
        ...


def zero_padding(audio: torch.Tensor, sample_keep: torch.Tensor | None) -> torch.Tensor:
    """Audio with its padded samples set to zero (unchanged without a mask)."""
    return audio if sample_keep is None else audio * sample_keep[:, None, : audio.shape[-1]].to(audio.dtype)


class VaeAutoencoder(nn.Module):
    """The plain waveform VAE behind the Autoencoder interface: encode = posterior mean, decode = VAE decoder."""

    def __init__(self, vae: OobleckVAE, inference_engine: bool = True) -> None:
        super().__init__()
        self.vae = vae
        self.engine = InferenceVAE(vae, enabled=inference_engine)
        self.sample_rate = vae.sample_rate
        self.io_channels = vae.io_channels
        self.latent_dim = vae.latent_dim
        self.downsampling_ratio = vae.downsampling_ratio

    def encode(self, audio: torch.Tensor, sample_keep: torch.Tensor | None = None) -> torch.Tensor:
        """(B, io_channels, S) -> (B, latent_dim, S // downsampling_ratio), the posterior mean of the audio with
        its padding zeroed."""
        return self.engine.encode_mean(zero_padding(audio, sample_keep))

    def decode(
        self, latent: torch.Tensor, steps: int | None = None, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """(B, latent_dim, N) -> (B, io_channels, N * downsampling_ratio); `steps`, `generator` unused (no flow)."""
        return self.engine.decode(latent)


class LafaAutoencoder(nn.Module):
    """VAE + LAFA behind the Autoencoder interface (paper Fig. 4):
    encode: audio -> VAE posterior mean -> LAFA encoder (nothing masked, padding frames unseen) -> normalised
    LAFA latent; decode: un-normalise -> `steps` Euler steps of the flow decoder (Table 7; 2 by default) -> VAE
    decoder. `vae` is any frozen base with `encode_mean`/`decode` (an OobleckVAE, or a stand-in latent)."""

    def __init__(self, vae: OobleckVAE, lafa: Lafa, default_steps: int = 2, inference_engine: bool = True) -> None:
        super().__init__()
        self.vae = vae
        self.engine = InferenceVAE(vae, enabled=inference_engine)
        self.lafa = lafa
        self.default_steps = default_steps
        self.sample_rate = vae.sample_rate
        self.io_channels = vae.io_channels
        self.latent_dim = lafa.lafa_channels
        self.downsampling_ratio = vae.downsampling_ratio

    def encode(self, audio: torch.Tensor, sample_keep: torch.Tensor | None = None) -> torch.Tensor:
        """(B, io_channels, S), sample_keep (B, S) -> (B, C_lafa, S // downsampling_ratio), normalised."""
        z = self.engine.encode_mean(zero_padding(audio, sample_keep))
        keep = frame_keep(sample_keep, self.downsampling_ratio, z.shape[-1])
        return self.lafa.normalizer.normalize(self.lafa.encode(z, keep))

    def decode(
        self, latent: torch.Tensor, steps: int | None = None, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """(B, C_lafa, N) normalised -> (B, io_channels, N * downsampling_ratio)."""
        if latent.ndim != 3 or latent.shape[1] != self.latent_dim:
            raise ValueError(f"LAFA latent must be (B, {self.latent_dim}, N), got {tuple(latent.shape)}")
        steps = self.default_steps if steps is None else steps
        z0 = self.lafa.decode(self.lafa.normalizer.denormalize(latent), steps, generator=generator)
        return self.engine.decode(z0)


def random_rotation(channels: int, seed: int) -> torch.Tensor:
    """A Haar-random orthogonal (C, C) matrix from a seed (QR of a Gaussian matrix, signs fixed), float64."""
    g = torch.Generator().manual_seed(seed)
    q, r = torch.linalg.qr(torch.randn(channels, channels, generator=g, dtype=torch.float64))
    return q * torch.sign(torch.diagonal(r))[None, :]


class LinearLatentAutoencoder(nn.Module):
    """Another autoencoder seen through a fixed invertible map of its latent channels: latent = A (z - mu).

    The locality study's controls: A = R W (ZCA whitening W, then a random rotation R) turns log-mel into a
    decorrelated stand-in for a VAE latent with no channel locality; A = R alone rotates a LAFA latent (the
    rotation control: the same information, the channel order scrambled). `encode_mean` (= encode without a
    padding mask) lets LAFA train on it as on a frozen VAE."""

    def __init__(self, base: nn.Module, matrix: torch.Tensor, mean: torch.Tensor | None = None) -> None:
        super().__init__()
        c = base.latent_dim
        if matrix.shape != (c, c):
            raise ValueError(f"matrix must be ({c}, {c}) for a {c}-channel latent, got {tuple(matrix.shape)}")
        self.base = base
        self.register_buffer("matrix", matrix.double().clone())  # A (C, C)
        self.register_buffer("inverse", torch.linalg.inv(matrix.double()))  # A^-1
        self.register_buffer("mean", (torch.zeros(c, 1) if mean is None else mean.reshape(c, 1)).double().clone())
        self.sample_rate = base.sample_rate
        self.io_channels = base.io_channels
        self.latent_dim = c
        self.downsampling_ratio = base.downsampling_ratio

    def encode(self, audio: torch.Tensor, sample_keep: torch.Tensor | None = None) -> torch.Tensor:
        z = self.base.encode(audio, sample_keep)  # base latent (B, C, N) -> A (z - mu)
        return torch.einsum("ij,bjn->bin", self.matrix.to(z.dtype), z - self.mean.to(z.dtype))

    def encode_mean(self, audio: torch.Tensor) -> torch.Tensor:
        return self.encode(audio)

    def decode(self, latent: torch.Tensor, steps: int | None = None, **kwargs) -> torch.Tensor:
        z = torch.einsum("ij,bjn->bin", self.inverse.to(latent.dtype), latent) + self.mean.to(latent.dtype)
        return self.base.decode(z, steps, **kwargs)
