"""Clips for the analysis from plain audio files: a folder (searched recursively), a file, or a glob.

Every file found is read or skipped with its reason (docs/analysis.md, `--audio`). Each clip is the file's
first `seconds`, read in the file's own rate (only those frames are decoded), converted with lafa.audio.
"""

from __future__ import annotations

import glob
import math
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from tqdm import tqdm

from lafa.audio import convert

# suffixes tried as audio (libsndfile decodes most; the others are reported as undecodable, not ignored)
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".aifc", ".au", ".caf",
                  ".w64", ".rf64", ".wv", ".ape", ".m4a", ".aac", ".wma")


def list_audio_files(specs: str | list[str]) -> tuple[list[Path], list[dict]]:
    """Folders, files or globs -> (audio files in sorted order, [{"path", "reason"}] for everything else)."""
    files, skipped = [], []
    for spec in [specs] if isinstance(specs, str) else specs:
        path = Path(spec)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file())
        elif path.is_file():
            found = [path]
        elif any(c in spec for c in "*?["):
            found = sorted(Path(p) for p in glob.glob(spec, recursive=True) if Path(p).is_file())
        else:
            raise FileNotFoundError(f"audio source {spec!r} does not exist")
        for p in found:
            if p.suffix.lower() in AUDIO_SUFFIXES:
                files.append(p)
            else:
                skipped.append({"path": str(p), "reason": f"not an audio file ({p.suffix or 'no extension'})"})
    return files, skipped


def read_audio_file(path: Path, sample_rate: int, channels: int, seconds: float) -> torch.Tensor:
    """The first `seconds` of one file: (channels, S <= seconds * sample_rate) float32. Raises ValueError with
    the reason when the file cannot be used."""
    try:
        with sf.SoundFile(str(path)) as f:
            sr = f.samplerate
            data = f.read(min(f.frames, math.ceil(seconds * sr)), dtype="float32", always_2d=True)
    except Exception as exc:  # libsndfile raises several types for corrupt or unsupported input
        raise ValueError(f"cannot decode: {exc}") from exc
    if data.shape[0] == 0:
        raise ValueError("holds no samples")
    if not np.isfinite(data).all():
        raise ValueError("decodes to non-finite samples")
    audio = torch.from_numpy(np.ascontiguousarray(data.T))  # (C_file, s)
    audio = convert(audio, sr, sample_rate, channels)
    return audio[:, : round(seconds * sample_rate)]


def read_audio_clips(specs: str | list[str], num_clips: int, sample_rate: int, channels: int, seconds: float,
                     ) -> tuple[list[tuple[str, torch.Tensor]], list[dict]]:
    """The first num_clips usable files in sorted order: ([(key, (channels, S_i))], skipped). The key is the
    path relative to the first spec when that is a folder, else the path."""
    files, skipped = list_audio_files(specs)
    first = Path(specs if isinstance(specs, str) else specs[0])
    root = first if first.is_dir() else None
    clips = []
    with tqdm(total=min(num_clips, len(files)), desc="reading audio files", unit="clip") as bar:
        for path in files:
            if len(clips) == num_clips:
                break
            try:
                audio = read_audio_file(path, sample_rate, channels, seconds)
            except ValueError as exc:
                skipped.append({"path": str(path), "reason": str(exc)})
                continue
            key = path.relative_to(root).as_posix() if root is not None else str(path)
            clips.append((key, audio))
            bar.update()
    return clips, skipped
