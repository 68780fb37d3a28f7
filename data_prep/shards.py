"""Plan, write and resume WebDataset shards; the manifest.

The run is split into shards planned up front from file headers (no decoding), so each shard is an
independent, deterministic unit of work: written under a temporary name and renamed when complete,
skipped on a re-run when its final file and its state record (same plan fingerprint) exist.
"""

from __future__ import annotations

import hashlib
import json
import os
import tarfile
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context
from pathlib import Path

import soundfile as sf
import torch
from tqdm import tqdm

from data_prep.process import ChunkSettings, SkipFile, chunk_metadata, decode, encode_flac, split_chunks
from data_prep.sources import Item
from lafa.data.captions import caption_rng, draw_caption
from lafa.data.tario import add_member, atomic_tar, remove_stale_temporaries

SPLITS = ("train", "val", "test")
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


def split_of(item: Item, val_fraction: float, test_fraction: float) -> str:
    """The source's own split if it has one, else a stable hash of (source, id): same id -> same split."""
    if item.split:
        return item.split
    u = int.from_bytes(hashlib.sha1(f"{item.source}:{item.id}".encode()).digest()[:8], "big") / 2**64
    return "test" if u < test_fraction else "val" if u < test_fraction + val_fraction else "train"


def file_header(item: Item) -> dict:
    """Duration and a content hash (sha256 of the file bytes), or the reason the file cannot be used."""
    try:
        data = Path(item.path).read_bytes()
        if not data:
            return {"error": "empty file"}
        info = sf.info(str(item.path))
        if info.frames <= 0:
            return {"error": "no samples"}
        return {"seconds": info.frames / info.samplerate, "sha256": hashlib.sha256(data).hexdigest()}
    except Exception as exc:  # corrupt headers: libsndfile raises several types
        return {"error": f"unreadable: {exc}"}


def sample_key(item: Item, chunk: int) -> str:
    """A WebDataset key (no dots: webdataset splits the extension at the first one)."""
    safe = "".join(c if c.isalnum() or c in "-_" else "-" for c in item.id)
    return f"{item.source}_{safe}_{chunk:03d}"


def write_shard(task: dict) -> dict:
    """Decode, chunk and encode every item of one planned shard; atomic write; returns the state record."""
    torch.set_num_threads(1)
    stats: dict = {"fingerprint": task["fingerprint"], "chunks": 0, "samples": 0, "files": 0, "skipped": [],
                   "dropped_chunks": [], "per_source": defaultdict(lambda: {"files": 0, "chunks": 0, "samples": 0})}
    with atomic_tar(task["path"]) as tar:  # a shard appears complete or not at all
        _write_members(task, tar, stats)
    stats["per_source"] = dict(stats["per_source"])
    state = Path(task["state"])
    state.with_suffix(".tmp").write_text(json.dumps(stats, sort_keys=True, indent=1))
    os.replace(state.with_suffix(".tmp"), state)
    return stats


def _write_members(task: dict, tar: tarfile.TarFile, stats: dict) -> None:
    settings: ChunkSettings = task["chunk"]
    for entry in task["items"]:
        item: Item = entry["item"]
        try:
            audio = decode(item.path, settings)
        except SkipFile as exc:
            stats["skipped"].append({"source": item.source, "id": item.id, "path": str(item.path),
                                     "reason": str(exc)})
            continue
        chunks, dropped = split_chunks(audio, settings)
        stats["dropped_chunks"] += [{"source": item.source, "id": item.id, "reason": r} for r in dropped]
        src = stats["per_source"][item.source]
        stats["files"] += 1
        src["files"] += 1
        for i, (offset, piece) in enumerate(chunks):
            key = sample_key(item, i)
            meta = {"key": key, "id": item.id, "source": item.source, "chunk": i, "num_chunks": len(chunks),
                    "sample_rate": settings.sample_rate, "channels": settings.channels,
                    **chunk_metadata(offset, piece.shape[-1], audio.shape[-1], settings.sample_rate),
                    "caption": draw_caption(item.metadata, caption_rng(task["seed"], key)),
                    "license": item.license, "path": str(entry["rel_path"]), "metadata": item.metadata}
            add_member(tar, f"{key}.flac", encode_flac(piece, settings))
            add_member(tar, f"{key}.json", json.dumps(meta, sort_keys=True, ensure_ascii=False).encode())
            stats["chunks"] += 1
            stats["samples"] += piece.shape[-1]
            src["chunks"] += 1
            src["samples"] += piece.shape[-1]


