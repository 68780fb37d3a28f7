"""One audio file -> 44.1 kHz stereo chunks (Sec. 5.1: "30 sec stereo audio chunks"), FLAC encoded (or 16/24-bit
WAV: `member_format`; or the source stored as it is: data_prep.passthrough)."""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from lafa.audio import (
    SAMPLE_RATE,
    TruncatedAudioError,
    convert,
    load_audio_complete,
    peak_dbfs,
    resample,
    to_channels,
)


@dataclass
class ChunkSettings:
    chunk_seconds: float = 30.0  # Sec. 5.1
    min_tail_seconds: float = 1.0  # a last chunk shorter than this is dropped (unless it is the whole file)
    silence_dbfs: float = -60.0  # peak below this is silence (Stable Audio's -60 dBFS rule)
    sample_rate: int = SAMPLE_RATE
    channels: int = 2
    flac_subtype: str = "PCM_16"
    # libFLAC compression level 0-8 (None: libsndfile's default, 5); 4 measured the same size as 5 for 9-14% less
    # encoding CPU on mp3/ogg/wav-decoded music-like audio (docs/data.md, Benchmark)
    flac_level: int | None = 4
    # a source needing no change (one whole chunk at this rate and channel count; FLAC/WAV at flac_subtype's bit
    # depth, MP3, Ogg Vorbis, Opus) is stored byte for byte (tags dropped where safe), not re-encoded to FLAC
    copy_sources: bool = True
    # how a chunk that is converted (resampled, re-quantised, cut from a longer file, channels mixed) is stored:
    # "flac" (lossless, ~0.6x the PCM bytes on music) or "wav" (PCM at flac_subtype's depth: ~1.6x FLAC's bytes;
    # no encoding CPU, ~1/3 of FLAC's decoding CPU per training crop; docs/data.md, "Member format")
    member_format: str = "flac"
    # a file shorter than this is skipped ("too short"): a 1-sample WAV is no training clip, and a clip shorter than
    # an autoencoder's downsampling (2048 samples = 46 ms for Stable Audio's VAE) has no latent frame
    min_clip_seconds: float = 0.1

    def __post_init__(self):
        if self.member_format not in MEMBER_FORMATS:
            raise ValueError(f"member_format {self.member_format!r}: choose one of {', '.join(MEMBER_FORMATS)}")


MEMBER_FORMATS = ("flac", "wav")


class SkipFile(Exception):
    """A file that is skipped and listed in the manifest (corrupt, truncated, empty, silent)."""

    def __init__(self, reason: str, category: str):
        super().__init__(reason)
        self.category = category


def decode(path, settings: ChunkSettings, int16: bool = False, mono: bool = False) -> torch.Tensor:
    """Any rate and channel count -> (channels, samples) at settings.sample_rate; raises SkipFile.
    A truncated or partly decodable file is skipped whole (lafa's choice: a clip silently shorter than the
    recording, or ending in a glitch, would enter training under the full file's metadata and timing).
    int16: a 16-bit PCM source already at the shard's rate and channels (a WAV or FLAC the build may copy)
    checked the same way on its integers, int16 (C, S): for WAV a tenth of the float32 decode's CPU.
    mono: a mono source comes back mono (a copy candidate: the channels are duplicated only if it is encoded)."""
    try:
        audio, sr = load_audio_complete(path, dtype="int16" if int16 else "float32")
    except TruncatedAudioError as exc:  # the skip record has the path: the reason names the file only
        raise SkipFile(str(exc).replace(f"{path}: ", ""), "truncated") from exc
    except Exception as exc:  # AudioDecodeError and anything libsndfile throws on garbage
        raise SkipFile(f"unreadable: {exc}".replace(str(path), Path(path).name), "unreadable") from exc
    if int16 and ((sr, settings.flac_subtype) != (settings.sample_rate, "PCM_16")
                  or audio.shape[0] not in (settings.channels, 1)):
        return decode(path, settings, mono=mono)  # not what the header promised (the file changed)
    check_loud(peak_dbfs(audio) - (INT16_DBFS if int16 else 0.0), settings)  # int16: the float decode's peak
    if int16:
        return audio if mono and audio.shape[0] == 1 else to_channels(audio, settings.channels)
    if mono and audio.shape[0] == 1:
        return resample(audio, sr, settings.sample_rate)
    return convert(audio, sr, settings.sample_rate, settings.channels)  # reads the decoder's (S, C) buffer as it is


