"""The reference side of every metric (`evaluate_folders`): its statistics from a statistics file, a cache that
still matches the reference folder, or the folder itself, and the cache written back."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from lafa.errors import BadInput
from lafa.metrics.caches import files_fingerprint, load_reference_cache, save_reference_cache
from lafa.metrics.folders import audio_files


class ReferenceSide:
    """The reference side of every metric: from a cache file, a cache that still matches, or the folder."""

    def __init__(self, reference: str | Path, stats_cache: str | Path | None):
        self.path = reference = Path(reference)
        self.folder = reference if reference.is_dir() else None
        if self.folder is None and not reference.is_file():
            raise BadInput(f"--reference {reference}", "no such folder or file",
                           "give the folder of reference audio (<id>.<ext>) or a statistics file (.npz) written "
                           "by an earlier run's --stats_cache")
        self.files = audio_files(reference, "--reference") if self.folder else None
        self.fingerprint = files_fingerprint(self.files) if self.files is not None else None
        self.cache_path = Path(stats_cache) if stats_cache else None
        source, option = (reference, "--reference") if self.folder is None else (self.cache_path, "--stats_cache")
        self.entries = {}
        if source is not None and source.is_file():
            try:
                self.entries = load_reference_cache(source)
            except Exception as e:  # numpy raises several types for a file that is not an .npz
                raise BadInput(f"{option} {source}", f"not a lafa reference statistics file ({e})",
                               "give a .npz written by `lafa evaluate --stats_cache`, or the reference audio "
                               "folder" + (" (or delete the file: it is written again)" if self.folder else "")) from e
        self.changed = False

    @property
    def ids(self) -> list[str] | None:
        if self.files is not None:
            return list(self.files)
        stored = [e["reference_ids"] for e in self.entries.values() if e.get("reference_ids") is not None]
        return list(stored[0]) if stored else None

    def check(self, metric: str, key: str) -> None:
        """A statistics file given as the reference must hold `metric` made with these weights and settings."""
        entry = self.entries.get(metric)
        if self.folder is None and (entry is None or entry["key"] != key):
            have = "no entry" if entry is None else "an entry made with other weights or settings"
            raise BadInput(f"--reference {self.path}",
                           f"the statistics file has {have} for {metric} (it holds {sorted(self.entries)}; "
                           f"needed: {key})",
                           "score against the reference audio folder once with --stats_cache FILE, or use the "
                           "weights and settings the file was made with")

    def get(self, metric: str, key: str, compute: Callable[[dict[str, Path]], dict]) -> dict:
        entry = self.entries.get(metric)
        if (
            entry is not None
            and entry["key"] == key
            and (self.files is None or (entry["reference_ids"] == self.ids
                                        and entry.get("reference_files") == self.fingerprint))
        ):
            return entry["arrays"]
        self.check(metric, key)
        arrays = compute(self.files)
        self.entries[metric] = {"key": key, "reference_ids": self.ids, "reference_files": self.fingerprint,
                                "arrays": arrays}
        self.changed = True
        return arrays

    def save(self) -> None:
        if self.cache_path is not None and self.changed:
            save_reference_cache(self.cache_path, self.entries)
