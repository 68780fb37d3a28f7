"""Generic folders: every file under the root becomes an Item, to be sharded or skipped with its reason.

Metadata, later sources winning: tags embedded in the file (mutagen), rows of CSV files in the root keyed
by `file`/`path`/`filename` (relative path) or `id` (file stem), and a JSON sidecar (`x.wav.json`, or
`x.json` for every `x.*`).
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

from tqdm import tqdm

from data_prep.items import Item, printable, split_name, unique_folder_ids
from data_prep.licenses import license_class
from data_prep.tags import audio_kind, read_tags

# what libsndfile (soundfile) decodes here
AUDIO_EXTENSIONS = (".wav", ".wave", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".aifc", ".au",
                    ".caf", ".w64", ".rf64")
# audio lafa cannot decode (libsndfile has no decoder for them, and no well-kept PyPI decoder exists for
# WavPack/Monkey's Audio; FFmpeg is not a dependency): skipped with this advice
UNSUPPORTED_AUDIO = {
    ".wv": "WavPack", ".ape": "Monkey's Audio", ".m4a": "MP4 audio (AAC/ALAC)", ".mp4": "MP4", ".aac": "AAC",
    ".alac": "ALAC", ".wma": "Windows Media Audio", ".mpc": "Musepack", ".tta": "TTA", ".dsf": "DSD",
    ".dff": "DSD", ".mka": "Matroska audio", ".webm": "WebM", ".ac3": "AC-3", ".amr": "AMR", ".spx": "Speex",
    ".mid": "MIDI (notes, not audio)", ".midi": "MIDI (notes, not audio)",
}
CONVERT_HINT = "convert it to FLAC first (e.g. `ffmpeg -i IN OUT.flac`, or `wvunpack` for WavPack)"


def walk_files(root: Path) -> tuple[list[Path], list[Path]]:
    """(files, broken links) under root in sorted order, following symlinked folders once (no loops); paths
    stay as the user laid them out (root / link / file), never resolved."""
    files, broken, seen = [], [], set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:  # a link back up the tree
            dirnames[:] = []
            continue
        seen.add(real)
        dirnames.sort()
        for name in sorted(filenames):
            p = Path(dirpath) / name
            (files if p.exists() else broken).append(p)
    return files, broken


def _read_tables(root: Path) -> tuple[dict[str, dict], list[Path]]:
    table: dict[str, dict] = {}
    paths = sorted(p for p in root.glob("*.csv") if p.is_file())
    for csv_path in paths:
        with open(csv_path, newline="", encoding="utf-8-sig") as f:
            for row in csv.DictReader(f):
                row = {(k or "").strip().lower(): v for k, v in row.items() if v not in ("", None)}
                key = next((str(row[n]).strip() for n in ("file", "path", "filename", "id") if row.get(n)), "")
                if key:
                    table[key] = row
    return table, paths


def _sidecar(path: Path, files: set[Path]) -> Path | None:
    sides = (path.with_name(path.name + ".json"), path.with_suffix(".json"))
    return next((side for side in sides if side in files), None)


def _load_sidecar(side: Path) -> tuple[dict | None, str | None]:
    try:
        data = json.loads(side.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return None, f"malformed sidecar {printable(side.name)}: {exc}"
    if not isinstance(data, dict):
        return None, f"malformed sidecar {printable(side.name)}: a JSON {type(data).__name__}, not an object"
    return data, None


def read_folder(root: str | Path, name: str = "folder") -> list[Item]:
    """Every file under root: decodable audio with its metadata, and everything else as an Item with a
    `problem` (unsupported format, not audio, malformed sidecar, sidecar without audio, broken link)."""
    root = Path(root)
    files, broken = walk_files(root)
    table, table_paths = _read_tables(root)
    file_set = set(files)
    audio = [p for p in files if p.suffix.lower() in AUDIO_EXTENSIONS]
    used = set(table_paths)
    rels = {p: p.relative_to(root).as_posix() for p in files + broken}
    ids = unique_folder_ids(list(rels.values()))
    items = []
    for path in tqdm(audio, desc=f"tags {name}", disable=None, unit="file"):
        rel = rels[path]
        item = Item(name, ids[rel], path, rel=rel)
        items.append(item)
        tags, tag_problem = read_tags(path)
        if tag_problem:
            item.notes.append(tag_problem)
        side = _sidecar(path, file_set)
        sidecar: dict = {}
        if side:
            used.add(side)
            data, problem = _load_sidecar(side)
            if problem:  # its licence and split are unknown: using the file without them could be wrong
                item.problem, item.category = problem, "bad sidecar"
                continue
            sidecar = data
        stem_key = Path(rel).with_suffix("").as_posix()
        meta = {**tags, **table.get(stem_key, {}), **table.get(path.stem, {}), **table.get(rel, {}), **sidecar}
        if "kind" not in meta and any(meta.get(k) for k in ("artist", "album", "genre")):
            meta["kind"] = "music"  # tagged songs caption as music (Appendix B) even without a genre
        lic = meta.pop("license", None) or meta.pop("licence", None)
        if not lic and license_class(meta.get("copyright")):  # "(c) 2009 X, CC-BY 3.0" in a copyright tag
            lic = meta["copyright"]
        item.license = str(lic) if lic else None
        split = meta.pop("split", None)
        item.split = split_name(split)
        for k in ("file", "path", "filename"):
            meta.pop(k, None)
        item.metadata = meta
    for path in files:
        if path in used or path.suffix.lower() in AUDIO_EXTENSIONS:
            continue
        rel = rels[path]
        item = Item(name, ids[rel], path, rel=rel)
        if path.suffix.lower() == ".json":
            item.problem, item.category = "sidecar JSON without an audio file of the same name", "orphan sidecar"
        elif fmt := UNSUPPORTED_AUDIO.get(path.suffix.lower()) or audio_kind(path):
            item.problem, item.category = f"unsupported format: {fmt}; {CONVERT_HINT}", "unsupported format"
        else:
            item.problem, item.category = f"not audio ({path.suffix or 'no extension'})", "not audio"
        items.append(item)
    for path in broken:
        rel = rels[path]
        items.append(Item(name, ids[rel], path, rel=rel, problem=f"broken link to {printable(os.readlink(path))}",
                          category="broken link"))
    return items
