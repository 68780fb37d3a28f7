"""Folders of audio as the evaluation sees them: one file per prompt id (the file stem)."""

from __future__ import annotations

from pathlib import Path

from lafa.errors import BadInput

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".opus")


def audio_files(folder: str | Path, option: str | None = None) -> dict[str, Path]:
    """{id: path} of the audio files directly inside `folder`, sorted by id; ids (stems) must be unique.

    A missing or empty folder and two files of one id are `BadInput` errors naming `option` (`--generated`)."""
    folder = Path(folder)
    where = f"{option} {folder}" if option else str(folder)
    if not folder.is_dir():
        what = "is a file, not a folder" if folder.exists() else "no such folder"
        raise BadInput(where, what, "give the folder that holds the audio files (<id>.wav, <id>.flac, ...)")
    files: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() not in AUDIO_SUFFIXES or not path.is_file():
            continue
        if path.stem in files:
            raise BadInput(where, f"two audio files share the id {path.stem!r} ({files[path.stem].name}, "
                                  f"{path.name})", "keep one file per id (the id is the file name without suffix)")
        files[path.stem] = path
    if not files:
        raise BadInput(where, f"no audio files ({', '.join(AUDIO_SUFFIXES)}) in it",
                       "give the folder the audio was written to (`lafa generate --prompts` or `lafa test` write "
                       "generated/ and reference/)")
    return files
