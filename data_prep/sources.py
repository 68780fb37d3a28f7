"""Metadata readers (FreeSound/FSD50K CSVs, FMA tracks.csv, generic folders) and the licence filter.

Every reader returns `Item`s: one audio file with its raw metadata. The shard writer decides nothing
about sources; all source knowledge lives here.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff")
# Sec. 5: "all under CC-0, CC-BY, or CC-Sampling+"
ALLOWED_LICENSES = ("CC0", "CC-BY", "CC-Sampling+")
SPLIT_NAMES = {"train": "train", "training": "train", "dev": "train", "val": "val", "valid": "val",
               "validation": "val", "test": "test", "eval": "test", "evaluation": "test"}


@dataclass
class Item:
    source: str  # reader name, e.g. "fsd", "fma", "folder"
    id: str  # unique within its source
    path: Path
    metadata: dict = field(default_factory=dict)  # raw fields; `kind` is "music" or "sound"
    license: str | None = None  # raw licence text as the source gives it
    split: str | None = None  # the source's own split (train/val/test) or None: hash split


def license_class(text: str | None) -> str | None:
    """Normalise a licence string or URL to CC0 / CC-BY / CC-Sampling+ / another CC tag; None if unknown."""
    if not text:
        return None
    t = str(text).lower().replace("_", " ")
    if "sampling+" in t or "sampling plus" in t or "sampling-plus" in t:
        return "CC-Sampling+"
    if "zero" in t or "cc0" in t or "commons 0" in t or "publicdomain" in t or "public domain" in t:
        return "CC0"
    nc = "noncommercial" in t or "non-commercial" in t or "non commercial" in t or "by-nc" in t
    nd = "noderiv" in t or "no deriv" in t or "no-deriv" in t or "-nd" in t
    sa = "sharealike" in t or "share alike" in t or "share-alike" in t or "-sa" in t
    if "attribution" in t or re.search(r"(^|[/ -])by([/ -]|$)", t):
        return "CC-BY" + ("-NC" if nc else "") + ("-ND" if nd else "") + ("-SA" if sa else "")
    if "sampling" in t:
        return "CC-Sampling"
    return None


def read_id_list(paths: Iterable[str | Path]) -> set[str]:
    """Allow-list files: one id per line, or a CSV whose first column (or `id` column) holds the ids."""
    ids: set[str] = set()
    for path in paths:
        with open(path, newline="") as f:
            rows = list(csv.reader(f))
        if not rows:
            continue
        col = 0
        header = [c.strip().lower() for c in rows[0]]
        for name in ("id", "fname", "track_id", "freesound_id"):
            if name in header:
                col = header.index(name)
                rows = rows[1:]
                break
        ids.update(r[col].strip() for r in rows if r and r[col].strip() and not r[col].startswith("#"))
    return ids


def _index_audio(root: Path) -> dict[str, Path]:
    """File stem -> path for every audio file under root (first in sorted order wins)."""
    index: dict[str, Path] = {}
    for p in sorted(root.rglob("*")):
        if p.suffix.lower() in AUDIO_EXTENSIONS and p.is_file():
            index.setdefault(p.stem, p)
    return index


def _first(row: dict, names: tuple[str, ...]) -> str:
    for n in names:
        if row.get(n, "") not in ("", None):
            return str(row[n]).strip()
    return ""


def _split(value: str | None) -> str | None:
    return SPLIT_NAMES.get(str(value).strip().lower()) if value else None


def read_fsd(audio_dir: str | Path, tables: Iterable[str | Path], name: str = "fsd") -> list[Item]:
    """FSD50K-style FreeSound: an audio folder (`<id>.wav`) and CSVs (or FSD50K's clips_info JSON) holding
    file id (`fname`/`id`), labels, licence and optional description/title/split, merged by id."""
    rows: dict[str, dict] = {}
    for table in tables:
        table = Path(table)
        if table.suffix == ".json":  # FSD50K dev_clips_info: {id: {title, description, tags, license}}
            for key, info in json.loads(table.read_text()).items():
                rows.setdefault(str(key), {}).update({k.lower(): v for k, v in info.items()})
            continue
        with open(table, newline="") as f:
            for row in csv.DictReader(f):
                row = {(k or "").strip().lower(): v for k, v in row.items()}
                key = _first(row, ("fname", "id", "file_id", "freesound_id"))
                if not key:
                    raise ValueError(f"{table}: row without an id column (fname/id): {row}")
                rows.setdefault(key, {}).update({k: v for k, v in row.items() if v not in ("", None)})
    audio = _index_audio(Path(audio_dir))
    items = []
    for key, row in sorted(rows.items()):
        if key not in audio:
            continue
        labels = row.get("labels") or row.get("tags") or ""
        meta = {"kind": "sound", "labels": labels, "description": row.get("description", ""),
                "title": row.get("title", "")}
        items.append(Item(name, key, audio[key], meta, _first(row, ("license", "licence")) or None,
                          _split(row.get("split"))))
    return items


def _read_fma_header(rows: list[list[str]]) -> tuple[list[str], int]:
    """FMA's tracks.csv has a multi-index header: (top, field) rows, plus a third `track_id` row in the
    original release. Returns 'top.field' column names and the number of header rows."""
    top, fields = rows[0], rows[1]
    n_header = 3 if len(rows) > 2 and rows[2] and rows[2][0] == "track_id" and not any(rows[2][1:]) else 2
    names, current = [], ""
    for i, (t, f) in enumerate(zip(top, fields, strict=False)):
        current = t or current
        names.append("track_id" if i == 0 else f"{current}.{f}")
    return names, n_header


def _year(*dates: str) -> str:
    for d in dates:
        m = re.match(r"\s*(\d{4})", d or "")
        if m:
            return m.group(1)
    return ""


def read_fma(audio_dir: str | Path, tracks_csv: str | Path, genres_csv: str | Path | None = None,
             name: str = "fma") -> list[Item]:
    """FMA: an audio tree (`000/000002.mp3`) and tracks.csv (title, artist, album, genre(s), dates, licence)."""
    with open(tracks_csv, newline="") as f:
        rows = list(csv.reader(f))
    if len(rows) < 3:
        raise ValueError(f"{tracks_csv}: too short for FMA's multi-row header")
    names, n_header = _read_fma_header(rows)
    genre_titles: dict[str, str] = {}
    if genres_csv:
        with open(genres_csv, newline="") as f:
            genre_titles = {r["genre_id"]: r["title"] for r in csv.DictReader(f)}
    audio = {stem.lstrip("0") or "0": p for stem, p in _index_audio(Path(audio_dir)).items()}
    items = []
    for raw in rows[n_header:]:
        row = dict(zip(names, raw, strict=False))
        tid = row["track_id"].strip().lstrip("0") or "0"
        if tid not in audio:
            continue
        genre = row.get("track.genre_top", "")
        if not genre and genre_titles:
            ids = re.findall(r"\d+", row.get("track.genres", ""))
            genre = ", ".join(genre_titles[i] for i in ids if i in genre_titles)
        meta = {"kind": "music", "title": row.get("track.title", ""), "artist": row.get("artist.name", ""),
                "album": row.get("album.title", ""), "genre": genre,
                "year": _year(row.get("track.date_recorded", ""), row.get("album.date_released", ""),
                              row.get("track.date_created", ""))}
        items.append(Item(name, tid, audio[tid], meta, row.get("track.license") or None,
                          _split(row.get("set.split"))))
    return items


def read_folder(root: str | Path, name: str = "folder") -> list[Item]:
    """Any audio under root. Metadata from a sidecar (`x.wav.json` or `x.json`) or from rows of CSV files in
    root keyed by `file`/`path`/`filename` (relative path) or `id` (file stem)."""
    root = Path(root)
    table: dict[str, dict] = {}
    for csv_path in sorted(root.glob("*.csv")):
        with open(csv_path, newline="") as f:
            for row in csv.DictReader(f):
                row = {(k or "").strip().lower(): v for k, v in row.items() if v not in ("", None)}
                key = _first(row, ("file", "path", "filename", "id"))
                if key:
                    table[key] = row
    items = []
    for path in sorted(root.rglob("*")):
        if path.suffix.lower() not in AUDIO_EXTENSIONS or not path.is_file():
            continue
        rel = path.relative_to(root)
        meta: dict = {}
        for side in (path.with_name(path.name + ".json"), path.with_suffix(".json")):
            if side.is_file():
                meta = json.loads(side.read_text())
                break
        meta = {**table.get(rel.with_suffix("").as_posix(), {}), **table.get(path.stem, {}),
                **table.get(rel.as_posix(), {}), **meta}
        item_id = re.sub(r"[^A-Za-z0-9_-]", "-", rel.with_suffix("").as_posix().replace("/", "_"))
        lic = meta.pop("license", None) or meta.pop("licence", None)
        split = _split(meta.pop("split", None))
        for k in ("file", "path", "filename"):
            meta.pop(k, None)
        items.append(Item(name, item_id, path, meta, lic, split))
    return items


def license_filter(items: list[Item], allow_ids: set[str] | None, keep_unlicensed: bool = False,
                   allowed: tuple[str, ...] = ALLOWED_LICENSES) -> tuple[list[Item], list[dict]]:
    """Keep CC0 / CC-BY / CC-Sampling+ (Sec. 5). With an allow-list, an id must be on it instead."""
    kept, rejected = [], []
    for it in items:
        if allow_ids is not None:
            ok = it.id in allow_ids or f"{it.source}:{it.id}" in allow_ids
            reason = "not on the licence allow-list"
        else:
            cls = license_class(it.license)
            ok = cls in allowed or (cls is None and not it.license and keep_unlicensed)
            reason = f"licence {it.license!r} ({cls or 'unknown'}) not in {', '.join(allowed)}"
        if ok:
            it.license = license_class(it.license) or it.license
            kept.append(it)
        else:
            rejected.append({"source": it.source, "id": it.id, "path": str(it.path), "reason": reason})
    return kept, rejected


def dedup_ids(items: list[Item]) -> tuple[list[Item], list[dict]]:
    """Drop repeated (source, id) pairs, keeping the first."""
    seen: set[tuple[str, str]] = set()
    kept, dropped = [], []
    for it in items:
        if (it.source, it.id) in seen:
            dropped.append({"source": it.source, "id": it.id, "path": str(it.path), "reason": "duplicate id"})
        else:
            seen.add((it.source, it.id))
            kept.append(it)
    return kept, dropped
