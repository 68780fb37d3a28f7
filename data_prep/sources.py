"""Metadata readers (FreeSound/FSD50K CSVs, FMA tracks.csv, generic folders) and the licence filter.

Every reader returns `Item`s: one audio file with its raw metadata. The shard writer decides nothing
about sources; all source knowledge lives here.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterable
from pathlib import Path

from data_prep.folder import AUDIO_EXTENSIONS, read_folder
from data_prep.items import Item, relative_to, skip_record, split_name
from data_prep.licenses import ALLOWED_LICENSES, allowed_class, license_class

__all__ = ["ALLOWED_LICENSES", "AUDIO_EXTENSIONS", "Item", "dedup_ids", "license_class", "license_filter",
           "read_fma", "read_folder", "read_fsd", "read_id_list"]


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


def _index_audio(root: Path) -> tuple[dict[str, Path], list[tuple[str, Path]]]:
    """File stem -> path for every audio file under root (first in sorted order wins), and the (stem, path)
    of every other file with an already taken stem (`123.wav` beside `123.flac`)."""
    index: dict[str, Path] = {}
    repeats = []
    for p in sorted(root.rglob("*")):
        if p.suffix.lower() in AUDIO_EXTENSIONS and p.is_file():
            if p.stem in index:
                repeats.append((p.stem, p))
            else:
                index[p.stem] = p
    return index, repeats


def _unmatched(name: str, root: Path, audio: dict[str, Path], repeats: list[tuple[str, Path]], ids: set[str],
               key=lambda stem: stem) -> list[Item]:
    """Audio files no table row names, and files whose id another file already has: skipped, not lost."""
    out = []
    for stem, path in sorted(audio.items()):
        if key(stem) not in ids:
            out.append(Item(name, key(stem), path, rel=relative_to(path, root), category="no metadata row",
                            problem="no row of the metadata tables names this file (its licence is unknown)"))
    for stem, path in repeats:
        out.append(Item(name, key(stem), path, rel=relative_to(path, root), category="duplicate id",
                        problem=f"another file has id {key(stem)}: {relative_to(audio[stem], root)} is used"))
    return out


def _missing(name: str, key: str, root: Path) -> Item:
    """A table row whose audio file is not under the audio folder (a partial download, a subset release)."""
    return Item(name, key, root / key, rel=key, category="missing audio",
                problem=f"the metadata tables list id {key} but no audio file under {root} has it")


def _first(row: dict, names: tuple[str, ...]) -> str:
    for n in names:
        if row.get(n, "") not in ("", None):
            return str(row[n]).strip()
    return ""


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
    root = Path(audio_dir)
    audio, repeats = _index_audio(root)
    items = _unmatched(name, root, audio, repeats, set(rows))
    for key, row in sorted(rows.items()):
        if key not in audio:
            items.append(_missing(name, key, root))
            continue
        labels = row.get("labels") or row.get("tags") or ""
        meta = {"kind": "sound", "labels": labels, "description": row.get("description", ""),
                "title": row.get("title", "")}
        items.append(Item(name, key, audio[key], meta, _first(row, ("license", "licence")) or None,
                          split_name(row.get("split")), rel=relative_to(audio[key], root)))
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


def _fma_id(text: str) -> str:
    """An FMA track id without its leading zeros (`000002` -> `2`)."""
    return text.lstrip("0") or "0"


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
    root = Path(audio_dir)
    by_stem, repeats = _index_audio(root)
    audio = {_fma_id(stem): p for stem, p in by_stem.items()}
    table = [dict(zip(names, raw, strict=False)) for raw in rows[n_header:]]
    items = _unmatched(name, root, by_stem, repeats, {_fma_id(row["track_id"].strip()) for row in table}, _fma_id)
    for row in table:
        tid = _fma_id(row["track_id"].strip())
        if tid not in audio:
            items.append(_missing(name, tid, root))
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
                          split_name(row.get("set.split")), rel=relative_to(audio[tid], root)))
    return items


def license_filter(items: list[Item], allow_ids: set[str] | None, keep_unlicensed: bool = False,
                   allowed: Iterable[str] = ALLOWED_LICENSES) -> tuple[list[Item], list[dict]]:
    """Keep items with a licence option whose classes are all allowed (default CC0 / CC-BY / CC-Sampling+,
    Sec. 5). With an allow-list, an id must be on it instead. Items with a problem are passed to the skip list."""
    allowed = tuple(allowed)
    kept, rejected = [], []
    for it in items:
        if it.problem:
            rejected.append(skip_record(it))
            continue
        if allow_ids is not None:
            ok = bool({it.id, f"{it.source}:{it.id}", it.rel, f"{it.source}:{it.rel}"} & allow_ids)
            reason = "not on the licence allow-list"
            cls = license_class(it.license)
        else:
            cls = allowed_class(it.license, allowed)
            ok = cls is not None or (not it.license and keep_unlicensed)
            found = license_class(it.license)
            reason = (f"licence {it.license!r} ({found or 'not recognised'}) not in {', '.join(allowed)}"
                      if it.license else "no licence in the tags, sidecar or tables (--keep_unlicensed keeps it)")
        if ok:
            it.license_text, it.license = it.license, cls or it.license
            kept.append(it)
        else:
            rejected.append(skip_record(it, reason, "licence"))
    return kept, rejected


def dedup_ids(items: list[Item]) -> tuple[list[Item], list[dict]]:
    """Drop repeated (source, id) pairs, keeping the first (two sources may not both be named `folder`)."""
    seen: dict[tuple[str, str], Item] = {}
    kept, dropped = [], []
    for it in items:
        first = seen.get((it.source, it.id))
        if first is not None:
            dropped.append(skip_record(it, f"duplicate id: {first.rel or first.path} has the same id", "duplicate id"))
        else:
            seen[(it.source, it.id)] = it
            kept.append(it)
    return kept, dropped
