"""`Item` (one input file and its metadata), collision-free item ids and skip records.

Every input a reader finds becomes an Item; one that cannot be used carries its `problem`, so it reaches the
manifest's skip list instead of vanishing. The build puts each input in exactly one place: the shards or
the skip list.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

# Readable part of a folder item's id, at most this many UTF-8 bytes: with the extension, the hash, the
# source name and the chunk number the tar member name stays within USTAR's 100 bytes whatever the path.
READABLE_BYTES = 40
SPLIT_NAMES = {"train": "train", "training": "train", "dev": "train", "val": "val", "valid": "val",
               "validation": "val", "test": "test", "eval": "test", "evaluation": "test"}
HASH_HEX = 12  # 48 bits of sha1(relative path); ids are checked for uniqueness and lengthened if ever needed


@dataclass
class Item:
    source: str  # reader name, e.g. "fsd", "fma", "folder"
    id: str  # unique within its source; no dots (webdataset keys)
    path: Path  # as found under the user's folder (a symlink stays the link, not its target)
    metadata: dict = field(default_factory=dict)  # raw fields; `kind` is "music" or "sound"
    license: str | None = None  # raw licence text as the source gives it (the filter sets the class)
    split: str | None = None  # the source's own split (train/val/test) or None: hash split
    rel: str | None = None  # path relative to the source's root, recorded in the shards
    problem: str | None = None  # why the item cannot be used: it goes to the skip list with this reason
    category: str | None = None  # short class of the problem, for the summary table
    license_text: str | None = None  # the raw licence text, kept when the filter replaces `license`
    notes: list[str] = field(default_factory=list)  # things the user should know that do not skip the item


def split_name(value) -> str | None:
    """A source's split column (training/dev/validation/eval, ...) -> train / val / test, or None."""
    return SPLIT_NAMES.get(str(value).strip().lower()) if value else None


def skip_record(item: Item, reason: str | None = None, category: str | None = None) -> dict:
    """The manifest's entry for an input that did not reach the shards."""
    return {"source": item.source, "id": item.id, "path": printable(item.rel or item.path),
            "reason": reason or item.problem or "", "category": category or item.category or "other"}


def _readable(text: str) -> str:
    """Letters, marks and digits of any script kept (NFC), everything else one '-'; the last READABLE_BYTES."""
    out, dash = [], False
    for ch in unicodedata.normalize("NFC", text):
        if unicodedata.category(ch)[0] in "LNM" or ch == "_":
            out.append(ch)
            dash = False
        elif not dash:
            out.append("-")
            dash = True
    slug = re.sub(r"-*_-*", "_", "".join(out)).strip("-_") or "x"
    if len(slug.encode()) > READABLE_BYTES:  # keep the end: the file name says more than the folders
        while len(slug.encode()) > READABLE_BYTES:
            slug = slug[1:]
        cut = re.search(r"[-_]", slug)  # start at a word, not inside one
        slug = slug[cut.end():] if cut and cut.end() < len(slug) else slug
    return slug.strip("-_") or "x"


def folder_item_id(rel: str | PurePosixPath, hex_chars: int = HASH_HEX) -> str:
    """`Artist/Album (Remaster)/01 - Title.wav` -> `Artist_Album-Remaster_01-Title_wav_f77fb29184fc`: readable part,
    extension, and a hash of the whole relative path, so distinct paths never share an id (`日本.wav` and
    `中国.wav`, `take1.wav` and `take1.flac`, `a b.wav` and `a-b.wav` differ)."""
    rel = PurePosixPath(rel)
    stem = rel.with_suffix("").as_posix().replace("/", "_")
    ext = _readable(rel.suffix.lstrip(".").lower()) if rel.suffix else "noext"
    # the bytes as on disk: NFC and NFD spellings of one name are two files on Linux, and keep two ids
    digest = hashlib.sha1(rel.as_posix().encode("utf-8", "surrogateescape")).hexdigest()[:hex_chars]
    return f"{_readable(stem)}_{ext[:8]}_{digest}"


def unique_folder_ids(rels: list[str]) -> dict[str, str]:
    """relative path -> id for one folder; a (never yet seen) 48-bit hash collision gets the full hash."""
    ids = {rel: folder_item_id(rel) for rel in rels}
    counts = Counter(ids.values())
    return {rel: folder_item_id(rel, hex_chars=40) if counts[i] > 1 else i for rel, i in ids.items()}


def printable(path: str | Path) -> str:
    """A path as valid UTF-8 text (undecodable bytes of a file name shown as \\xNN) for JSON and messages."""
    return str(path).encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def relative_to(path: Path, root: Path | None) -> str:
    """The path as the user laid it out under root (no symlink resolution; a symlink keeps its own folders);
    its name when it is not under root or there is none."""
    try:
        return Path(path).relative_to(root).as_posix() if root else Path(path).name
    except ValueError:
        return Path(path).name
