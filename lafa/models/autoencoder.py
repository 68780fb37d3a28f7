"""The autoencoder interface everything downstream of Stage I uses (DiT, analysis, latent shards, generate).

Both the plain waveform VAE and VAE + LAFA expose it, so a DiT or an analysis runs on either latent space.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

import torch
from torch import nn

if TYPE_CHECKING:
    from lafa.models.lafa import Lafa
    from lafa.models.oobleck import OobleckVAE


@runtime_checkable
class Autoencoder(Protocol):
    sample_rate: int  # audio rate in Hz (44100 for SAO)
    io_channels: int  # audio channels (2)
    latent_dim: int  # latent channels C
    downsampling_ratio: int  # audio samples per latent frame (2048 for SAO)

    def encode(self, audio: torch.Tensor, padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, io_channels, S) -> (B, latent_dim, S // downsampling_ratio); deterministic, normalised.
        padding_mask (B, S) bool, True on real samples (`lafa.data.transforms.crop_pad`): padding is ignored."""
        ...

    def decode(
        self, latent: torch.Tensor, steps: int | None = None, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """(B, latent_dim, N) -> (B, io_channels, N * downsampling_ratio); steps: flow steps where relevant;
        generator: the draws of a stochastic decoder."""
        ...


def _zero_padding(audio: torch.Tensor, padding_mask: torch.Tensor | None) -> torch.Tensor:
    """(B, C, S) with the samples where padding_mask (B, S) is False set to zero."""
    return audio if padding_mask is None else audio * padding_mask[:, None, : audio.shape[-1]].to(audio.dtype)


class VaeAutoencoder(nn.Module):
    """The plain waveform VAE behind the Autoencoder interface: encode = posterior mean, decode = VAE decoder."""

    def __init__(self, vae: OobleckVAE) -> None:
        super().__init__()
        self.vae = vae
        self.sample_rate = vae.sample_rate
        self.io_channels = vae.io_channels
        self.latent_dim = vae.latent_dim
        self.downsampling_ratio = vae.downsampling_ratio

    def encode(self, audio: torch.Tensor, padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, io_channels, S) -> (B, latent_dim, S // downsampling_ratio), the posterior mean of the audio with
        its padding (padding_mask (B, S) False) zeroed."""
        return self.vae.encode_mean(_zero_padding(audio, padding_mask))

    def decode(
        self, latent: torch.Tensor, steps: int | None = None, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """(B, latent_dim, N) -> (B, io_channels, N * downsampling_ratio); `steps`, `generator` unused (no flow)."""
        return self.vae.decode(latent)


class LafaAutoencoder(nn.Module):
    """VAE + LAFA behind the Autoencoder interface (paper Fig. 4):
    encode: audio -> VAE posterior mean -> LAFA encoder (nothing masked) -> normalised LAFA latent;
    decode: un-normalise -> `steps` Euler steps of the flow decoder (Table 7; 2 by default) -> VAE decoder."""

    def __init__(self, vae: OobleckVAE, lafa: Lafa, default_steps: int = 2) -> None:
        super().__init__()
        self.vae = vae
        self.lafa = lafa
        self.default_steps = default_steps
        self.sample_rate = vae.sample_rate
        self.io_channels = vae.io_channels
        self.latent_dim = lafa.lafa_channels
        self.downsampling_ratio = vae.downsampling_ratio

    def encode(self, audio: torch.Tensor, padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, io_channels, S) -> (B, C_lafa, S // downsampling_ratio), normalised. padding_mask (B, S): the
        padding is zeroed for the VAE and its frames (frame n is real when sample n r is) are LAFA's frame_keep."""
        z = self.vae.encode_mean(_zero_padding(audio, padding_mask))
        keep = None if padding_mask is None else padding_mask.bool()[:, :: self.downsampling_ratio][:, : z.shape[-1]]
        return self.lafa.normalizer.normalize(self.lafa.encode(z, keep))

    def decode(
        self, latent: torch.Tensor, steps: int | None = None, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """(B, C_lafa, N) normalised -> (B, io_channels, N * downsampling_ratio)."""
        if latent.ndim != 3 or latent.shape[1] != self.latent_dim:
            raise ValueError(f"LAFA latent must be (B, {self.latent_dim}, N), got {tuple(latent.shape)}")
        steps = self.default_steps if steps is None else steps
        z0 = self.lafa.decode(self.lafa.normalizer.denormalize(latent), steps, generator=generator)
        return self.vae.decode(z0)
