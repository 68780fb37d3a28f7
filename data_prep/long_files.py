"""Long files in bounded memory: a file longer than LONG_FILE_SECONDS is decoded in blocks, chunk by chunk.

Sequential block reads (lafa.audio_blocks.BlockReader) of PCM, FLAC and Ogg are exact, and resampling runs
over the same frames and GEMM partition as a whole-file `lafa.resample`, so every chunk is bit-identical to
the whole-file path's (tests/data_prep/test_long_files.py); a whole decode's checks are made at the end of the
pass. An Ogg file whose decoded length is not its header's count raises WholeFileNeeded (the caller decodes it
whole); MP3 is never streamed (its block reads are not exact). Why, and measurements: docs/data.md, "Memory".
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import soundfile as sf
import torch

from data_prep.process import INT16_DBFS, SkipFile, check_loud
from lafa.audio import _declared_frames, _frames_before_failure, peak_dbfs, sf_source, to_channels
from lafa.audio_blocks import EXACT_BLOCK_FORMATS, BlockReader
from lafa.resample import WINDOW_ELEMENTS, plan, reduced_rates

LONG_FILE_SECONDS = 60.0  # longer files are streamed (shorter ones: the whole-file path, as before)


class WholeFileNeeded(Exception):  # noqa: N818 - a signal to the caller, not an error
    """An Ogg file whose decoded length is not its header's count (the chunk bounds were computed from the count)
    or whose stream is damaged: the whole-file path decides it, with its tolerances for lossy formats."""


def streams_long(format_name: str, seconds: float) -> bool:
    """Whether a file (libsndfile's format name, its duration) is streamed: longer than LONG_FILE_SECONDS and of a
    format whose block reads are exact."""
    return format_name in EXACT_BLOCK_FORMATS and seconds > LONG_FILE_SECONDS  # PCM, FLAC, Ogg Vorbis/Opus


class _Resampler:
    """lafa.resample.resample of a whole (C, n) signal, computed frame chunk by frame chunk from a BlockReader: the
    same frames, partition and GEMMs as the whole-file call, so the same float32 samples."""

    def __init__(self, source: BlockReader, orig_sr: int, target_sr: int, channels: int, n: int) -> None:
        orig, new = reduced_rates(orig_sr, target_sr)
        self.source, self.n = source, n
        self.p = plan(orig, new, torch.float32, torch.device("cpu"))
        self.target = math.ceil(new * n / orig)
        self.frames = math.ceil(self.target / self.p.rows)
        self.chunk = max(1, WINDOW_ELEMENTS // max(1, channels * max(g.weight.shape[0] for g in self.p.groups)))
        self.cache: tuple[int, torch.Tensor] | None = None  # (frame chunk index, its outputs (C, frames x rows))

    def _frame_chunk(self, k: int) -> torch.Tensor:
        if self.cache is not None and self.cache[0] == k:
            return self.cache[1]
        p = self.p
        f0, f1 = k * self.chunk, min(self.frames, (k + 1) * self.chunk)
        lo = f0 * p.stride - p.width  # padded index f0 * stride is input index f0 * stride - width
        buf = self.source.get(lo, (f1 - 1) * p.stride + p.span - p.width).contiguous()  # (C, span of the chunk)
        batch = buf.shape[0]
        out = buf.new_empty(batch, f1 - f0, p.rows)
        for g in p.groups:
            taps = g.weight.shape[0]
            windows = buf.as_strided((batch, f1 - f0, taps), (buf.stride(0), p.stride, 1), g.tap)
            out[:, :, g.row : g.row + g.rows] = (windows @ g.weight)[..., : g.rows]
        self.cache = (k, out.reshape(batch, (f1 - f0) * p.rows))
        return self.cache[1]

    def get(self, a: int, b: int) -> torch.Tensor:
        """Output samples [a, b) (C, b - a)."""
        per = self.chunk * self.p.rows
        parts = []
        for k in range(a // per, (b - 1) // per + 1):
            out = self._frame_chunk(k)
            parts.append(out[:, max(a, k * per) - k * per : min(b, (k + 1) * per) - k * per])
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)


class StreamedFile:
    """One long file as chunks: iterate `chunks(bounds)` for [(offset, piece (C, b - a))], then `check()` raises
    the SkipFile a whole decode would have raised (truncated, unreadable, silent). `total` is the length at the
    shard's rate that chunk bounds are computed from."""

    def __init__(self, path, settings, int16: bool = False, mono: bool = False) -> None:
        self.path, self.settings, self.int16, self.mono = path, settings, int16, mono
        self.f = sf.SoundFile(sf_source(path))
        f = self.f
        self.sr, self.channels_in = f.samplerate, f.channels
        self.declared = _declared_frames(f) or f.frames
        self.n = f.frames
        self.inexact_count = f.format == "OGG"  # a count from the last page's granule position
        if int16 and ((self.sr, settings.flac_subtype) != (settings.sample_rate, "PCM_16")
                      or self.channels_in not in (settings.channels, 1)):
            self.int16 = int16 = False  # not what the header promised: the float path (as decode does)
        self.offset_db = INT16_DBFS if int16 else 0.0
        keep_mono = mono and self.channels_in == 1
        first_resample = keep_mono or self.channels_in < settings.channels  # lafa.audio.convert's cheaper order
        batch = self.channels_in if first_resample else settings.channels  # channels the resampler runs on
        self.source = BlockReader(f, "int16" if int16 else "float32",
                              (lambda raw: raw) if first_resample else (lambda raw: to_channels(raw, settings.channels)))
        resampled = self.sr != settings.sample_rate
        self.resampler = _Resampler(self.source, self.sr, settings.sample_rate, batch, self.n) if resampled else None
        self.total = self.resampler.target if resampled else self.n
        # mono resampled, then duplicated to the shard's channels; a copy candidate's mono stays mono
        self.finish_channels = settings.channels if first_resample and not keep_mono else None

    def _piece(self, a: int, b: int) -> torch.Tensor:
        piece = self.resampler.get(a, b) if self.resampler is not None else self.source.get(a, b)
        if self.finish_channels is not None:  # mono resampled, then duplicated
            piece = to_channels(piece, self.finish_channels)
        return piece

    def chunks(self, bounds: list[tuple[int, int]]) -> Iterator[tuple[int, int, torch.Tensor, float]]:
        """(index, offset, piece, level in dBFS of the float decode) for every bound, silent ones included."""
        for i, (a, b) in enumerate(bounds):
            piece = self._piece(a, b)
            yield i, a, piece, peak_dbfs(piece) - self.offset_db

    def check(self) -> None:
        """After the chunks: read to the end, then the whole decode's checks in its order (lafa.audio)."""
        self.source.drain()
        log = self.f.extra_info.lower()
        self.f.close()
        src, sr, name = self.source, self.sr, Path(self.path).name
        damaged = any(m in log for m in ("corrupted bitstream", "reports a hole", "ended unexpectedly"))
        if self.inexact_count and (src.error is not None or damaged or src.decoded != self.n or self.declared != self.n):
            raise WholeFileNeeded(self.path)
        if src.error is not None:
            decoded = _frames_before_failure(self.path)
            raise SkipFile(f"partly decodable: {decoded / sr:.2f} s of {self.declared / sr:.2f} s decoded before the "
                           f"decoder failed ({src.error})".replace(str(self.path), name), "truncated")
        if src.decoded < self.declared:
            raise SkipFile(f"truncated: the header declares {self.declared / sr:.2f} s, only {src.decoded / sr:.2f} s "
                           f"decode", "truncated")
        if "corrupted bitstream" in log or "reports a hole" in log:
            raise SkipFile(f"partly decodable: pages of the stream are damaged or missing, {src.decoded / sr:.2f} s "
                           f"of {self.declared / sr:.2f} s decode", "truncated")
        if "ended unexpectedly" in log:
            raise SkipFile(f"truncated: the stream ends without its end-of-stream marker after "
                           f"{src.decoded / sr:.2f} s", "truncated")
        if src.decoded == 0:
            raise SkipFile(f"unreadable: {name} holds no samples", "unreadable")
        if not src.finite:
            raise SkipFile(f"unreadable: {name} decodes to non-finite samples", "unreadable")
        check_loud(src.peak_dbfs - self.offset_db, self.settings)
