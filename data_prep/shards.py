"""Plan, write and resume WebDataset shards; the manifest.

The run is split into shards planned up front from file headers (no decoding), so each shard is an
independent, deterministic unit of work: written under a temporary name and renamed when complete,
skipped on a re-run when its final file and its state record (same plan fingerprint, lafa version included;
the file's size as written) exist. One build per output folder (lafa.output_lock); worker
processes die with the build; Ctrl-C stops with what was kept; a full disk names the shard.
"""

from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import re
import signal
import tarfile
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from functools import partial
from multiprocessing import get_context
from pathlib import Path

import soundfile as sf
import torch
from tqdm import tqdm

import lafa
from data_prep.items import Item, printable, skip_record
from data_prep.long_files import StreamedFile, streams_long
from data_prep.passthrough import SUBTYPE_BITS, SourceFormat, copy_extension, int16_source, stored_copy
from data_prep.process import (
    ChunkSettings,
    SkipFile,
    chunk_bounds,
    chunk_metadata,
    decode,
    encode_flac,
    encode_member,
    split_chunks,
)
from lafa.audio import convert, sf_source, to_channels
from lafa.children import die_with_parent
from lafa.data.captions import caption_rng, draw_caption
from lafa.data.tario import add_member, atomic_tar, remove_stale_temporaries
from lafa.errors import LafaUserError
from lafa.output_lock import output_lock

SPLITS = ("train", "val", "test")
NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


class ShardWriteError(LafaUserError):
    """A shard that could not be written (a full disk): the message names it."""


class BuildInterrupted(KeyboardInterrupt):
    """Ctrl-C during a build: the message says what was kept and how to resume."""
FLAC_RATIO = 0.6  # planning estimate of FLAC size / 16-bit PCM size


@dataclass
class BuildSettings:
    out: Path
    chunk: ChunkSettings = field(default_factory=ChunkSettings)
    shard_bytes: int = 256 * 2**20  # target shard size (estimated before encoding)
    val_fraction: float = 0.05
    test_fraction: float = 0.05
    seed: int = 0
    jobs: int = 0  # 0: all cores
    prefix: str = ""  # shards are {prefix}{split}-000000.tar
    # "probe": each file's size from the FLAC size of an excerpt, shards closest to shard_bytes (within ~10% on
    # music); "pcm": a fixed FLAC/PCM ratio of 0.6, shards filled until they pass it (content-independent plan)
    size_estimate: str = "pcm"


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
    try:
        with atomic_tar(task["path"]) as tar:  # a shard appears complete or not at all
            tar.copybufsize = 1 << 20  # tarfile copies members in 16 KiB pieces by default
            _write_members(task, tar, stats)
        stats["per_source"], stats["copied"] = dict(stats["per_source"]), dict(stats["copied"])
        stats["bytes"] = os.path.getsize(task["path"])  # a re-run trusts a shard of this size only
        state.with_suffix(".tmp").write_text(json.dumps(stats, sort_keys=True, indent=1))
        os.replace(state.with_suffix(".tmp"), state)
    except OSError as exc:
        if exc.errno not in NO_SPACE:
            raise
        state.with_suffix(".tmp").unlink(missing_ok=True)
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


def _write_streamed(task: dict, tar: tarfile.TarFile, stats: dict, entry: dict, int16: bool, mono: bool) -> None:
    """A long file (data_prep.long_files) chunk by chunk in bounded memory: each kept chunk is encoded into a
    spool file beside the shard; when the whole file has passed a whole decode's checks, its members go into the
    tar in the order, names and bytes the whole-file path gives (the chunk count is in every chunk's JSON)."""
    settings: ChunkSettings = task["chunk"]
    item: Item = entry["item"]
    sr = settings.sample_rate
    try:
        streamed = StreamedFile(item.path, settings, int16=int16, mono=mono)
    except Exception as exc:  # noqa: BLE001 - as decode: libsndfile raises several types on garbage
        stats["skipped"].append(skip_record(item, f"unreadable: {exc}".replace(str(item.path), Path(item.path).name),
                                            "unreadable"))
        return
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
            stats["dropped_chunks"] += [{"source": item.source, "id": item.id, "reason": r} for r in dropped]
            src = stats["per_source"][item.source]
            stats["files"] += 1
            src["files"] += 1
            for i, (offset, length, member_ext, start, size) in enumerate(kept):
                key = sample_key(item, i)
                f.seek(start)
                add_member(tar, f"{key}.{member_ext}", f.read(size))
                meta = _chunk_meta(task, entry, settings, key, i, len(kept), offset, length, streamed.total,
                                   settings.member_format, settings.channels)
                add_member(tar, f"{key}.json", json.dumps(meta, sort_keys=True, ensure_ascii=False).encode())
                stats["chunks"] += 1
                stats["samples"] += length
                src["chunks"] += 1
                src["samples"] += length
    except SkipFile as exc:
        stats["skipped"].append(skip_record(item, str(exc), exc.category))
    finally:
        spool.unlink(missing_ok=True)


