"""Sequential block reads of an audio file in bounded memory: `BlockReader` keeps only the blocks a caller still
needs, and the checks of a whole decode (frames decoded, decoder failure, peak, non-finite samples) as it goes.

data_prep streams long files through it (data_prep.long_files); `lafa evaluate` probes every clip with it
(lafa.metrics.folders). libsndfile's block reads equal one whole read for the formats in `EXACT_BLOCK_FORMATS`,
not for MP3, whose samples never come from blocks (measured: docs/data.md, "Memory (long files)").
"""

from __future__ import annotations

import math

import numpy as np
import soundfile as sf
import torch

BLOCK_FRAMES = 1 << 16  # frames per libsndfile read
EXACT_BLOCK_FORMATS = ("WAV", "WAVEX", "AIFF", "W64", "RF64", "CAF", "AU", "FLAC", "OGG")  # block reads == one read


class BlockReader:
    """Sequential block reads of a file, as (C', samples) tensors after `prepare` (channel conversion), with the
    checks of a whole decode: frames decoded, decoder failure, peak of the raw samples, non-finite samples."""

    def __init__(self, f: sf.SoundFile, dtype: str, prepare) -> None:
        self.f, self.dtype, self.prepare = f, dtype, prepare
        self.blocks: list[tuple[int, torch.Tensor]] = []  # (start, (C', n)) kept from the lowest index still needed
        self.decoded, self.low, self.high, self.finite = 0, math.inf, -math.inf, True
        self.error: Exception | None = None
        self.eof = False

    def _read(self) -> bool:
        if self.eof:
            return False
        try:
            data = self.f.read(BLOCK_FRAMES, dtype=self.dtype, always_2d=True)  # (n, C)
        except Exception as exc:  # noqa: BLE001 - libsndfile stops mid-stream: reported as a whole decode does
            self.error, self.eof = exc, True
            return False
        if not len(data):
            self.eof = True
            return False
        raw = torch.from_numpy(data).T  # (C, n) view of the decoder's buffer
        if data.dtype.kind == "f" and not np.isfinite(data).all():
            self.finite = False
        low, high = torch.aminmax(raw.T)  # on the contiguous layout (lafa.audio.peak_dbfs)
        self.low, self.high = min(self.low, float(low)), max(self.high, float(high))
        self.blocks.append((self.decoded, self.prepare(raw)))
        self.decoded += len(data)
        return True

    def get(self, lo: int, hi: int) -> torch.Tensor:
        """Samples [lo, hi) (C', hi - lo), zeros outside the decoded ones; earlier samples are released."""
        while (not self.blocks or self.blocks[-1][0] + self.blocks[-1][1].shape[-1] < hi) and self._read():
            pass
        self.blocks = [(s, b) for s, b in self.blocks if s + b.shape[-1] > lo]
        channels = self.blocks[0][1].shape[0] if self.blocks else 1
        dtype = self.blocks[0][1].dtype if self.blocks else torch.float32
        out = torch.zeros(channels, hi - lo, dtype=dtype)
        for s, b in self.blocks:
            a, e = max(lo, s), min(hi, s + b.shape[-1])
            if a < e:
                out[:, a - lo : e - lo] = b[:, a - s : e - s]
        return out

    def drain(self) -> None:
        while self._read():
            self.blocks.clear()

    @property
    def peak_dbfs(self) -> float:
        peak = max(-self.low, self.high)
        return 20.0 * math.log10(peak) if peak > 0 else float("-inf")


def probe_blocks(path, dtype: str = "float32") -> BlockReader:
    """Read a whole file block by block, keeping nothing but the checks: `.decoded` frames, `.error` (the
    decoder's failure, or None), `.finite`, `.peak_dbfs`, and `.samplerate`. Memory: one block."""
    from lafa.audio import sf_source

    with sf.SoundFile(sf_source(path)) as f:
        reader = BlockReader(f, dtype, lambda raw: raw)
        reader.drain()
        reader.samplerate = f.samplerate
    return reader
