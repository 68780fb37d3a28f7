"""Plan, write and resume WebDataset shards; the manifest.

Each shard, planned up front from file headers (data_prep.plan), is an independent, deterministic unit of work:
written under a temporary name and renamed when complete, skipped on a re-run when it and its state record (same
fingerprint, lafa's version included; its size as written) exist. One build per output folder (lafa.output_lock,
data_prep.build_record); Ctrl-C stops with what was kept; a full disk names the shard (docs/data.md).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import signal
import tarfile
from collections import defaultdict
from dataclasses import asdict
from functools import partial
from multiprocessing import get_context
from pathlib import Path

import torch
from tqdm import tqdm

import lafa
from data_prep.build_record import build_record, check_build_record
from data_prep.items import Item, printable, relative_to, skip_record
from data_prep.long_files import StreamedFile, WholeFileNeeded, streams_long
from data_prep.manifest import manifest as write_manifest
from data_prep.manifest import quarantine_stale
from data_prep.passthrough import SourceFormat, copy_extension, int16_source, stored_copy
from data_prep.plan import file_header, plan_shards
from data_prep.process import (
    ChunkSettings,
    SkipFile,
    chunk_bounds,
    chunk_metadata,
    decode,
    encode_member,
    split_chunks,
)
from data_prep.settings import BuildSettings
from lafa.audio import to_channels
from lafa.children import die_with_parent
from lafa.data.captions import caption_rng, draw_caption
from lafa.data.tario import add_member, atomic_tar, remove_stale_temporaries
from lafa.errors import LafaUserError
from lafa.output_lock import output_lock

NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


class ShardWriteError(LafaUserError):
    """A shard that could not be written (a full disk): the message names it."""


class BuildInterrupted(KeyboardInterrupt):
    """Ctrl-C during a build: the message says what was kept and how to resume."""


MAX_KEY_BYTES = 90  # USTAR holds 100-byte member names; ".flac", ".opus" or ".json" follow the key


def sample_key(item: Item, chunk: int) -> str:
    """A WebDataset key (no dots: webdataset splits the extension at the first one), short enough for any
    tar writer; a long id is cut to its end plus a hash of the whole id, so keys stay distinct."""
    safe = "".join(c if c.isalnum() or c in "-_" else "-" for c in item.id)
    key = f"{item.source}_{safe}_{chunk:03d}"
    if len(key.encode()) > MAX_KEY_BYTES:
        digest = hashlib.sha1(f"{item.source}:{item.id}".encode()).hexdigest()[:16]
        tail = safe
        while len(f"{item.source}_{tail}_{digest}_{chunk:03d}".encode()) > MAX_KEY_BYTES:
            tail = tail[1:]
        key = f"{item.source}_{tail}_{digest}_{chunk:03d}"
    return key


def write_shard(task: dict) -> dict:
    """Decode, chunk and encode every item of one planned shard; atomic write; returns the state record."""
    torch.set_num_threads(1)
    stats: dict = {"fingerprint": task["fingerprint"], "chunks": 0, "samples": 0, "files": 0, "skipped": [],
                   "dropped_chunks": [], "per_source": defaultdict(lambda: {"files": 0, "chunks": 0, "samples": 0}),
                   "copied": defaultdict(int)}  # chunks stored as the source's bytes, per format
    state = Path(task["state"])
    tmp = state.with_suffix(".tmp")
    try:
        with atomic_tar(task["path"]) as tar:  # a shard appears complete or not at all
            tar.copybufsize = 1 << 20  # tarfile copies members in 16 KiB pieces by default
            _write_members(task, tar, stats)
        stats["per_source"], stats["copied"] = dict(stats["per_source"]), dict(stats["copied"])
        stats["bytes"] = os.path.getsize(task["path"])  # a re-run trusts a shard of this size only
        tmp.write_text(json.dumps(stats, sort_keys=True, indent=1))
        os.replace(tmp, state)
    except OSError as exc:
        if exc.errno not in NO_SPACE:
            raise
        tmp.unlink(missing_ok=True)
        raise ShardWriteError(f"{task['path']}: no space left on the device while writing this shard") from None
    return stats


def _chunk_meta(task: dict, entry: dict, settings: ChunkSettings, key: str, i: int, num_chunks: int, offset: int,
                length: int, total: int, stored: str, stored_channels: int) -> dict:
    item: Item = entry["item"]
    return {"key": key, "id": item.id, "source": item.source, "chunk": i, "num_chunks": num_chunks,
            "sample_rate": settings.sample_rate, "channels": settings.channels,
            **chunk_metadata(offset, length, total, settings.sample_rate),
            "caption": draw_caption(item.metadata, caption_rng(task["seed"], key)),
            "license": item.license, "license_text": item.license_text, "path": printable(entry["rel_path"]),
            "metadata": item.metadata, "stored": stored, "stored_channels": stored_channels}


def _count_file(stats: dict, item: Item, dropped: list[str]) -> dict:
    """Count a file that reaches the shard and its dropped silent chunks; returns its source's counts."""
    stats["dropped_chunks"] += [{"source": item.source, "id": item.id, "reason": r} for r in dropped]
    stats["files"] += 1
    src = stats["per_source"][item.source]
    src["files"] += 1
    return src