def _write_members(task: dict, tar: tarfile.TarFile, stats: dict) -> None:
    settings: ChunkSettings = task["chunk"]
    chunk_samples = round(settings.chunk_seconds * settings.sample_rate)
    for entry in task["items"]:
        item: Item = entry["item"]
        src_format = SourceFormat(**entry["format"])
        ext = copy_extension(src_format, settings)
        int16 = int16_source(src_format, settings)  # checked and cut as integers (the same samples, less CPU)
        if streams_long(src_format.format, entry.get("seconds", 0.0)):  # bounded memory for any length
            _write_streamed(task, tar, stats, entry, int16, mono=ext is not None)
            continue
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
        stats["dropped_chunks"] += [{"source": item.source, "id": item.id, "reason": r} for r in dropped]
        src = stats["per_source"][item.source]
        stats["files"] += 1
        src["files"] += 1
        for i, (offset, piece) in enumerate(chunks):
            key = sample_key(item, i)
            meta = _chunk_meta(task, entry, settings, key, i, len(chunks), offset, piece.shape[-1], audio.shape[-1],
                               settings.member_format if copied is None else "copy",
                               settings.channels if copied is None else src_format.channels)
            if copied is None:
                member_ext, member = encode_member(to_channels(piece, settings.channels), settings)
                add_member(tar, f"{key}.{member_ext}", member)
            else:  # the source's own bytes: the loaders decode mp3/ogg/opus/wav/flac members alike
                add_member(tar, f"{key}.{ext}", copied)
                stats["copied"][ext] += 1
            add_member(tar, f"{key}.json", json.dumps(meta, sort_keys=True, ensure_ascii=False).encode())
            stats["chunks"] += 1
            stats["samples"] += piece.shape[-1]
            src["chunks"] += 1
            src["samples"] += piece.shape[-1]


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
    state_dir = out / ".state"
    state_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(out)
    jobs = s.jobs or os.cpu_count() or 1
    listed = len(items) + len(rejected)
    rejected = list(rejected) + [skip_record(it) for it in items if it.problem]
    items = sorted((it for it in items if not it.problem), key=lambda it: (it.source, it.rel or "", it.id))
    pool = _pool(jobs)
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
                            "rel_path": kept[i].rel or _relative(kept[i].path, roots.get(kept[i].source))}
                           for i in group]
                tasks.append({"path": str(out / name), "state": str(state_dir / f"{name}.json"), "split": split,
                              "items": entries, "chunk": s.chunk, "seed": s.seed,
                              "fingerprint": _fingerprint(entries, s)})
        todo = [t for t in tasks if not _finished(t)]
        finished = len(tasks) - len(todo)
        try:
            for stats in tqdm((pool.imap_unordered if pool else map)(write_shard, todo), total=len(todo),
                              desc="shards", disable=None):
                finished += 1
                del stats
        except ShardWriteError as exc:
            raise ShardWriteError(f"{exc}; {finished} of {len(tasks)} shards are finished and kept (no partial "
                                  f"shard); free space and run the same command again to write the rest") from None
        except KeyboardInterrupt:
            if pool:
                pool.terminate()
                pool.join()
                pool = None
            remove_stale_temporaries(out)  # the terminated workers' unfinished shards (we hold the folder's lock)
            finished = sum(_finished(t) for t in tasks)  # some finished after their result was last received
            raise BuildInterrupted(
                f"interrupted: {finished} of {len(tasks)} shards in {out} are finished and kept (shards being "
                f"written were discarded, no manifest.json written yet); run the same command again to resume: "
                f"finished shards are not written again") from None
    except KeyboardInterrupt as exc:
        if isinstance(exc, BuildInterrupted):  # raised above, while shards were written
            raise
        if pool:
            pool.terminate()
            pool.join()
            pool = None
        raise BuildInterrupted(f"interrupted while scanning the inputs: nothing was written to {out}; run the same "
                               f"command again to start over") from None
    finally:
        if pool:
            pool.close()
            pool.join()
    manifest = _manifest(tasks, skipped, s, listed)
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