def plan_shards(items: list[Item], headers: list[dict], s: BuildSettings) -> dict[str, list[list[int]]]:
    """Per split, consecutive runs of item indices whose estimated FLAC size reaches shard_bytes."""
    per_split: dict[str, list[list[int]]] = {k: [] for k in SPLITS}
    sizes = {k: 0.0 for k in SPLITS}
    for idx, (item, head) in enumerate(zip(items, headers, strict=True)):
        split = split_of(item, s.val_fraction, s.test_fraction)
        est = head["seconds"] * s.chunk.sample_rate * s.chunk.channels * 2 * FLAC_RATIO
        if not per_split[split] or sizes[split] >= s.shard_bytes:
            per_split[split].append([])
            sizes[split] = 0.0
        per_split[split][-1].append(idx)
        sizes[split] += est
    return per_split


def _fingerprint(entries: list[dict], s: BuildSettings) -> str:
    h = hashlib.sha256(json.dumps([asdict(s.chunk), s.seed], sort_keys=True).encode())
    for e in entries:
        h.update(f"{e['item'].source}:{e['item'].id}:{e['sha256']}:{json.dumps(e['item'].metadata, sort_keys=True)}"
                 f":{e['item'].license}".encode())
    return h.hexdigest()


def _pool(jobs: int):
    return get_context("fork").Pool(jobs) if jobs > 1 else None


def build(items: list[Item], s: BuildSettings, rejected: list[dict], roots: dict[str, Path]) -> dict:
    """Headers and content dedup, shard plan, parallel shard writing (resuming), manifest. Returns it."""
    out = Path(s.out)
    state_dir = out / ".state"
    state_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(out)
    jobs = s.jobs or os.cpu_count() or 1
    items = sorted(items, key=lambda it: (it.source, it.id))
    pool = _pool(jobs)
    try:
        headers = list(tqdm((pool.imap if pool else map)(file_header, items), total=len(items),
                            desc="scan", disable=None))
        skipped = list(rejected)
        kept, kept_headers, seen = [], [], {}
        for item, head in zip(items, headers, strict=True):
            ref = {"source": item.source, "id": item.id, "path": str(item.path)}
            if "error" in head:
                skipped.append({**ref, "reason": head["error"]})
            elif head["sha256"] in seen:
                skipped.append({**ref, "reason": f"duplicate content of {seen[head['sha256']]}"})
            else:
                seen[head["sha256"]] = f"{item.source}:{item.id}"
                kept.append(item)
                kept_headers.append(head)
        tasks = []
        for split, groups in plan_shards(kept, kept_headers, s).items():
            for n, group in enumerate(groups):
                name = f"{s.prefix}{split}-{n:06d}.tar"
                entries = [{"item": kept[i], "sha256": kept_headers[i]["sha256"],
                            "rel_path": _relative(kept[i].path, roots.get(kept[i].source))} for i in group]
                tasks.append({"path": str(out / name), "state": str(state_dir / f"{name}.json"), "split": split,
                              "items": entries, "chunk": s.chunk, "seed": s.seed,
                              "fingerprint": _fingerprint(entries, s)})
        todo = [t for t in tasks if not _finished(t)]
        for stats in tqdm((pool.imap_unordered if pool else map)(write_shard, todo), total=len(todo),
                          desc="shards", disable=None):
            del stats
    finally:
        if pool:
            pool.close()
            pool.join()
    manifest = _manifest(tasks, skipped, s, len(items) + len(rejected))
    tmp = out / ".manifest.json.tmp"
    tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True))
    os.replace(tmp, out / "manifest.json")
    return manifest


def _relative(path: Path, root: Path | None) -> str:
    try:
        return Path(path).resolve().relative_to(Path(root).resolve()).as_posix() if root else Path(path).name
    except ValueError:
        return Path(path).name


def _finished(task: dict) -> bool:
    state = Path(task["state"])
    if not (Path(task["path"]).is_file() and state.is_file()):
        return False
    try:
        return json.loads(state.read_text()).get("fingerprint") == task["fingerprint"]
    except json.JSONDecodeError:
        return False


def _manifest(tasks: list[dict], skipped: list[dict], s: BuildSettings, listed: int) -> dict:
    sr = s.chunk.sample_rate
    splits = {k: {"shards": [], "files": 0, "chunks": 0, "hours": 0.0} for k in SPLITS}
    sources: dict[str, dict] = defaultdict(lambda: {"files": 0, "chunks": 0, "hours": 0.0, "skipped": 0})
    skipped = list(skipped)
    dropped = []
    for t in tasks:
        st = json.loads(Path(t["state"]).read_text())
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
    return {"files_listed": listed, "files_kept": sum(v["files"] for v in splits.values()),
            "chunks": sum(v["chunks"] for v in splits.values()),
            "hours": sum(v["hours"] for v in splits.values()), "splits": splits, "sources": dict(sources),
            "skipped": sorted(skipped, key=lambda d: (d["source"], d["id"])), "dropped_chunks": dropped,
            "settings": {**asdict(s.chunk), "shard_bytes": s.shard_bytes, "val_fraction": s.val_fraction,
                         "test_fraction": s.test_fraction, "seed": s.seed}}