def check_loud(level: float, settings: ChunkSettings) -> None:
    """Raise SkipFile("silent") when a whole file's peak `level` (dBFS) is below settings.silence_dbfs."""
    if level < settings.silence_dbfs:
        raise SkipFile(f"silent: peak {level:.1f} dBFS < {settings.silence_dbfs:g} dBFS", "silent")


INT16_DBFS = 20 * math.log10(32768)


def chunk_bounds(num_samples: int, chunk: int, min_tail: int) -> list[tuple[int, int]]:
    """[start, end) of consecutive chunks; a short last chunk is kept at its true length when >= min_tail."""
    bounds = [(s, min(s + chunk, num_samples)) for s in range(0, num_samples, chunk)]
    if len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] < min_tail:
        bounds.pop()
    return bounds


def split_chunks(audio: torch.Tensor, settings: ChunkSettings) -> tuple[list[tuple[int, torch.Tensor]], list[str]]:
    """(C, S) -> [(offset, (C, s))] chunks and the reasons for chunks dropped as silent. int16 audio (decode's
    int16 path) is split as it is, its levels those of the float decode (x / 32768)."""
    sr = settings.sample_rate
    bounds = chunk_bounds(audio.shape[-1], round(settings.chunk_seconds * sr), round(settings.min_tail_seconds * sr))
    offset_db = INT16_DBFS if audio.dtype == torch.int16 else 0.0
    chunks, dropped = [], []
    for i, (a, b) in enumerate(bounds):
        piece = audio[:, a:b]
        level = peak_dbfs(piece) - offset_db
        if level < settings.silence_dbfs:
            dropped.append(f"chunk {i} ({a / sr:.1f}-{b / sr:.1f} s) silent: peak {level:.1f} dBFS")
            continue
        chunks.append((a, piece))
    return chunks, dropped


def encode_member(audio: torch.Tensor, settings: ChunkSettings) -> tuple[str, bytes]:
    """(member extension, bytes) of a converted chunk, as settings.member_format says: FLAC, or WAV (PCM at
    flac_subtype's depth: the same integers encode_flac stores)."""
    if settings.member_format == "wav":
        return "wav", _encode(audio, settings, "WAV")
    return "flac", encode_flac(audio, settings)


def _samples(audio: torch.Tensor, settings: ChunkSettings) -> np.ndarray:
    """(C, S) audio -> the (S, C) array libsndfile writes: int16 as it is (decode's int16 path: PCM_16 only);
    float to int16 as libsndfile itself converts (x 32768, round half to even, clip), in torch (same integers,
    ~2/3 of numpy's CPU: in place, one thread); float clipped to [-1, 1] for PCM_24."""
    if audio.dtype == torch.int16:
        return audio.numpy().T  # contiguous when audio is a view of a decoder buffer
    if settings.flac_subtype == "PCM_16":
        return (audio.T * 32768.0).round_().clamp_(-32768, 32767).to(torch.int16).numpy()
    return np.clip(audio.numpy().T, -1, 1)


def encode_flac(audio: torch.Tensor, settings: ChunkSettings) -> bytes:
    """Lossless FLAC bytes of (C, S) audio (clipped to [-1, 1]); libsndfile writes no timestamps."""
    level = None if settings.flac_level is None else settings.flac_level / 8
    return _encode(audio, settings, "FLAC", compression_level=level)


def _encode(audio: torch.Tensor, settings: ChunkSettings, fmt: str, **options) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, _samples(audio, settings), settings.sample_rate, format=fmt, subtype=settings.flac_subtype,
             **options)
    return buf.getvalue()


def chunk_metadata(offset: int, length: int, total: int, sr: int) -> dict:
    """Timing fields: seconds_start = floor(offset / sr), seconds_total = ceil(len / sr) (Stable Audio)."""
    return {"offset_samples": offset, "num_samples": length, "total_samples": total,
            "seconds_start": math.floor(offset / sr), "seconds_total": math.ceil(total / sr)}
