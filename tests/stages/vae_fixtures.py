"""Synthetic stereo audio batches for the VAE stage tests (no shards needed): decaying sine chords, zero padded."""

import math

import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, Dataset


class SineChords(Dataset):
    def __init__(self, n: int, sample_size: int, sample_rate: int = 44100, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        t = torch.arange(sample_size) / sample_rate
        self.items = []
        for _ in range(n):
            freqs = 110 * 2 ** (torch.randint(0, 36, (3,), generator=g) / 12)  # three notes
            wave = sum(torch.sin(2 * math.pi * f * t) for f in freqs) * torch.exp(-3 * t) / 3
            pan = torch.rand(2, 1, generator=g) * 0.5 + 0.5
            length = int(sample_size * (0.6 + 0.4 * torch.rand((), generator=g)))  # real part, then padding
            mask = torch.arange(sample_size) < length
            self.items.append({"audio": 0.5 * pan * wave * mask, "keep": mask})

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        return self.items[i]


class SineData(LightningDataModule):
    def __init__(self, sample_size: int = 16384, batch_size: int = 2, n_train: int = 2, n_eval: int = 2) -> None:
        super().__init__()
        self.sample_size, self.batch_size, self.n_train, self.n_eval = sample_size, batch_size, n_train, n_eval

    def _loader(self, n: int, seed: int) -> DataLoader:
        return DataLoader(SineChords(n, self.sample_size, seed=seed), batch_size=self.batch_size)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.n_train, 0)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.n_eval, 1)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.n_eval, 2)
