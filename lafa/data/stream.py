"""Shard specs -> a stream of batches: node/worker splitting, shuffle buffer, resampling, epoch length.

A `ShardStream` is an IterableDataset that yields whole batches (the DataLoader runs with
batch_size=None), so each worker decodes, crops and collates its own batches.
"""

from __future__ import annotations

import glob
import os
import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from braceexpand import braceexpand
from torch.utils.data import IterableDataset, get_worker_info
from webdataset.tariterators import tarfile_samples

REMOTE = {"s3://": "pipe:aws s3 cp {} -", "gs://": "pipe:gsutil cat {}",
          "http://": "pipe:curl -s -L --fail {}", "https://": "pipe:curl -s -L --fail {}"}


def expand_shards(spec: str | os.PathLike | list | tuple | None) -> list[str]:
    """Brace patterns, globs, folders (their *.tar), local paths, `pipe:` commands and s3/gs/http URLs
    (turned into `pipe:` commands), or a list of these -> the ordered list of shard URLs."""
    if spec is None:
        return []
    if isinstance(spec, (list, tuple)):
        return [url for s in spec for url in expand_shards(s)]
    spec = str(spec)
    if spec.startswith("pipe:"):
        return [spec]
    urls = []
    for url in braceexpand(spec):
        remote = next((v for k, v in REMOTE.items() if url.startswith(k)), None)
        if remote:
            urls.append(remote.format(url))
        elif Path(url).is_dir():
            urls += sorted(str(p) for p in Path(url).glob("*.tar"))
        elif any(c in url for c in "*?["):
            urls += sorted(glob.glob(url))
        elif Path(url).is_file():
            urls.append(url)
        else:
            raise FileNotFoundError(f"shard spec {spec!r}: {url} does not exist")
    if not urls:
        raise FileNotFoundError(f"shard spec {spec!r} matches no shards")
    return urls


class ShardStream(IterableDataset):
    """Batches from WebDataset shards for one DDP rank.

    - split_mode "shard": rank r of W and worker w of K read shards[r::W][w::K];
      "sample": every slot reads all shards and keeps sample i where i % (W*K) == r*K + w;
      "auto": "shard" when there are at least W*K shards, else "sample" (tiny corpora).
    - resampled: each slot draws shards with replacement, forever; epoch_length bounds the epoch.
    - epoch_length (batches per rank): without resampling the slot's shards cycle until it is reached.
    - decode(sample, rng, epoch) -> example dict; rng is None for val/test (deterministic crops).
    """

    def __init__(self, urls: list[str], decode: Callable[[dict, random.Random | None, int], dict],
                 collate: Callable[[list[dict]], dict], batch_size: int, *, train: bool,
                 shuffle_buffer: int = 0, resampled: bool = False, epoch_length: int | None = None,
                 split_mode: str = "auto", rank: int = 0, world_size: int = 1, seed: int = 0) -> None:
        if not urls:
            raise ValueError("ShardStream needs at least one shard")
        if resampled and not epoch_length:
            raise ValueError("resampled mode needs epoch_length (batches per rank and epoch)")
        if split_mode not in ("auto", "shard", "sample"):
            raise ValueError(f"split_mode must be auto, shard or sample, not {split_mode!r}")
        self.urls, self.decode, self.collate, self.batch_size = list(urls), decode, collate, batch_size
        self.train, self.shuffle_buffer, self.resampled = train, shuffle_buffer, resampled
        self.epoch_length, self.split_mode = epoch_length, split_mode
        self.rank, self.world_size, self.seed = rank, world_size, seed
        self.epoch = 0  # advanced by EpochLoader in the main process
        self._local_iters = 0  # advanced in a persistent worker (its copy of epoch is stale)

    def __len__(self) -> int:
        if self.epoch_length is None:
            raise TypeError("a ShardStream without epoch_length has no length")
        return self.epoch_length

    def _slot(self) -> tuple[int, int, int]:
        info = get_worker_info()
        wid, nw = (info.id, info.num_workers) if info is not None else (0, 1)
        return self.rank * nw + wid, self.world_size * nw, wid

    def _batches_for_worker(self, wid: int, nw: int) -> int | None:
        if self.epoch_length is None:
            return None
        return self.epoch_length // nw + (1 if wid < self.epoch_length % nw else 0)

    def _shard_urls(self, slot: int, n_slots: int, rng: random.Random, epoch: int) -> tuple[Iterator[str], bool]:
        """The slot's shard sequence and whether it must filter samples by index."""
        if self.resampled:
            return iter(lambda: rng.choice(self.urls), None), False
        order_rng = random.Random(f"{self.seed}/{epoch}/order")  # shared by all slots: sample split stays disjoint
        by_sample = self.split_mode == "sample" or (self.split_mode == "auto" and len(self.urls) < n_slots)
        mine = list(self.urls) if by_sample else self.urls[slot::n_slots]
        if not mine:
            return iter(()), False

        def cycle() -> Iterator[str]:
            while True:
                order = list(mine)
                if self.train:
                    order_rng.shuffle(order)
                yield from order
                if self.epoch_length is None:
                    return

        return cycle(), by_sample

    def _samples(self, urls: Iterator[str], by_sample: bool, slot: int, n_slots: int) -> Iterator[dict]:
        index = 0
        for sample in tarfile_samples({"url": u} for u in urls):
            if by_sample:
                index += 1
                if (index - 1) % n_slots != slot:
                    continue
            yield sample

    def _shuffled(self, samples: Iterator[dict], rng: random.Random) -> Iterator[dict]:
        if not self.train or self.shuffle_buffer <= 1:
            yield from samples
            return
        buffer: list[dict] = []
        for sample in samples:
            if len(buffer) < self.shuffle_buffer:
                buffer.append(sample)
                continue
            i = rng.randrange(len(buffer))
            buffer[i], sample = sample, buffer[i]
            yield sample
        rng.shuffle(buffer)
        yield from buffer

    def __iter__(self) -> Iterator[dict[str, Any]]:
        self._local_iters += 1
        slot, n_slots, wid = self._slot()
        epoch = self.epoch * 1000 + self._local_iters  # distinct for every epoch in every worker mode
        rng = random.Random(f"{self.seed}/{epoch}/{slot}")
        nw = n_slots // self.world_size
        limit = self._batches_for_worker(wid, nw)
        if limit == 0:
            return
        urls, by_sample = self._shard_urls(slot, n_slots, rng, epoch)
        samples = self._shuffled(self._samples(urls, by_sample, slot, n_slots), rng)
        batch, produced = [], 0
        for sample in samples:
            batch.append(self.decode(sample, rng if self.train else None, epoch))
            if len(batch) == self.batch_size:
                yield self.collate(batch)
                batch, produced = [], produced + 1
                if limit is not None and produced >= limit:
                    return
        if batch and not self.train:
            yield self.collate(batch)


class EpochLoader(torch.utils.data.DataLoader):
    """A DataLoader over a ShardStream that advances the stream's epoch at every new pass."""

    def __iter__(self):
        self.dataset.epoch += 1
        return super().__iter__()
