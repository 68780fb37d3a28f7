"""The autoencoder interface everything downstream of Stage I uses (DiT, analysis, latent shards, generate).

Both the plain waveform VAE and VAE + LAFA expose it, so a DiT or an analysis runs on either latent space.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch


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
