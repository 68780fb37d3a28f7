"""A deterministic autoencoder with the `lafa.models.autoencoder.Autoencoder` interface, for analysis tests.

encode: frames of `ratio` samples (both audio channels) -> a fixed random projection to `latent_dim`;
decode: the pseudo-inverse projection back, using only the first `used_channels` latent channels.
"""

import torch
from torch import nn


class FrameProjectionAutoencoder(nn.Module):
    def __init__(self, latent_dim: int = 8, ratio: int = 16, io_channels: int = 2, sample_rate: int = 8000,
                 used_channels: int | None = None, seed: int = 0) -> None:
        super().__init__()
        self.sample_rate, self.io_channels = sample_rate, io_channels
        self.latent_dim, self.downsampling_ratio = latent_dim, ratio
        g = torch.Generator().manual_seed(seed)
        proj = torch.randn(latent_dim, io_channels * ratio, generator=g) / (io_channels * ratio) ** 0.5
        keep = torch.zeros(latent_dim)
        keep[: used_channels or latent_dim] = 1.0
        self.register_buffer("proj", proj)
        self.register_buffer("keep", keep)

    def encode(self, audio: torch.Tensor) -> torch.Tensor:
        b, io, s = audio.shape
        n = s // self.downsampling_ratio
        frames = audio[..., : n * self.downsampling_ratio].reshape(b, io, n, self.downsampling_ratio)
        frames = frames.permute(0, 2, 1, 3).reshape(b, n, io * self.downsampling_ratio)  # (B, N, io * ratio)
        return torch.einsum("cd,bnd->bcn", self.proj, frames)  # (B, C, N)

    def decode(self, latent: torch.Tensor, steps: int | None = None, generator: torch.Generator | None = None
               ) -> torch.Tensor:
        b, c, n = latent.shape
        frames = torch.einsum("dc,bcn->bnd", torch.linalg.pinv(self.proj), latent * self.keep[:, None])
        frames = frames.reshape(b, n, self.io_channels, self.downsampling_ratio).permute(0, 2, 1, 3)
        return frames.reshape(b, self.io_channels, n * self.downsampling_ratio)


class FrameProjectionStage(nn.Module):
    """Stands in for a `lafa fit` stage: plain init values, weights in a state dict, `as_autoencoder()`."""

    def __init__(self, latent_dim: int = 8, ratio: int = 16, sample_rate: int = 8000,
                 duplicate_pairs: bool = False, seed: int = 0) -> None:
        super().__init__()
        self.autoencoder = FrameProjectionAutoencoder(latent_dim, ratio, sample_rate=sample_rate, seed=seed)
        if duplicate_pairs:  # channels 2k and 2k+1 identical: maximal channel locality
            self.autoencoder.proj[1::2] = self.autoencoder.proj[0::2]

    def as_autoencoder(self) -> FrameProjectionAutoencoder:
        return self.autoencoder

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Every LightningModule has this hook; lafa's loader calls it."""


def write_checkpoint(path, sample_rate: int = 8000, **init_args) -> None:
    """A `lafa fit`-style checkpoint of FrameProjectionStage (state dict + stored config)."""
    import yaml

    stage = FrameProjectionStage(sample_rate=sample_rate, **init_args)
    config = {"model": {"class_path": "analysis_doubles.FrameProjectionStage",
                        "init_args": {"sample_rate": sample_rate, **init_args}}}
    torch.save({"state_dict": stage.state_dict(), "lafa_config": yaml.safe_dump(config)}, path)
