"""What a build leaves beside its shards: manifest.json's counts (`manifest`), and earlier builds' shards that the
new plan no longer lists moved out of the way (`quarantine_stale`)."""

from __future__ import annotations

import json
import os
from collections import Counter, defaultdict
from pathlib import Path
from typing import TYPE_CHECKING

from data_prep.plan import SPLITS, shard_name_pattern

if TYPE_CHECKING:
    from data_prep.settings import BuildSettings

QUARANTINE = ".stale"  # a hidden folder: no `*.tar` glob or folder spec of the output folder reads it


def quarantine_stale(out: Path, current: set[str], prefix: str = "") -> list[str]:
    """Move shards of earlier builds with this prefix (`{prefix}{split}-NNNNNN.tar`) that the new manifest
    does not list to out/.stale/, so `{prefix}train-*.tar` reads only this build. Other tars are left alone
    (another prefix's build, the user's own files)."""
    name = shard_name_pattern(prefix)
    moved = []
    for tar in sorted(out.glob("*.tar")):
        if tar.name in current or not name.fullmatch(tar.name):
            continue
        (out / QUARANTINE).mkdir(exist_ok=True)
        os.replace(tar, out / QUARANTINE / tar.name)
        (out / ".state" / f"{tar.name}.json").unlink(missing_ok=True)
        moved.append(tar.name)
    return moved


def manifest(tasks: list[dict], skipped: list[dict], s: BuildSettings, listed: int) -> dict:
    sr = s.chunk.sample_rate
    splits = {k: {"shards": [], "files": 0, "chunks": 0, "hours": 0.0} for k in SPLITS}
    sources: dict[str, dict] = defaultdict(lambda: {"files": 0, "chunks": 0, "hours": 0.0, "skipped": 0})
    skipped = list(skipped)
    dropped = []
    copied: Counter[str] = Counter()
    for t in tasks:
        st = json.loads(Path(t["state"]).read_text())
        copied.update(st.get("copied", {}))
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
    categories = Counter(sk.get("category", "other") for sk in skipped)
    chunks = sum(v["chunks"] for v in splits.values())
    return {"files_listed": listed, "files_kept": kept, "files_skipped": len(skipped),
            "skipped_by_category": dict(sorted(categories.items())), "chunks": chunks,
            # how the chunks' audio is stored: encoded (to FLAC, or WAV: member_format), or the source's bytes
            "stored": {s.chunk.member_format: chunks - sum(copied.values()), "copy": dict(sorted(copied.items()))},
            "hours": sum(v["hours"] for v in splits.values()), "splits": splits, "sources": dict(sources),
            "skipped": sorted(skipped, key=lambda d: (d["source"], d["id"])), "dropped_chunks": dropped,
            "settings": s.recorded()}