def _add_chunk(tar: tarfile.TarFile, stats: dict, src: dict, name: str, member: bytes, meta: dict) -> None:
    """A chunk's audio member and its JSON, counted in the shard's and its source's totals."""
    add_member(tar, name, member)
    add_member(tar, f"{meta['key']}.json", json.dumps(meta, sort_keys=True, ensure_ascii=False).encode())
    for counts in (stats, src):
        counts["chunks"] += 1
        counts["samples"] += meta["num_samples"]


def _write_streamed(task: dict, tar: tarfile.TarFile, stats: dict, entry: dict, int16: bool, mono: bool) -> bool:
    """A long file (data_prep.long_files) chunk by chunk in bounded memory: each kept chunk is encoded into a
    spool file beside the shard; when the whole file has passed a whole decode's checks, its members go into the
    tar in the order, names and bytes the whole-file path gives (the chunk count is in every chunk's JSON).
    False: an Ogg file whose decoded length is not its header's, for the whole-file path (nothing written)."""
    settings: ChunkSettings = task["chunk"]
    item: Item = entry["item"]
    sr = settings.sample_rate
    try:
        streamed = StreamedFile(item.path, settings, int16=int16, mono=mono)
    except Exception as exc:  # noqa: BLE001 - as decode: libsndfile raises several types on garbage
        stats["skipped"].append(skip_record(item, f"unreadable: {exc}".replace(str(item.path), Path(item.path).name),
                                            "unreadable"))
        return True
    bounds = chunk_bounds(streamed.total, round(settings.chunk_seconds * sr), round(settings.min_tail_seconds * sr))
    spool = Path(task["path"]).with_name(f".{Path(task['path']).name}.tmp-{os.getpid()}.spool")
    kept, dropped = [], []  # kept: (offset, length, member extension, spool offset, bytes)
    try:
        with open(spool, "w+b") as f:
            for i, a, piece, level in streamed.chunks(bounds):
                if level < settings.silence_dbfs:
                    b = a + piece.shape[-1]
                    dropped.append(f"chunk {i} ({a / sr:.1f}-{b / sr:.1f} s) silent: peak {level:.1f} dBFS")
                    continue
                member_ext, member = encode_member(to_channels(piece, settings.channels), settings)
                kept.append((a, piece.shape[-1], member_ext, f.tell(), len(member)))
                f.write(member)
            streamed.check()  # truncated, unreadable or silent: skipped whole, nothing of it in the shard
            if not kept:
                raise SkipFile("no chunk passed: " + "; ".join(dropped), "silent")
            src = _count_file(stats, item, dropped)
            for i, (offset, length, member_ext, start, size) in enumerate(kept):
                key = sample_key(item, i)
                f.seek(start)
                meta = _chunk_meta(task, entry, settings, key, i, len(kept), offset, length, streamed.total,
                                   settings.member_format, settings.channels)
                _add_chunk(tar, stats, src, f"{key}.{member_ext}", f.read(size), meta)
    except SkipFile as exc:
        stats["skipped"].append(skip_record(item, str(exc), exc.category))
    except WholeFileNeeded:
        return False  # nothing of it was written
    finally:
        spool.unlink(missing_ok=True)
    return True


