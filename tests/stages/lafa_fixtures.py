"""A tiny frozen VAE file and a synthetic stereo-audio DataModule for the LAFA stage tests (no shards needed)."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch

from lafa.checkpoints import save_vae_safetensors
from lafa.models.oobleck import OobleckVAE

TINY_VAE = dict(channels=4, c_mults=[1, 2], strides=[2, 4], latent_dim=16)  # 8 samples per latent frame


def write_tiny_vae(path: Path, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    return save_vae_safetensors(OobleckVAE(**TINY_VAE), path)


class ToneData(L.LightningDataModule):
    """Stereo sums of two sines with per-example frequencies; the second half of the batch is padded after 3/4."""

    def __init__(self, n: int = 16, batch_size: int = 4, samples: int = 128, sample_rate: int = 44100) -> None:
        super().__init__()
        self.n, self.batch_size, self.samples, self.sample_rate = n, batch_size, samples, sample_rate

    def _examples(self, seed: int) -> list[dict]:
        g = torch.Generator().manual_seed(seed)
        t = torch.arange(self.samples) / self.sample_rate
        out = []
        for i in range(self.n):
            f = 500.0 + 4000.0 * torch.rand(2, 2, generator=g)  # (channel, partial)
            audio = 0.3 * torch.sin(2 * torch.pi * f[..., None] * t).sum(dim=1)  # (2, S)
            keep = torch.ones(self.samples, dtype=torch.bool)
            if i % 2:
                keep[3 * self.samples // 4 :] = False
                audio = audio * keep
            out.append({"audio": audio, "keep": keep})
        return out

    def _loader(self, seed: int) -> torch.utils.data.DataLoader:
        return torch.utils.data.DataLoader(self._examples(seed), batch_size=self.batch_size)

    def train_dataloader(self):
        return self._loader(0)

    def val_dataloader(self):
        return self._loader(1)

    def test_dataloader(self):
        return self._loader(2)
