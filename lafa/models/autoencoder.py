"""The autoencoder interface everything downstream of Stage I uses (DiT, analysis, latent shards, generate).

Both the plain waveform VAE and VAE + LAFA expose it, so a DiT or an analysis runs on either latent space.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

import torch
from torch import nn

if TYPE_CHECKING:
    from lafa.models.oobleck import OobleckVAE


@runtime_checkable
class Autoencoder(Protocol):
    sample_rate: int  # audio rate in Hz (44100 for SAO)
    io_channels: int  # audio channels (2)
    latent_dim: int  # latent channels C
    downsampling_ratio: int  # audio samples per latent frame (2048 for SAO)

    def encode(self, audio: torch.Tensor) -> torch.Tensor:
        """(B, io_channels, S) -> (B, latent_dim, S // downsampling_ratio); deterministic, normalised."""
        ...

    def decode(self, latent: torch.Tensor, steps: int | None = None) -> torch.Tensor:
        """(B, latent_dim, N) -> (B, io_channels, N * downsampling_ratio); steps: flow steps where relevant."""
        ...


class VaeAutoencoder(nn.Module):
    """The plain waveform VAE behind the Autoencoder interface: encode = posterior mean, decode = VAE decoder."""

    def __init__(self, vae: OobleckVAE) -> None:
        super().__init__()
        self.vae = vae
        self.sample_rate = vae.sample_rate
        self.io_channels = vae.io_channels
        self.latent_dim = vae.latent_dim
        self.downsampling_ratio = vae.downsampling_ratio

    def encode(self, audio: torch.Tensor) -> torch.Tensor:
        """(B, io_channels, S) -> (B, latent_dim, S // downsampling_ratio), the posterior mean."""
        return self.vae.encode_mean(audio)

    def decode(self, latent: torch.Tensor, steps: int | None = None) -> torch.Tensor:
        """(B, latent_dim, N) -> (B, io_channels, N * downsampling_ratio); `steps` is unused (no flow)."""
        return self.vae.decode(latent)
