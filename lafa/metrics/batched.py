"""Embedding a folder in batches across clips, with decoding and resampling done ahead in worker threads.

Threads, not processes: soundfile, soxr, resampy (numba, nogil) and torch release the GIL, the prepared
arrays are not pickled, and the model runs in the calling thread.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
from tqdm import tqdm

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class Batching:
    """How evaluate_folders feeds the networks. Results equal the per-clip path to float rounding (tested)."""

    openl3_windows: int = 64  # 1 s windows per OpenL3 forward, across clips (a 10 s stereo clip has 40)
    passt_windows: int = 8  # 10 s windows per PaSST forward, across clips
    clap_clips: int = 8  # clips per CLAP audio forward
    workers: int = 1  # decode/resample threads ahead of the model (0: in the calling thread)

    @classmethod
    def per_clip(cls) -> Batching:
        """Every clip prepared and embedded on its own (the path before batching; OpenL3 in 16-window chunks)."""
        return cls(openl3_windows=0, passt_windows=0, clap_clips=0, workers=0)

    def as_dict(self) -> dict:
        return asdict(self)


def prefetch(items: Iterable[T], fn: Callable[[T], R], workers: int, ahead: int = 4) -> Iterator[R]:
    """fn(item) for each item, in order, computed by `workers` threads at most `ahead` items before use."""
    if workers <= 0:
        yield from map(fn, items)
        return
    with ThreadPoolExecutor(workers, thread_name_prefix="lafa-prefetch") as pool:
        pending: deque = deque()
        for item in items:
            pending.append(pool.submit(fn, item))
            if len(pending) > max(ahead, workers):
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def embed_files(
    files: dict[str, Path], cache, prepare: Callable[[str, Path], T],
    embed: Callable[[list[T]], list[np.ndarray]], size: Callable[[T], int], budget: int, workers: int,
    desc: str,
) -> dict[str, np.ndarray]:
    """{id: embedding} of every file, in the order of `files`: cached ones read (`cache`, an EmbeddingCache),
    the others prepared by `workers` threads a few clips ahead and embedded in groups whose `size` stays
    within `budget` (a larger clip alone; budget 0 with workers 0: one clip at a time)."""
    results: dict[str, np.ndarray] = {}
    todo = []
    for clip_id, path in files.items():
        value, entry = cache.lookup(path)
        if value is not None:
            results[clip_id] = value
        else:
            todo.append((clip_id, path, entry))
    batch: list[tuple[str, object, T]] = []
    used = 0

    def flush() -> None:
        values = embed([p for _, _, p in batch])
        if len(values) != len(batch):
            raise RuntimeError(f"{desc}: {len(batch)} clips in, {len(values)} embeddings out")
        for (clip_id, entry, _), value in zip(batch, values, strict=True):
            results[clip_id] = cache.store(entry, value)
        batch.clear()

    ready = prefetch(todo, lambda t: prepare(t[0], t[1]), workers, ahead=max(2, workers * 2))
    for (clip_id, _, entry), prepared in zip(
        todo, tqdm(ready, total=len(todo), desc=desc, leave=False), strict=True
    ):
        n = size(prepared)
        if batch and used + n > budget:
            flush()
            used = 0
        batch.append((clip_id, entry, prepared))
        used += n
    if batch:
        flush()
    return {clip_id: results[clip_id] for clip_id in files}
