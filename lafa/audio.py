"""Audio I/O and format conversion shared by data preparation, the loaders and the metrics.

Reading and writing go through soundfile (libsndfile decodes wav/flac/ogg/opus/mp3 here; torchaudio 2.11's
own load/save need FFmpeg through torchcodec, which these machines lack). Resampling is lafa.resample: the
filter of torchaudio's windowed-sinc `resample` (Kaiser window, the settings torchaudio documents as close to
librosa's kaiser_best), applied 1.2-7x faster (docs/data.md, "Resampling").
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from lafa.resample import resample

SAMPLE_RATE = 44100  # Stable Audio Open / the paper's rate (Sec. 5.1)


class AudioDecodeError(RuntimeError):
    """A file that cannot be decoded (corrupt, empty, unsupported). The message names the file."""


def sf_source(path):
    """What soundfile opens: a path as bytes (a file name that is not valid UTF-8 opens too), or a file object."""
    return os.fsencode(path) if isinstance(path, (str, os.PathLike)) else path


def load_audio(path: str | Path) -> tuple[torch.Tensor, int]:
    """Decode a file to float32 (channels, samples) in [-1, 1] at its native rate."""
    try:
        data, sr = sf.read(sf_source(path), dtype="float32", always_2d=True)  # (samples, channels)
    except Exception as exc:  # libsndfile raises several types for corrupt input
        raise AudioDecodeError(f"cannot decode {path}: {exc}") from exc
    if data.shape[0] == 0:
        raise AudioDecodeError(f"{path} holds no samples")
    if not np.isfinite(data).all():
        raise AudioDecodeError(f"{path} decodes to non-finite samples")
    return torch.from_numpy(np.ascontiguousarray(data.T)), int(sr)


class TruncatedAudioError(AudioDecodeError):
    """A file that decodes to less audio than its header declares (cut-off download, damaged stream)."""


LOSSY_FORMATS = ("MP3", "OGG")  # frame counts in their headers are estimates (Xing/LAME, granule positions)


def _declared_frames(f: sf.SoundFile) -> int | None:
    """The length a file's header declares where libsndfile's log shows it differs from what is there."""
    log = f.extra_info
    m = re.search(r"data\s*:\s*(\d+)\s*\(should be (\d+)\)", log)  # WAV: data chunk longer than the file
    if m and int(m.group(2)) > 0:
        return round(f.frames * int(m.group(1)) / int(m.group(2)))
    m = re.search(r"Frame count read from 'COMM' chunk \((\d+)\) not equal", log)  # AIFF
    if m:
        return int(m.group(1))
    m = re.search(r"PCM end\s*:\s*(\d+)", log)  # Ogg: the last page's granule position
    if m and int(m.group(1)) > f.frames:
        return int(m.group(1))
    return None


def _frames_before_failure(path: str | Path, block: int = 1 << 14) -> int:
    """How many frames decode before libsndfile fails (for the message only: libsndfile 1.2's MP3 decoder
    returns wrong samples after the first of several block reads, so the audio itself is read in one go)."""
    decoded = 0
    try:
        with sf.SoundFile(sf_source(path)) as f:
            while n := len(f.read(block, dtype="float32", always_2d=True)):
                decoded += n
    except Exception:
        pass
    return decoded


def load_audio_complete(path: str | Path, dtype: str = "float32") -> tuple[torch.Tensor, int]:
    """`load_audio` that also refuses partial audio: a file cut short (its header declares more samples than
    decode) or one whose decoder fails part-way raises TruncatedAudioError, naming both durations.
    dtype "int16": libsndfile's integer samples (of a 16-bit PCM file, exactly the float32 ones x 32768)."""
    try:
        f = sf.SoundFile(sf_source(path))
    except Exception as exc:
        raise AudioDecodeError(f"cannot decode {path}: {exc}") from exc
    with f:
        sr, fmt = f.samplerate, f.format
        declared = _declared_frames(f) or f.frames
        try:
            data = f.read(dtype=dtype, always_2d=True)  # (samples, channels)
        except Exception as exc:  # libsndfile stops mid-stream (FLAC "lost sync", bad Ogg pages, ...)
            decoded = _frames_before_failure(path)
            raise TruncatedAudioError(f"{path}: partly decodable: {decoded / sr:.2f} s of {declared / sr:.2f} s "
                                      f"decoded before the decoder failed ({exc})") from exc
        log = f.extra_info.lower()
        ended_early = "ended unexpectedly" in log
        damaged = "corrupted bitstream" in log or "reports a hole" in log  # Ogg pages lost mid-stream
    decoded = len(data)
    slack = (0.01 * declared + 2304) if fmt in LOSSY_FORMATS else 0
    if decoded < declared - slack:
        raise TruncatedAudioError(f"{path}: truncated: the header declares {declared / sr:.2f} s, only "
                                  f"{decoded / sr:.2f} s decode")
    if damaged:
        raise TruncatedAudioError(f"{path}: partly decodable: pages of the stream are damaged or missing, "
                                  f"{decoded / sr:.2f} s of {declared / sr:.2f} s decode")
    if ended_early:
        raise TruncatedAudioError(f"{path}: truncated: the stream ends without its end-of-stream marker after "
                                  f"{decoded / sr:.2f} s")
    if decoded == 0:
        raise AudioDecodeError(f"{path} holds no samples")
    if data.dtype.kind == "f" and not np.isfinite(data).all():
        raise AudioDecodeError(f"{path} decodes to non-finite samples")
    # a (channels, samples) view of the decoder's (samples, channels) buffer: no transposing copy, and
    # writing a chunk back (encode_flac) needs none either
    return torch.from_numpy(data).T, int(sr)


