"""The DataLoader over a ShardStream (`EpochLoader`)."""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

import torch

from lafa.data.stream import STREAM_KEY, DamagedDataError, ShardStream

log = logging.getLogger(__name__)


def _gather(state: dict) -> list[dict]:
    """Every rank's state (all ranks save a checkpoint together; rank 0 writes it)."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        states: list = [None] * dist.get_world_size()
        dist.all_gather_object(states, state)
        return states
    return [state]


class EpochLoader(torch.utils.data.DataLoader):
    """A DataLoader over a ShardStream: a new epoch at every pass, the position of the consumed batches as a
    state dict (Lightning stores it in checkpoints and restores it on resume: the resumed pass skips, without
    decoding, what was trained on and yields the same batches in the same order), and damaged data reported.

    Lightning pre-fetches a batch ahead of the step, so the DataModule marks a batch consumed (`taken`) when
    the trainer moves it to the device; without a trainer a batch counts as consumed when it is yielded.
    `report(stats)` is called at the end of every pass with the damaged shards and samples it skipped.
    """

    def __init__(self, dataset: ShardStream, *, report: Callable[[dict], None] | None = None, **kwargs: Any) -> None:
        super().__init__(dataset, **kwargs)
        self.report = report
        self.consume_on_yield = True
        self._pending: deque[tuple[int, int]] = deque()
        self._state: dict | None = None
        self._restore: dict | None = None
        self._warned: set[tuple] = set()

    def _workers(self) -> int:
        return max(self.num_workers, 1)

    def _fresh(self, epoch: int) -> dict:
        n = self._workers()
        return {"epoch": epoch, "consumed": 0, "next": 0, "batches": [0] * n, "samples": [0] * n, "complete": False}

    def __iter__(self):
        ds = self.dataset
        restore, self._restore = self._restore, None
        if restore is not None and not restore["complete"]:
            ds.epoch = restore["epoch"]
            state = {k: (list(v) if isinstance(v, list) else v) for k, v in restore.items()}
            ds._resume = {k: state[k] for k in ("next", "batches", "samples")}
        else:
            ds.epoch = (restore["epoch"] if restore is not None else ds.epoch) + 1
            state = self._fresh(ds.epoch)
        self._state = state
        self._pending.clear()
        try:
            iterator = super().__iter__()  # workers take their copy of the stream (and its resume point) here
        finally:
            ds._resume = None
        return self._yield(iterator, state)

    def _yield(self, iterator: Iterator, state: dict) -> Iterator[dict]:
        stats = {"epoch": state["epoch"], "shards": set(), "samples": 0, "repeats": 0, "batches": 0}
        length, reported = self._length(), False
        try:
            for batch in iterator:
                tag = batch.pop(STREAM_KEY)
                self._note(tag["events"], stats)
                if tag.get("marker"):
                    continue
                self._pending.append((tag["worker"], tag["samples"]))
                stats["batches"] += 1
                if self.consume_on_yield:
                    self.taken(batch)
                if length is not None and stats["batches"] >= length and not reported:
                    reported = self._report(stats)  # Lightning stops asking after the last batch of a sized loader
                yield batch
        except DamagedDataError as exn:  # raised in a worker: keep the message, drop the worker traceback
            raise DamagedDataError(str(exn).strip().splitlines()[-1].split("DamagedDataError: ")[-1]) from None
        state["complete"] = True
        if not reported:
            self._report(stats)

    def _note(self, events: list[dict], stats: dict) -> None:
        for event in events:
            if event["kind"] == "shard":
                stats["shards"].add(event["url"])
            elif event["kind"] == "sample":
                stats["samples"] += 1
            else:
                stats["repeats"] += 1
            ident = (event["kind"], event["url"], event["key"])
            if ident not in self._warned:  # each damaged item is named once per run
                self._warned.add(ident)
                where = event["url"] if event["key"] is None else f"sample {event['key']} in {event['url']}"
                log.warning("damaged data skipped: %s", event["reason"] if event["url"] is None else
                            f"{where}: {event['reason']}")

    def _report(self, stats: dict) -> bool:
        if self.report is not None:
            self.report({**stats, "shards": sorted(stats["shards"])})
        return True

    def taken(self, batch: Any) -> None:
        """The trainer took the oldest batch yielded and not yet consumed (`batch`: the loader knows its order)."""
        if not self._pending or self._state is None:
            return
        worker, samples = self._pending.popleft()
        st = self._state
        st["consumed"] += 1
        st["batches"][worker] += 1
        st["samples"][worker] = samples
        st["next"] = (worker + 1) % self._workers()
        st["complete"] = st["complete"] or (self._length() is not None and st["consumed"] >= self._length())

    def _length(self) -> int | None:
        try:
            return len(self)
        except TypeError:  # a stream with no length (ShardStream.__len__)
            return None

    def state_dict(self) -> dict:
        state = dict(self._state) if self._state is not None else {**self._fresh(self.dataset.epoch), "complete": True}
        state["fingerprint"] = self.dataset.fingerprint()
        return {"ranks": _gather(state)}

    def load_state_dict(self, state_dict: dict) -> None:
        ds = self.dataset
        ranks = state_dict.get("ranks") or []
        if not ranks:
            return
        state = ranks[ds.rank] if len(ranks) == ds.world_size else ranks[0]
        if len(ranks) != ds.world_size or state.get("fingerprint") != ds.fingerprint():
            why = (f"saved by {len(ranks)} ranks, now {ds.world_size}" if len(ranks) != ds.world_size else
                   "the shards, batch size, workers, seed or split differ")
            if not state["complete"]:
                log.warning("the data stream cannot resume at batch %d of epoch %d (%s): that epoch restarts from "
                            "its first batch", state["consumed"], state["epoch"], why)
            state = {"epoch": state["epoch"] - (0 if state["complete"] else 1), "complete": True}
        self._restore = state
