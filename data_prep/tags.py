"""Embedded metadata (tags inside audio files) -> lafa's metadata fields, with mutagen.

mutagen reads Vorbis comments (FLAC, Ogg Vorbis, Opus), ID3 (MP3, and ID3 chunks in WAV/AIFF), MP4 atoms,
APEv2 (WavPack, Monkey's Audio, Musepack) and ASF. libsndfile's own metadata (RIFF INFO chunks of WAV files,
AIFF text chunks) fills in what mutagen finds nothing for. Fields: title, artist, album, genre, year,
license, copyright.
"""

from __future__ import annotations

import re
from pathlib import Path

import mutagen
import soundfile as sf

from lafa.audio import sf_source

FIELDS = ("title", "artist", "album", "genre", "year", "license", "copyright")
RIFF_AIFF = (".wav", ".wave", ".w64", ".rf64", ".aif", ".aiff", ".aifc", ".caf")  # text chunks libsndfile reads

# lower-cased tag keys of Vorbis comments, APEv2 and ASF -> field
_TEXT_KEYS = {
    "title": "title", "artist": "artist", "album": "album", "genre": "genre", "date": "year", "year": "year",
    "originaldate": "year", "license": "license", "licence": "license", "copyright": "copyright",
    "albumartist": "artist", "album artist": "artist", "wm/albumtitle": "album", "author": "artist",
    "wm/genre": "genre", "wm/year": "year", "wm/albumartist": "artist",
}
# ID3 frame ids -> field (TXXX:LICENSE and WCOP, the copyright/legal URL, carry licences)
_ID3 = {"TIT2": "title", "TPE1": "artist", "TPE2": "artist", "TALB": "album", "TCON": "genre", "TDRC": "year",
        "TYER": "year", "TDOR": "year", "TCOP": "copyright", "WCOP": "license", "TXXX:LICENSE": "license",
        "TXXX:LICENCE": "license"}
# MP4 atoms -> field
_MP4 = {"\xa9nam": "title", "\xa9ART": "artist", "aART": "artist", "\xa9alb": "album", "\xa9gen": "genre",
        "\xa9day": "year", "cprt": "copyright", "----:com.apple.iTunes:LICENSE": "license"}


def _text(value) -> str:
    if isinstance(value, str):
        return value.strip("\x00 ").strip()
    if isinstance(value, (list, tuple)):
        return "; ".join(t for t in (_text(v) for v in value) if t)
    if isinstance(value, bytes):  # MP4 freeform atoms
        return value.decode("utf-8", "replace").strip("\x00 ")
    if hasattr(value, "genres"):  # ID3 TCON: "(17)" -> "Rock"
        return "; ".join(value.genres)
    if hasattr(value, "url"):  # ID3 W*** frames
        return str(value.url).strip()
    if hasattr(value, "text"):  # ID3 text frames (a list) and ID3TimeStamp (a str)
        return _text(value.text if isinstance(value.text, str) else list(value.text))
    return str(value).strip("\x00 ").strip()


def _put(out: dict, field: str, value) -> None:
    text = _text(value)
    if field == "year":
        m = re.search(r"\d{4}", text)
        text = m.group(0) if m else ""
    if text and not out.get(field):
        out[field] = text


def _from_mutagen(f) -> dict:
    out: dict = {}
    tags = f.tags
    if tags is None:
        return out
    kind = type(tags).__name__
    if kind == "ID3" or hasattr(tags, "getall"):
        for frame_id, field in _ID3.items():
            for frame in tags.getall(frame_id):
                _put(out, field, frame)
        for frame in tags.getall("TXXX"):  # case-insensitive TXXX descriptions
            if frame.desc.lower() in ("license", "licence", "copyright"):
                _put(out, "license" if frame.desc.lower() != "copyright" else "copyright", frame)
    elif kind == "MP4Tags":
        for atom, field in _MP4.items():
            if atom in tags:
                _put(out, field, tags[atom])
    else:  # Vorbis comments (list of pairs or dict-like), APEv2, ASF
        return _from_keys(tags.items())
    return out


def _from_keys(pairs) -> dict:
    """Fields from (key, value) pairs whose lower-cased keys _TEXT_KEYS names."""
    out: dict = {}
    for key, value in pairs:
        field = _TEXT_KEYS.get(str(key).lower())
        if field:
            _put(out, field, value)
    return out


def _from_soundfile(path: Path) -> dict:
    """RIFF INFO / AIFF text chunks, which mutagen does not read."""
    try:
        with sf.SoundFile(sf_source(path)) as f:
            meta = f.copy_metadata()
    except Exception:  # not decodable by libsndfile: the decoder reports the file later
        return {}
    return _from_keys(meta.items())  # title, artist, album, genre, date, license, copyright (and unused ones)


def read_tags(path: str | Path) -> tuple[dict, str | None]:
    """(fields found, problem) for one file; problem names a tag block mutagen could not parse (the audio may
    still decode, so this is a note, not a skip)."""
    path = Path(path)
    out: dict = {}
    problem = None
    try:
        f = mutagen.File(str(path))
        if f is not None:
            out = _from_mutagen(f)
    except Exception as exc:  # mutagen raises its own error per format on damaged tag blocks
        problem = f"unreadable tags: {type(exc).__name__}: {exc}"
    if path.suffix.lower() in RIFF_AIFF:
        for field, value in _from_soundfile(path).items():
            out.setdefault(field, value)
    return {k: out[k] for k in FIELDS if out.get(k)}, problem


def audio_kind(path: str | Path) -> str | None:
    """mutagen's name for the file's format (e.g. "WavPack", "MP4") when it recognises one, else None."""
    try:
        f = mutagen.File(str(path))
    except Exception:
        return None
    return type(f).__name__ if f is not None else None