QUARANTINE = ".stale"  # a hidden folder: no `*.tar` glob or folder spec of the output folder reads it


def quarantine_stale(out: Path, current: set[str], prefix: str = "") -> list[str]:
    """Move shards of earlier builds with this prefix (`{prefix}{split}-NNNNNN.tar`) that the new manifest
    does not list to out/.stale/, so `{prefix}train-*.tar` reads only this build. Other tars are left alone
    (another prefix's build, the user's own files)."""
    name = re.compile(re.escape(prefix) + r"(train|val|test)-\d{6}\.tar")
    moved = []
    for tar in sorted(out.glob("*.tar")):
        if tar.name in current or not name.fullmatch(tar.name):
            continue
        (out / QUARANTINE).mkdir(exist_ok=True)
        os.replace(tar, out / QUARANTINE / tar.name)
        (out / ".state" / f"{tar.name}.json").unlink(missing_ok=True)
        moved.append(tar.name)
    return moved


def _relative(path: Path, root: Path | None) -> str:
    """The path under the source's root as the user laid it out (a symlink keeps its own folders)."""
    try:
        return Path(path).relative_to(Path(root)).as_posix() if root else Path(path).name
    except ValueError:
        return Path(path).name


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


def _manifest(tasks: list[dict], skipped: list[dict], s: BuildSettings, listed: int) -> dict:
    sr = s.chunk.sample_rate
    splits = {k: {"shards": [], "files": 0, "chunks": 0, "hours": 0.0} for k in SPLITS}
    sources: dict[str, dict] = defaultdict(lambda: {"files": 0, "chunks": 0, "hours": 0.0, "skipped": 0})
    skipped = list(skipped)
    dropped = []
    copied: dict[str, int] = defaultdict(int)
    for t in tasks:
        st = json.loads(Path(t["state"]).read_text())
        for ext, n in st.get("copied", {}).items():
            copied[ext] += n
        sp = splits[t["split"]]
        sp["shards"].append(Path(t["path"]).name)
        sp["files"] += st["files"]
        sp["chunks"] += st["chunks"]
        sp["hours"] += st["samples"] / sr / 3600
        skipped += st["skipped"]
        dropped += st["dropped_chunks"]
        for name, v in st["per_source"].items():
            sources[name]["files"] += v["files"]
            sources[name]["chunks"] += v["chunks"]
            sources[name]["hours"] += v["samples"] / sr / 3600
    for sk in skipped:
        sources[sk["source"]]["skipped"] += 1
    kept = sum(v["files"] for v in splits.values())
    if kept + len(skipped) != listed:  # every input in exactly one place: a bug if not, never a silent loss
        raise RuntimeError(f"data_prep: {listed} inputs but {kept} in shards + {len(skipped)} skipped")
    categories: dict[str, int] = defaultdict(int)
    for sk in skipped:
        categories[sk.get("category", "other")] += 1
    chunks = sum(v["chunks"] for v in splits.values())
    return {"files_listed": listed, "files_kept": kept, "files_skipped": len(skipped),
            "skipped_by_category": dict(sorted(categories.items())), "chunks": chunks,
            # how the chunks' audio is stored: encoded (to FLAC, or WAV: member_format), or the source's bytes
            "stored": {s.chunk.member_format: chunks - sum(copied.values()), "copy": dict(sorted(copied.items()))},
            "hours": sum(v["hours"] for v in splits.values()), "splits": splits, "sources": dict(sources),
            "skipped": sorted(skipped, key=lambda d: (d["source"], d["id"])), "dropped_chunks": dropped,
            "settings": {**asdict(s.chunk), "shard_bytes": s.shard_bytes, "val_fraction": s.val_fraction,
                         "test_fraction": s.test_fraction, "seed": s.seed}}