def _write_members(task: dict, tar: tarfile.TarFile, stats: dict) -> None:
    settings: ChunkSettings = task["chunk"]
    chunk_samples = round(settings.chunk_seconds * settings.sample_rate)
    for entry in task["items"]:
        item: Item = entry["item"]
        src_format = SourceFormat(**entry["format"])
        ext = copy_extension(src_format, settings)
        int16 = int16_source(src_format, settings)  # checked and cut as integers (the same samples, less CPU)
        seconds = entry.get("seconds", 0.0)  # a file of one chunk is bounded by it (and may be stored as it is)
        if seconds > settings.chunk_seconds and streams_long(src_format.format, seconds):  # any length
            if _write_streamed(task, tar, stats, entry, int16, mono=ext is not None):
                continue  # else an Ogg file whose length is not its header's: decoded whole below
        try:
            audio = decode(item.path, settings, int16=int16, mono=ext is not None)  # a copy candidate stays mono
        except SkipFile as exc:
            stats["skipped"].append(skip_record(item, str(exc), exc.category))
            continue
        unchanged = audio.dtype == torch.int16 or ext is not None  # decode returned the file's own samples
        if unchanged and audio.shape[-1] <= chunk_samples:
            chunks, dropped = [(0, audio)], []  # one chunk: the file, whose peak decode has checked
        else:  # int16 (a longer 16-bit source at the shard's rate) is cut and stored as its integers
            chunks, dropped = split_chunks(audio, settings)
        whole = len(chunks) == 1 and chunks[0][1].shape[-1] == audio.shape[-1]  # one chunk: the entire file
        copied = stored_copy(ext, Path(item.path).read_bytes(), audio.shape[-1], settings) if ext and whole else None
        if not chunks:  # every chunk silent (e.g. the only loud part is in a dropped short tail)
            stats["skipped"].append(skip_record(item, "no chunk passed: " + "; ".join(dropped), "silent"))
            continue
        src = _count_file(stats, item, dropped)
        for i, (offset, piece) in enumerate(chunks):
            key = sample_key(item, i)
            meta = _chunk_meta(task, entry, settings, key, i, len(chunks), offset, piece.shape[-1], audio.shape[-1],
                               settings.member_format if copied is None else "copy",
                               settings.channels if copied is None else src_format.channels)
            if copied is None:
                member_ext, member = encode_member(to_channels(piece, settings.channels), settings)
            else:  # the source's own bytes: the loaders decode mp3/ogg/opus/wav/flac members alike
                member_ext, member = ext, copied
                stats["copied"][ext] += 1
            _add_chunk(tar, stats, src, f"{key}.{member_ext}", member, meta)


def _fingerprint(entries: list[dict], s: BuildSettings) -> str:
    """What a shard's bytes follow from: its inputs (content hashes, metadata, licence), the chunk settings, the
    caption seed and lafa's version (another version may encode differently)."""
    h = hashlib.sha256(json.dumps([asdict(s.chunk), s.seed, lafa.__version__], sort_keys=True).encode())
    for e in entries:
        h.update(f"{e['item'].source}:{e['item'].id}:{e['sha256']}:{json.dumps(e['item'].metadata, sort_keys=True)}"
                 f":{e['item'].license}".encode())
    return h.hexdigest()


def _worker_init(parent_pid: int) -> None:
    die_with_parent(parent_pid)  # a killed build leaves no worker running
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle: no traceback per worker


def _pool(jobs: int):
    return get_context("fork").Pool(jobs, initializer=_worker_init, initargs=(os.getpid(),)) if jobs > 1 else None


def build(items: list[Item], s: BuildSettings, rejected: list[dict], roots: dict[str, Path]) -> dict:
    """Headers and content dedup, shard plan, parallel shard writing (resuming), manifest. Returns it.
    Holds the output folder's lock (lafa.output_lock) for the whole build."""
    out = Path(s.out)
    out.mkdir(parents=True, exist_ok=True)
    with output_lock(out, "data_prep"):
        return _build(items, s, rejected, roots)


