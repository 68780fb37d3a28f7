"""The record of what made an output folder's shards: `OUT/.state/{prefix}build.json` holds the build's settings
and sources with their fingerprint, checked before a build touches anything: the same record resumes, another
is refused unless `--overwrite` (docs/data.md, "One build per folder")."""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lafa
from data_prep.plan import shard_name_pattern
from lafa.errors import BadInput
from lafa.fingerprint import read_record

if TYPE_CHECKING:
    from data_prep.settings import BuildSettings

LENGTH = 16  # hex digits of the fingerprint shown and compared (as lafa.fingerprint)


def build_record(s: BuildSettings, roots: dict[str, Path]) -> dict[str, Any]:
    """{"settings", "sources", "fingerprint", "lafa_version"} of a build; the fingerprint covers the first two."""
    settings = {**s.recorded(), "size_estimate": s.size_estimate, "prefix": s.prefix}
    sources = {**{f"{name} folder": str(Path(root).resolve()) for name, root in sorted(roots.items())},
               **{k: v for k, v in sorted(s.inputs.items())}}
    made = {"settings": settings, "sources": json.loads(json.dumps(sources, default=str))}
    digest = hashlib.sha256(json.dumps(made, sort_keys=True).encode()).hexdigest()[:LENGTH]
    return {**made, "fingerprint": digest, "lafa_version": lafa.__version__}


def record_path(out: Path, prefix: str) -> Path:
    return Path(out) / ".state" / f"{prefix}build.json"


def differences(old: dict, new: dict, shown: int = 3) -> str:
    """"chunk_seconds: 30.0 there, 10.0 here; ..." for the first `shown` settings or sources that differ."""
    diffs = []
    for part in ("settings", "sources"):
        a, b = old.get(part) or {}, new.get(part) or {}
        for key in sorted(set(a) | set(b)):
            if a.get(key) != b.get(key):
                diffs.append(f"{key}: {a.get(key, 'unset')} there, {b.get(key, 'unset')} here")
    more = f"; {len(diffs) - shown} more" if len(diffs) > shown else ""
    return "; ".join(diffs[:shown]) + more if diffs else "the record is unreadable"


def _earlier_shards(out: Path, prefix: str) -> bool:
    name = shard_name_pattern(prefix)
    return any(name.fullmatch(p.name) for p in out.glob("*.tar"))


def check_build_record(out: Path, record: dict, overwrite: bool) -> None:
    """Refuse a folder holding shards another build made (BadInput: both fingerprints, what differs, the fix),
    unless overwrite; then write this build's record (atomically) before any shard is written. A record with no
    shard of its prefix beside it (a build stopped while scanning) is replaced."""
    path = record_path(out, record["settings"]["prefix"])
    old = read_record(path)
    if old is not None and old.get("fingerprint") == record["fingerprint"]:
        return  # the same build: resume
    if old is not None and not overwrite and _earlier_shards(out, record["settings"]["prefix"]):
        raise BadInput(f"--out {out}", f"holds shards of another build (its fingerprint {old.get('fingerprint')}, "
                                       f"this build's {record['fingerprint']}; {differences(old, record)})",
                       "pass --overwrite to replace them, or give another --out")
    if old is None and _earlier_shards(out, record["settings"]["prefix"]):
        print(f"data_prep: note: {out} holds shards but no record of the build that made them (written before "
              f"builds kept one); recorded this build's (fingerprint {record['fingerprint']}) in {path}: a later "
              f"build with other settings or sources into it is refused", file=sys.stderr)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(record, indent=1, sort_keys=True))
    os.replace(tmp, path)
