"""Synthetic latent batches from the ground-truth lab's Gaussian (`lafa.lab.GaussianLatentSpec`): no files.

Batches have the keys and types of `LatentDataModule`'s. Example i of a split is drawn from its own generator,
seeded by numpy's SeedSequence([seed, split, i]); validation and test are fixed sets, training draws fresh
examples every epoch and resumes mid-epoch; one process only (DDP training is refused). docs/lab.md.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from lafa.data.datamodule import SplitLoaders, collate
from lafa.data.geometry import seconds_total
from lafa.lab.spec import GaussianLatentSpec

SPLITS = {"train": 0, "val": 1, "test": 2, "predict": 3}


def example_seed(seed: int, split: str, index: int) -> int:
    """A 64-bit torch seed for example `index` of `split`, independent across (seed, split, index)."""
    return int(np.random.SeedSequence([seed, SPLITS[split], index]).generate_state(1, np.uint64)[0])


class GaussianLatents(Dataset):
    """Example `index` of one split: a latent (C, N) of `spec` and the latent-shard example keys."""

    def __init__(self, spec: GaussianLatentSpec, split: str, length: int, seed: int, caption: str,
                 sample_rate: int, downsampling_ratio: int) -> None:
        self.spec, self.split, self.length, self.seed, self.caption = spec, split, length, seed, caption
        self.real_samples = spec.frames * downsampling_ratio
        self.seconds_total = seconds_total(self.real_samples, sample_rate)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict:
        gen = torch.Generator().manual_seed(example_seed(self.seed, self.split, index))
        z = torch.randn(self.spec.channels, self.spec.frames, generator=gen, dtype=torch.float64)
        return {
            "latent": self.spec.colour(z).float(),  # (C, N)
            "keep": torch.ones(self.spec.frames, dtype=torch.bool),
            "real_samples": self.real_samples,
            "seconds_start": 0.0,
            "seconds_total": self.seconds_total,
            "caption": self.caption,
            "id": f"{self.split}-{index:09d}",
            "metadata": {"split": self.split, "index": index, "seed": self.seed},
        }


class EpochIndices(Sampler[int]):
    """Indices e * length + i, i < length, for the epoch e Lightning sets: fresh examples every epoch. After a
    resume (`resume_from`: the first global index not yet trained on) the epoch starts there."""

    def __init__(self, length: int) -> None:
        self.length, self.epoch, self.resume_from = length, 0, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.length  # fixed: Lightning sizes every epoch by the first; a resumed epoch just ends sooner

    def __iter__(self) -> Iterator[int]:
        end = (self.epoch + 1) * self.length
        return iter(range(min(max(self.epoch * self.length, self.resume_from), end), end))


class ResumableLoader(DataLoader):
    """The training DataLoader as Lightning's stateful loader: a checkpoint stores the next example index the
    trainer has not taken (`taken`, told by the DataModule when a batch moves to the device, so batches Lightning
    pre-fetched do not count), and a resumed run continues the stream there, mid-epoch included."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.next_index = 0

    def taken(self, batch: dict) -> None:
        self.next_index = max(self.next_index, max(m["index"] for m in batch["metadata"]) + 1)

    def state_dict(self) -> dict:
        return {"next_index": self.next_index}

    def load_state_dict(self, state: dict) -> None:
        self.next_index = self.sampler.resume_from = int(state["next_index"])


class GaussianLatentDataModule(SplitLoaders):
    """Seeded batches of the lab's Gaussian latent; the spec's knobs are constructor arguments (docs/lab.md)."""

    def __init__(
        self,
        # the distribution (lafa.lab.GaussianLatentSpec)
        channels: int = 64,
        frames: int = 64,
        spectrum: str = "power_law",
        exponent: float = 1.0,
        noise_channels: int = 8,
        noise_level: float = 0.05,
        basis: str = "dct",
        basis_seed: int = 0,
        temporal: str = "ar1",
        rho: float = 0.9,
        temporal_exponent: float = 1.0,
        # the stream
        train_examples: int = 1024,
        val_examples: int = 64,
        test_examples: int = 64,
        batch_size: int = 8,
        val_batch_size: int | None = None,
        seed: int = 0,
        num_workers: int = 0,
        caption: str = "a gaussian latent",
        sample_rate: int = 44100,
        downsampling_ratio: int = 2048,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.spec = GaussianLatentSpec(channels, frames, spectrum, exponent, noise_channels, noise_level, basis,
                                       basis_seed, temporal, rho, temporal_exponent)

    def dataset(self, split: str) -> GaussianLatents:
        h = self.hparams
        length = {"train": h.train_examples, "val": h.val_examples}.get(split, h.test_examples)
        return GaussianLatents(self.spec, split, length, h.seed, h.caption, h.sample_rate, h.downsampling_ratio)

    def _loader(self, split: str) -> DataLoader:
        h = self.hparams
        ds = self.dataset(split)
        batch = h.batch_size if split == "train" else (h.val_batch_size or h.batch_size)
        if split != "train":
            return DataLoader(ds, batch_size=batch, collate_fn=collate, num_workers=h.num_workers)
        self._train_loader = ResumableLoader(ds, batch_size=batch, sampler=EpochIndices(len(ds)), collate_fn=collate,
                                             num_workers=h.num_workers)
        return self._train_loader

    def train_dataloader(self) -> ResumableLoader:
        if self.trainer is not None and self.trainer.world_size > 1:  # a wrapped sampler never sees set_epoch
            raise NotImplementedError("GaussianLatentDataModule trains in one process (its fresh-per-epoch stream "
                                      "and resumable position are not sharded across ranks)")
        return self._loader("train")