def _build(items: list[Item], s: BuildSettings, rejected: list[dict], roots: dict[str, Path]) -> dict:
    out = Path(s.out)
    check_build_record(out, build_record(s, roots), s.overwrite)  # another build's folder: refused, untouched
    state_dir = out / ".state"
    state_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(out)
    jobs = s.jobs or os.cpu_count() or 1
    listed = len(items) + len(rejected)
    rejected = list(rejected) + [skip_record(it) for it in items if it.problem]
    items = sorted((it for it in items if not it.problem), key=lambda it: (it.source, it.rel or "", it.id))
    pool, writing = _pool(jobs), False
    try:
        scan = partial(file_header, chunk=s.chunk if s.size_estimate == "probe" else None)
        headers = list(tqdm((pool.imap if pool else map)(scan, items), total=len(items),
                            desc="scan", disable=None))
        skipped = list(rejected)
        kept, kept_headers, seen = [], [], {}
        for item, head in zip(items, headers, strict=True):
            if "error" in head:
                skipped.append(skip_record(item, head["error"], head["category"]))
            elif head["seconds"] < s.chunk.min_clip_seconds:
                skipped.append(skip_record(item, f"too short: {head['seconds']:.4g} s, less than the "
                                           f"{s.chunk.min_clip_seconds:g} s minimum clip", "too short"))
            elif head["sha256"] in seen:
                skipped.append(skip_record(item, f"duplicate content of {seen[head['sha256']]}", "duplicate content"))
            else:
                seen[head["sha256"]] = f"{printable(item.rel or item.path)} ({item.source})"
                kept.append(item)
                kept_headers.append(head)
        tasks = []
        for split, groups in plan_shards(kept, kept_headers, s).items():
            for n, group in enumerate(groups):
                name = f"{s.prefix}{split}-{n:06d}.tar"
                entries = [{"item": kept[i], "sha256": kept_headers[i]["sha256"], "format": kept_headers[i]["format"],
                            "seconds": kept_headers[i]["seconds"],
                            "rel_path": kept[i].rel or relative_to(kept[i].path, roots.get(kept[i].source))}
                           for i in group]
                tasks.append({"path": str(out / name), "state": str(state_dir / f"{name}.json"), "split": split,
                              "items": entries, "chunk": s.chunk, "seed": s.seed,
                              "fingerprint": _fingerprint(entries, s)})
        todo = [t for t in tasks if not _finished(t)]
        finished = len(tasks) - len(todo)
        writing = True
        for _ in tqdm((pool.imap_unordered if pool else map)(write_shard, todo), total=len(todo),
                      desc="shards", disable=None):
            finished += 1
    except ShardWriteError as exc:
        raise ShardWriteError(f"{exc}; {finished} of {len(tasks)} shards are finished and kept (no partial "
                              "shard); free space and run the same command again to write the rest") from None
    except KeyboardInterrupt:
        if pool:
            pool.terminate()
            pool.join()
            pool = None
        if not writing:
            raise BuildInterrupted(f"interrupted while scanning the inputs: nothing was written to {out}; "
                                   "run the same command again to start over") from None
        remove_stale_temporaries(out)  # the terminated workers' unfinished shards (we hold the folder's lock)
        finished = sum(_finished(t) for t in tasks)  # some finished after their result was last received
        raise BuildInterrupted(
            f"interrupted: {finished} of {len(tasks)} shards in {out} are finished and kept (shards being "
            f"written were discarded, no manifest.json written yet); run the same command again to resume: "
            f"finished shards are not written again") from None
    finally:
        if pool:
            pool.close()
            pool.join()
    manifest = write_manifest(tasks, skipped, s, listed)
    manifest["quarantined"] = quarantine_stale(out, {Path(t["path"]).name for t in tasks}, s.prefix)
    manifest["notes"] = [{**skip_record(it, note), "note": note} for it in kept for note in it.notes]
    for note in manifest["notes"]:
        del note["reason"], note["category"]
    tmp = out / ".manifest.json.tmp"
    try:
        tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True))
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        if exc.errno not in NO_SPACE:
            raise
        raise ShardWriteError(f"{out / 'manifest.json'}: no space left on the device; every shard is finished and "
                              f"kept: free space and run the same command again to write the manifest") from None
    os.replace(tmp, out / "manifest.json")
    return manifest


def _finished(task: dict) -> bool:
    state = Path(task["state"])
    if not (Path(task["path"]).is_file() and state.is_file()):
        return False
    try:
        record = json.loads(state.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return False
    if record.get("fingerprint") != task["fingerprint"]:
        return False
    # a shard cut or replaced since it was written is not trusted (size only: a copied folder keeps its shards)
    return record.get("bytes", os.path.getsize(task["path"])) == os.path.getsize(task["path"])
