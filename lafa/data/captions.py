"""Captions from raw metadata: Appendix B for music, labels/description for sound effects.

The shards keep the raw metadata, so the loader draws a fresh caption every epoch (train) while
data_prep stores one fixed draw per clip (used for val/test). One function serves both.
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping
from typing import Any

# Appendix B: "a random subset of the fields year, genre, album, title, and artist"
MUSIC_FIELDS = ("year", "genre", "album", "title", "artist")
# lafa extension: extra musical descriptors (the demo corpus has them; FMA has none) drawn like the others
EXTRA_MUSIC_FIELDS = ("instruments", "tempo", "key", "mood")
KEEP_PROBABILITY = 0.5  # each non-genre field present in the metadata is kept with this probability
CASINGS = {"original": str, "lower": str.lower, "upper": str.upper, "title": str.title}


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return ", ".join(_text(v) for v in value if _text(v))
    text = str(value).strip()
    return "" if text.lower() in ("nan", "none") else text


def music_caption(metadata: Mapping[str, Any], rng: random.Random) -> str:
    """Appendix B: random field subset (genre always kept), shuffled order, random casing, and half the
    time `field: value` pairs joined by commas, half the time the values alone."""
    fields = [(f, _text(metadata.get(f))) for f in MUSIC_FIELDS + EXTRA_MUSIC_FIELDS]
    fields = [(f, v) for f, v in fields if v]
    kept = [(f, v) for f, v in fields if f == "genre" or rng.random() < KEEP_PROBABILITY]
    if not kept and fields:  # no genre and nothing drawn: keep one field so the caption is never empty
        kept = [rng.choice(fields)]
    rng.shuffle(kept)
    with_labels = rng.random() < 0.5
    casing = CASINGS[rng.choice(list(CASINGS))]
    return casing(", ".join(f"{f}: {v}" if with_labels else v for f, v in kept))


def _labels(value: Any) -> list[str]:
    if isinstance(value, (list, tuple)):
        items = [_text(v) for v in value]
    else:
        items = re.split(r"[,;|]", _text(value))
    return [s.strip().replace("_", " ") for s in items if s.strip()]


def sound_caption(metadata: Mapping[str, Any], rng: random.Random) -> str:
    """FreeSound clips: the description half the time (when there is one), otherwise the labels in random
    order joined by commas (lafa's choice; the paper gives no FreeSound recipe)."""
    description = _text(metadata.get("description"))
    labels = _labels(metadata.get("labels") or metadata.get("tags"))
    if description and (not labels or rng.random() < 0.5):
        return re.sub(r"\s+", " ", description)[:300]
    rng.shuffle(labels)
    return ", ".join(labels) or _text(metadata.get("title"))


def draw_caption(metadata: Mapping[str, Any], rng: random.Random) -> str:
    """One caption for a clip: an explicit `caption` field wins; music (`kind: music`, or no kind but a
    genre) follows Appendix B; everything else captions as a sound effect."""
    explicit = _text(metadata.get("caption"))
    if explicit:
        return explicit
    if metadata.get("kind") == "music" or (metadata.get("kind") is None and _text(metadata.get("genre"))):
        return music_caption(metadata, rng)
    return sound_caption(metadata, rng)


def caption_rng(seed: int, key: str, epoch: int = 0) -> random.Random:
    """A generator fixed by (seed, sample key, epoch): reproducible, fresh each epoch."""
    return random.Random(f"{seed}/{epoch}/{key}")
