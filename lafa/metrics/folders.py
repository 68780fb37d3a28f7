"""Folders of audio as the evaluation sees them: one file per prompt id (the file stem)."""

from __future__ import annotations

from pathlib import Path

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".opus")


def audio_files(folder: str | Path) -> dict[str, Path]:
    """{id: path} of the audio files directly inside `folder`, sorted by id; ids (stems) must be unique."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"audio folder not found: {folder}")
    files: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() not in AUDIO_SUFFIXES or not path.is_file():
            continue
        if path.stem in files:
            raise ValueError(f"two audio files share the id {path.stem!r} in {folder}")
        files[path.stem] = path
    if not files:
        raise ValueError(f"no audio files ({', '.join(AUDIO_SUFFIXES)}) in {folder}")
    return files
