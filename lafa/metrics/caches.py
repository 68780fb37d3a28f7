"""Caches of the evaluation: per-file embeddings keyed by file content and model, and reference statistics files.

Every entry is keyed by what made it (the file's content or the reference files' fingerprint, the model's
weights hash, its settings, lafa's version), so an edited reference file or another lafa version recomputes
it instead of reusing stale numbers.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

import lafa


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def files_fingerprint(files: dict[str, Path]) -> str:
    """16 hex digits over every (id, size, modification time) of a reference folder's files: an added, removed,
    renamed or edited file changes it (without reading the audio)."""
    h = hashlib.sha256()
    for name in sorted(files):
        st = os.stat(files[name])
        h.update(f"{name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def save_reference_cache(path: str | Path, entries: dict[str, dict]) -> None:
    """entries: metric -> {"key": str, "reference_ids": [...], "reference_files": files_fingerprint or None,
    "arrays": {name: array}} as one .npz, with lafa's version."""
    arrays = {f"{m}__{a}": np.asarray(v) for m, e in entries.items() for a, v in e["arrays"].items()}
    manifest = {m: {"key": e["key"], "reference_ids": e["reference_ids"],
                    "reference_files": e.get("reference_files"), "lafa_version": e.get("lafa_version", lafa.__version__)}
                for m, e in entries.items()}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        np.savez(f, manifest=np.asarray(json.dumps(manifest)), **arrays)


def load_reference_cache(path: str | Path) -> dict[str, dict]:
    """The entries of a statistics file; an entry another lafa version made (or one without a version) gets that
    version in its key, so it matches no key of this version: recomputed, or refused naming both keys."""
    with np.load(path, allow_pickle=False) as data:
        if "manifest" not in data:
            raise ValueError(f"{path} is not a lafa reference statistics file (no manifest)")
        manifest = json.loads(str(data["manifest"]))
        for e in manifest.values():
            if e.get("lafa_version") != lafa.__version__:
                e["key"] = f"{e['key']} (made by lafa {e.get('lafa_version', 'before 0.1.0')})"
        return {
            m: {**e, "arrays": {k.split("__", 1)[1]: data[k] for k in data.files if k.startswith(f"{m}__")}}
            for m, e in manifest.items()
        }


class EmbeddingCache:
    """Per-file embeddings keyed by the file's content (SHA-256 of its bytes) and the model + settings key.

    A reference set is embedded once: later runs, other generated folders and renamed copies hit the cache;
    an edited file or other weights/settings miss it. `folder=None` caches nothing. Entries are written
    atomically (temporary file, then rename), so an interrupted run leaves no half-written entry.
    """

    def __init__(self, folder: str | Path | None, model_key: str):
        self.folder = Path(folder) if folder is not None else None
        self.model = hashlib.sha256(f"{model_key}\0lafa {lafa.__version__}".encode()).hexdigest()[:16]
        self.computed = 0  # files embedded (cache misses) in this run

    def lookup(self, path: Path) -> tuple[np.ndarray | None, Path | None]:
        """(the cached embedding or None, the entry to store it under; None when nothing is cached)."""
        if self.folder is None:
            return None, None
        entry = self.folder / f"{self.model}-{sha256_file(path)}.npy"
        return (np.load(entry, allow_pickle=False) if entry.is_file() else None), entry

    def store(self, entry: Path | None, value: np.ndarray) -> np.ndarray:
        """Count a computed embedding and write it atomically under `entry` (from lookup)."""
        value = np.asarray(value)
        self.computed += 1
        if entry is not None:
            self.folder.mkdir(parents=True, exist_ok=True)
            tmp = entry.with_suffix(f".tmp{os.getpid()}")
            with open(tmp, "wb") as f:
                np.save(f, value)
            os.replace(tmp, entry)
        return value
