"""The shard plan, made from file headers before anything is decoded: each file's split, duration, content hash
and estimated shard bytes (`file_header`), and the runs of files that make each shard (`plan_shards`)."""

from __future__ import annotations

import hashlib
import math
import os
import re
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import soundfile as sf
import torch

from data_prep.items import Item
from data_prep.passthrough import SUBTYPE_BITS, SourceFormat, copy_extension, stored_copy
from data_prep.process import ChunkSettings, encode_flac
from lafa.audio import convert, sf_source

if TYPE_CHECKING:
    from data_prep.settings import BuildSettings

SPLITS = ("train", "val", "test")


def shard_name_pattern(prefix: str) -> re.Pattern:
    """The names a build with this prefix gives its shards: `{prefix}{split}-NNNNNN.tar`."""
    return re.compile(re.escape(prefix) + r"(train|val|test)-\d{6}\.tar")

FLAC_RATIO = 0.6  # planning estimate of FLAC size / 16-bit PCM size


def split_of(item: Item, val_fraction: float, test_fraction: float) -> str:
    """The source's own split if it has one, else a stable hash of (source, id): same id -> same split."""
    if item.split:
        return item.split
    u = int.from_bytes(hashlib.sha1(f"{item.source}:{item.id}".encode()).digest()[:8], "big") / 2**64
    return "test" if u < test_fraction else "val" if u < test_fraction + val_fraction else "train"


def file_header(item: Item, chunk: ChunkSettings | None = None) -> dict:
    """Duration, a content hash (sha256 of the file bytes), the format libsndfile reports and the estimated size
    of the file's shard members (with `chunk`), or the reason the file cannot be used."""
    try:
        data, digest = _read_or_hash(Path(item.path))
    except OSError as exc:
        return {"error": f"unreadable: {exc}", "category": "unreadable"}
    if not digest:
        return {"error": "empty file (0 bytes)", "category": "empty"}
    try:
        info = sf.info(sf_source(item.path))  # bytes: names that are not UTF-8 open too
    except Exception as exc:  # corrupt headers: libsndfile raises several types
        return {"error": f"unreadable: {exc}".replace(str(item.path), Path(item.path).name), "category": "unreadable"}
    if info.frames <= 0:
        return {"error": "no samples", "category": "empty"}
    head = {"seconds": info.frames / info.samplerate, "sha256": digest,
            "format": asdict(SourceFormat.of(info))}
    if chunk is not None:
        head["est_bytes"] = estimate_bytes(item.path, info, chunk, data)
    return head


READ_WHOLE_BYTES = 64 * 2**20  # larger files are hashed in blocks (bounded memory); none of them is one copied chunk


def _read_or_hash(path: Path) -> tuple[bytes | None, str]:
    """(the file's bytes, or None when it is larger than READ_WHOLE_BYTES; sha256 hex of its bytes, "" if empty)."""
    if os.path.getsize(path) <= READ_WHOLE_BYTES:
        data = path.read_bytes()
        return data, hashlib.sha256(data).hexdigest() if data else ""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return None, h.hexdigest()


PROBE_SECONDS = 1.0  # excerpt encoded per file to estimate its FLAC size (about 5% extra work on a 20 s file)
MEMBER_OVERHEAD = 3 * 512 + 1024  # tar headers and padding of a chunk's two members, and its JSON
WAV_HEADER = 44  # libsndfile's canonical RIFF/WAVE header


def estimate_bytes(path: Path, info, chunk: ChunkSettings, data: bytes | None = None) -> float:
    """Shard bytes of a file, from the FLAC size of a PROBE_SECONDS excerpt from its middle, encoded as the
    shards will be (a fixed FLAC/PCM ratio missed real music by a third); PCM ratio 0.6 if the probe fails.
    A file the build will store as it is (data_prep.passthrough, one chunk) is its copy's exact size; WAV
    members (member_format "wav") are their PCM size."""
    seconds = info.frames / info.samplerate
    chunks = max(1, math.ceil(seconds / chunk.chunk_seconds))
    ext = copy_extension(SourceFormat.of(info), chunk) if chunks == 1 and data is not None else None
    if ext is not None:
        copied = stored_copy(ext, data, info.frames, chunk)
        if copied is not None:
            return len(copied) + MEMBER_OVERHEAD
    if chunk.member_format == "wav":  # PCM: the size is known without encoding anything
        per_second = chunk.sample_rate * chunk.channels * SUBTYPE_BITS[chunk.flac_subtype] // 8
        return per_second * seconds + chunks * (MEMBER_OVERHEAD + WAV_HEADER)
    n = min(info.frames, max(1, round(PROBE_SECONDS * info.samplerate)))
    try:
        with sf.SoundFile(sf_source(path)) as f:
            f.seek((info.frames - n) // 2)
            excerpt = f.read(n, dtype="float32", always_2d=True)  # one read (see lafa.audio on MP3 blocks)
        # at the shard's rate and channels, as the build stores it (encoded at the source's rate, a 22.05 kHz mono
        # file's probe came out at half its stored size: shards 35% over the target)
        probe = convert(torch.from_numpy(excerpt).T, info.samplerate, chunk.sample_rate, chunk.channels)
        per_second = len(encode_flac(probe, chunk)) / (len(excerpt) / info.samplerate)
    except Exception:  # the decoder reports the file properly later
        per_second = chunk.sample_rate * chunk.channels * 2 * FLAC_RATIO
    return per_second * seconds + chunks * MEMBER_OVERHEAD


def plan_shards(items: list[Item], headers: list[dict], s: BuildSettings) -> dict[str, list[list[int]]]:
    """Per split, consecutive runs of item indices. "probe": a file goes to the next shard when adding it would
    overshoot shard_bytes by more than stopping short would miss it; "pcm": runs whose estimate reaches it."""
    per_split: dict[str, list[list[int]]] = {k: [] for k in SPLITS}
    sizes = {k: 0.0 for k in SPLITS}
    for idx, (item, head) in enumerate(zip(items, headers, strict=True)):
        split = split_of(item, s.val_fraction, s.test_fraction)
        if s.size_estimate == "probe":
            est = head["est_bytes"]
            full = sizes[split] + est - s.shard_bytes > s.shard_bytes - sizes[split]
        else:
            est = head["seconds"] * s.chunk.sample_rate * s.chunk.channels * 2 * FLAC_RATIO
            full = sizes[split] >= s.shard_bytes
        if not per_split[split] or full:
            per_split[split].append([])
            sizes[split] = 0.0
        per_split[split][-1].append(idx)
        sizes[split] += est
    return per_split