def to_channels(audio: torch.Tensor, channels: int = 2) -> torch.Tensor:
    """(C_in, S) -> (channels, S): mono is duplicated, more channels than asked are averaged down."""
    c_in = audio.shape[0]
    if c_in == channels:
        return audio
    if c_in == 1:
        return audio.expand(channels, -1).clone()
    if channels == 1:
        return audio.mean(dim=0, keepdim=True)
    if channels == 2 and c_in > 2:
        # down-mix: a plain mean to both sides keeps the result in range for any layout
        return audio.mean(dim=0, keepdim=True).expand(2, -1).clone()
    raise ValueError(f"cannot convert {c_in} channels to {channels}")


def convert(audio: torch.Tensor, sr: int, sample_rate: int, channels: int) -> torch.Tensor:
    """(C_in, S) at sr -> (channels, S') at sample_rate: `to_channels` and `resample`, the cheaper order first
    (fewer channels are resampled: mono before it is duplicated, a mix-down after it). Both are linear and
    per-channel, so the order does not change the samples (tests/test_audio.py: bit-identical)."""
    if audio.shape[0] < channels:
        return to_channels(resample(audio, sr, sample_rate), channels)
    return resample(to_channels(audio, channels), sr, sample_rate)


def save_audio(path: str | Path, audio: torch.Tensor, sample_rate: int, subtype: str | None = None) -> None:
    """Write (channels, samples) float audio; the format follows the suffix (.wav PCM_16 or .flac lossless)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = audio.detach().float().clamp(-1, 1).cpu().numpy().T
    sf.write(str(path), data, sample_rate, subtype=subtype)


def peak_dbfs(audio: torch.Tensor) -> float:
    """Peak level in dBFS (-inf for digital silence)."""
    if not audio.numel():
        return float("-inf")
    if not audio.is_contiguous() and audio.T.is_contiguous():  # a decoder buffer's (C, S) view: reducing the
        audio = audio.T  # strided layout is ~100x slower, and the peak is the same in either order
    low, high = torch.aminmax(audio)  # no |x| copy of a long file
    peak = max(-float(low), float(high))
    return 20.0 * math.log10(peak) if peak > 0 else float("-inf")


def peak_normalize(audio: torch.Tensor, target_dbfs: float = -1.0) -> torch.Tensor:
    """One gain for all channels so the peak sits at target_dbfs (silence is returned unchanged)."""
    peak = audio.abs().max()
    if peak <= 0:
        return audio
    return audio * (10.0 ** (target_dbfs / 20.0) / peak)
