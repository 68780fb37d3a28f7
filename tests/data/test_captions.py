"""Appendix B caption statistics over many draws, and the FreeSound caption rule."""

import random
import re

from lafa.data.captions import EXTRA_MUSIC_FIELDS, MUSIC_FIELDS, caption_rng, draw_caption

META = {"kind": "music", "year": "1999", "genre": "Jazzhop", "album": "Quiet Rooms", "title": "Paper Boats",
        "artist": "Ines Calder"}


def _parse(caption: str) -> tuple[bool, dict]:
    """(labelled?, field -> present) for a caption of META (values are distinct words, labels are known)."""
    low = caption.lower()
    labelled = bool(re.search(r"\b(year|genre|album|title|artist): ", low))
    present = {f: META[f].lower() in low for f in MUSIC_FIELDS}
    return labelled, present


def test_appendix_b_statistics():
    n = 4000
    rng = random.Random(0)
    counts = {f: 0 for f in MUSIC_FIELDS}
    labelled = orders = 0
    casings = set()
    for _ in range(n):
        cap = draw_caption(META, rng)
        lab, present = _parse(cap)
        labelled += lab
        for f, p in present.items():
            counts[f] += p
        if lab:  # every kept field is labelled, and nothing else is in the caption
            parts = cap.split(", ")
            assert len(parts) == sum(present.values())
            assert all(p.split(": ")[0].lower() in MUSIC_FIELDS for p in parts)
            names = [p.split(": ")[0].lower() for p in parts]
            orders += names != sorted(names, key=MUSIC_FIELDS.index)
        else:
            assert ": " not in cap and len(cap.split(", ")) == sum(present.values())
        casings.add("upper" if cap.isupper() else "lower" if cap.islower() else "title" if cap.istitle() else "mixed")
    assert counts["genre"] == n  # always kept
    for f in ("year", "album", "title", "artist"):
        assert abs(counts[f] / n - 0.5) < 0.03, (f, counts[f] / n)  # binomial sd 0.008
    assert abs(labelled / n - 0.5) < 0.03
    assert orders > 0.3 * labelled  # field order is shuffled
    assert casings >= {"upper", "lower", "title"}


def test_captions_are_deterministic_per_seed_key_and_epoch():
    a = [draw_caption(META, caption_rng(7, f"k{i}", 0)) for i in range(50)]
    assert a == [draw_caption(META, caption_rng(7, f"k{i}", 0)) for i in range(50)]
    assert a != [draw_caption(META, caption_rng(7, f"k{i}", 1)) for i in range(50)]
    assert a != [draw_caption(META, caption_rng(8, f"k{i}", 0)) for i in range(50)]


def test_extra_fields_and_missing_genre():
    meta = {**META, "tempo": "120 bpm", "key": "A minor", "instruments": "piano"}
    rng = random.Random(1)
    caps = [draw_caption(meta, rng).lower() for _ in range(1000)]
    for f in EXTRA_MUSIC_FIELDS[:3]:
        rate = sum(meta[f].lower() in c for c in caps) / 1000
        assert 0.42 < rate < 0.58
    no_genre = {"kind": "music", "title": "Only Title"}
    assert all(draw_caption(no_genre, rng).lower() in ("only title", "title: only title") for _ in range(50))


def test_freesound_captions_use_description_or_labels():
    meta = {"kind": "sound", "labels": "Dog,Bark,Domestic_animals", "description": "A dog barks twice."}
    rng = random.Random(2)
    caps = [draw_caption(meta, rng) for _ in range(2000)]
    desc = sum(c == "A dog barks twice." for c in caps)
    assert abs(desc / 2000 - 0.5) < 0.04
    for c in caps:
        if c != "A dog barks twice.":
            assert sorted(c.split(", ")) == ["Bark", "Dog", "Domestic animals"]
    assert draw_caption({"kind": "sound", "labels": "Rain"}, rng) == "Rain"
    assert draw_caption({"caption": "given text", "genre": "x"}, rng) == "given text"
