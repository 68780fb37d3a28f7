"""Shard specs -> a stream of batches: rank/worker splitting, equal batch counts per rank, shuffle buffer,
resampling, damaged shards skipped and counted, and an exact position for resuming mid-epoch.

A `ShardStream` is an IterableDataset that yields whole batches (the DataLoader runs with batch_size=None), so
each worker decodes, crops and collates its own batches. Every batch carries its worker's position under
STREAM_KEY; `EpochLoader` (the DataLoader, lafa/data/epoch_loader.py) strips it and keeps the position of the
batches the trainer consumed, which is what a checkpoint stores (Lightning's stateful-dataloader interface).
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from braceexpand import braceexpand
from torch.utils.data import IterableDataset, get_worker_info

from lafa.data.tario import ShardError, read_shard
from lafa.errors import BadInput, LafaUserError

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


def split_shards(spec: str | os.PathLike | list | tuple | None, split: str) -> list[str]:
    """`expand_shards` of a DataModule's `{split}_shards`, where a spec that matches nothing is one line naming the
    option and the fix (a `LafaUserError`): the line of the checkpoint's own record of the spec where it was read
    from a checkpoint whose data moved (`lafa.checkpoint_files.missing_files`), else what matched nothing."""
    from lafa.checkpoint_files import missing_files

    where, urls = f"data.init_args.{split}_shards", []
    for one in spec if isinstance(spec, (list, tuple)) else [spec]:
        try:
            urls += expand_shards(one)
        except FileNotFoundError as e:
            if str(one) in missing_files:
                raise LafaUserError(missing_files[str(one)]) from e
            # "<url> does not exist" (one name of a brace pattern) or "matches no shards" (a glob, an empty folder)
            what = str(e).rpartition(": ")[2] if "does not exist" in str(e) else "matches no shards"
            relative = "" if os.path.isabs(str(one)) else f" (relative to {os.getcwd()})"
            raise BadInput(f"{where}: {str(one)!r}", what + relative, f"pass --data.init_args.{split}_shards with "
                           f"shards that exist (a folder, a glob or a brace pattern of .tar files)") from e
    return urls


STREAM_KEY = "__stream__"  # a batch's worker position and damage reports, stripped by EpochLoader
# what a member that does not decode raises: libsndfile (RuntimeError), bad JSON or .npy (ValueError, EOFError),
# a missing member (KeyError), an unreadable file object (OSError); other exceptions are bugs and propagate
DECODE_ERRORS = (KeyError, ValueError, RuntimeError, EOFError, OSError)


class DamagedDataError(RuntimeError):
    """Strict mode: a damaged shard or sample stops the run."""


class ShardStream(IterableDataset):
    """Batches from WebDataset shards for one DDP rank.

    - split_mode "range" (needs the shards' sample counts), "shard", "sample" or "auto": how the S = W*K
      (rank, worker) slots share a pass (docs/data.md, `split_mode`).
    - Train batches per rank and epoch are the same on every rank: epoch_length, or, with known counts, the
      smallest rank's number of full batches (every rank stops there, as DistributedSampler(drop_last=True)).
      A worker whose samples run short (damaged members) reads its share again rather than fall behind.
    - resampled: each slot draws shards with replacement, forever; epoch_length bounds the epoch.
    - decode(sample, rng, epoch) -> example dict; rng is None for val/test (deterministic crops), else a
      generator of its own per sample, so a resumed epoch can skip samples without decoding them.
    - Damaged shards (ShardError) and samples (DECODE_ERRORS) are skipped and reported with the batches
      (strict: DamagedDataError instead).
    """

    def __init__(self, urls: list[str], decode: Callable[[dict, random.Random | None, int], dict],
                 collate: Callable[[list[dict]], dict], batch_size: int, *, train: bool,
                 shuffle_buffer: int = 0, resampled: bool = False, epoch_length: int | None = None,
                 split_mode: str = "auto", rank: int = 0, world_size: int = 1, seed: int = 0,
                 num_workers: int = 0, counts: list[int] | None = None, strict: bool = False) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise LafaUserError(f"data.batch_size (or val_batch_size): {batch_size!r} is not allowed: batches hold at "
                             f"least 1 sample; set it to an integer >= 1")
        if resampled and not epoch_length:
            raise ValueError("resampled mode needs epoch_length (batches per rank and epoch)")
        if split_mode not in ("auto", "range", "shard", "sample"):
            raise ValueError(f"split_mode must be auto, range, shard or sample, not {split_mode!r}")
        if split_mode == "range" and counts is None:
            raise ValueError("split_mode range needs the shards' sample counts (local shard files)")
        self.urls, self.decode, self.collate, self.batch_size = list(urls), decode, collate, batch_size
        self.train, self.shuffle_buffer, self.resampled = train, shuffle_buffer, resampled
        self.epoch_length, self.split_mode = epoch_length, split_mode
        self.rank, self.world_size, self.seed = rank, world_size, seed
        self.num_workers, self.counts, self.strict = max(num_workers, 1), counts, strict
        self.epoch = 0  # set by EpochLoader in the main process
        self._local_iters = 0  # passes made by this copy (a persistent worker's copy of epoch is stale)
        self._resume: dict | None = None  # position to skip to in the next pass (set by EpochLoader)

    # ---- the plan of an epoch: same on every rank ----------------------------------------------------------------
    def mode(self) -> str:
        if self.split_mode != "auto":
            return self.split_mode
        if self.counts is not None:
            return "range"
        return "shard" if len(self.urls) >= self.world_size * self.num_workers else "sample"

    def _slot_size(self, slot: int, n_slots: int) -> int:
        counts, mode = self.counts, self.mode()
        n = sum(counts)
        if mode == "range":
            return (slot + 1) * n // n_slots - slot * n // n_slots
        if mode == "shard":
            return sum(counts[slot::n_slots])
        return len(range(slot, n, n_slots))

    def quotas(self) -> list[int] | None:
        """Train batches of each of this rank's workers per epoch (None: until the shards run out)."""
        if not self.train:
            return None
        nw = self.num_workers
        if self.epoch_length is not None:
            return [self.epoch_length // nw + (1 if w < self.epoch_length % nw else 0) for w in range(nw)]
        if self.counts is None:
            return None
        n_slots = self.world_size * nw
        per_rank = [[self._slot_size(r * nw + w, n_slots) // self.batch_size for w in range(nw)]
                    for r in range(self.world_size)]
        target = min(sum(q) for q in per_rank)
        mine = per_rank[self.rank]
        while sum(mine) > target:  # every rank stops at the smallest rank's count
            mine[mine.index(max(mine))] -= 1
        return mine

    def __len__(self) -> int:
        quotas = self.quotas()
        if quotas is None:
            raise TypeError("this ShardStream has no length (no epoch_length, shard sample counts unknown)")
        return sum(quotas)

    def fingerprint(self) -> str:
        """What a saved position depends on: resuming with another corpus, batch size or layout cannot skip."""
        spec = [self.urls, self.counts, self.batch_size, self.world_size, self.num_workers, self.seed, self.mode(),
                self.shuffle_buffer, self.resampled, self.epoch_length]
        return hashlib.sha1(json.dumps(spec).encode()).hexdigest()

    # ---- one worker's pass -----------------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        self._local_iters += 1
        if info is None:
            return self._batches(0, 1, self.epoch, self._resume)
        self.num_workers = info.num_workers
        resume = self._resume if self._local_iters == 1 else None
        return self._batches(info.id, info.num_workers, self.epoch + self._local_iters - 1, resume)

    def _read(self, url: str, events: list[dict]) -> Iterator[dict]:
        try:
            yield from read_shard(url)
        except ShardError as exn:
            if self.strict:
                raise DamagedDataError(f"damaged shard {exn} (strict mode; strict: false skips it)") from None
            events.append({"kind": "shard", "url": exn.url, "key": None, "reason": exn.reason})

    def _pass(self, slot: int, n_slots: int, order: list[int], events: list[dict]) -> Iterator[dict]:
        """The slot's samples in one pass over the shards (in `order`)."""
        mode = self.mode()
        if mode == "range":
            n = sum(self.counts)
            lo, hi, start = slot * n // n_slots, (slot + 1) * n // n_slots, 0
            for j in order:
                first, start = start, start + self.counts[j]
                if start <= lo or first >= hi:
                    continue
                for i, sample in enumerate(self._read(self.urls[j], events), first):
                    if i >= hi:
                        break
                    if i >= lo:
                        yield sample
        elif mode == "shard":
            for j in order:
                if j % n_slots == slot:
                    yield from self._read(self.urls[j], events)
        else:
            index = 0
            for j in order:
                for sample in self._read(self.urls[j], events):
                    if index % n_slots == slot:
                        yield sample
                    index += 1

    def _drawn(self, slot: int, base: str, events: list[dict]) -> Iterator[dict]:
        """Resampled mode: shards drawn with replacement, forever."""
        shard_rng, empty = random.Random(f"{base}/{slot}/shards"), 0
        while True:
            got = False
            for sample in self._read(shard_rng.choice(self.urls), events):
                got, empty = True, 0
                yield sample
            empty += not got
            if empty > 10 * len(self.urls):
                raise DamagedDataError(f"no readable sample in {10 * len(self.urls)} draws from {self.urls}")

    def _samples(self, slot: int, n_slots: int, base: str, limited: bool, events: list[dict]) -> Iterator[dict]:
        """The slot's samples in shuffle-buffer order; passes over its share repeat while `limited` (a quota
        to fill), each pass shuffled on its own so a pass starts only once the previous one is used up."""
        buffer_rng = random.Random(f"{base}/{slot}/buffer")
        if self.resampled:
            yield from self._shuffled(self._drawn(slot, base, events), buffer_rng)
            return
        order_rng = random.Random(f"{base}/order")  # the same in every slot: the split stays disjoint
        passes = 0
        while True:
            order = list(range(len(self.urls)))
            if self.train:
                order_rng.shuffle(order)
            count = 0
            for sample in self._shuffled(self._pass(slot, n_slots, order, events), buffer_rng):
                count += 1
                yield sample
            passes += 1
            if limited and count == 0:
                events.append({"kind": "empty", "url": None, "key": None,
                               "reason": f"slot {slot} has no readable sample: its rank makes fewer batches"})
            if not limited or count == 0:
                return
            if self.epoch_length is None:  # counts promised more samples: damaged ones are made up by repeats
                events.append({"kind": "repeat", "url": None, "key": None,
                               "reason": f"slot {slot}: pass {passes + 1} over its samples to fill its batches"})

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

    def _batches(self, wid: int, nw: int, epoch: int, resume: dict | None) -> Iterator[dict[str, Any]]:
        w = (wid + (resume["next"] if resume else 0)) % nw  # logical worker: a resumed pass keeps the batch order
        slot, n_slots = self.rank * nw + w, self.world_size * nw
        quotas = self.quotas()
        limit = None if quotas is None else quotas[w] - (resume["batches"][w] if resume else 0)
        skip = resume["samples"][w] if resume else 0
        if limit is not None and limit <= 0:
            return
        base, events = f"{self.seed}/{epoch}", []
        samples = self._samples(slot, n_slots, base, limit is not None, events)
        batch, produced, position = [], 0, 0

        def tagged(out: dict, **marker: bool) -> dict:
            out[STREAM_KEY] = {"worker": w, "samples": position, "events": list(events), **marker}
            events.clear()
            return out

        for sample in samples:
            position += 1  # samples this slot has taken from its shuffle buffer in this pass
            if position <= skip:
                continue
            rng = random.Random(f"{base}/{slot}/{position}") if self.train else None
            try:
                batch.append(self.decode(sample, rng, epoch))
            except DECODE_ERRORS as exn:
                reason = f"{type(exn).__name__}: {exn}"
                if self.strict:
                    raise DamagedDataError(f"damaged sample {sample['__key__']} in {sample['__url__']}: {reason} "
                                           "(strict mode; strict: false skips it)") from None
                events.append({"kind": "sample", "url": sample["__url__"], "key": sample["__key__"], "reason": reason})
                continue
            if len(batch) == self.batch_size:
                yield tagged(self.collate(batch))
                batch, produced = [], produced + 1
                if limit is not None and produced >= limit:
                    return
        if batch and not self.train:
            yield tagged(self.collate(batch))
        if events:  # no batch left to carry them: a marker without data (EpochLoader drops it)
            yield tagged({}, marker=True)
