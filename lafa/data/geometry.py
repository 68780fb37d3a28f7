"""Batch geometry: where the real audio of each crop is, in samples, latent frames and seconds.

A batch (docs/architecture.md) pads every crop to one size; `keep` is True on real samples (audio
batches) or real frames (latent batches) and False on the zero padding after them (`crop_pad`). Every stage
and callback that needs a crop's real length, its latent keep mask, its timing condition or its trimmed audio
asks this module, so training, validation, generation and scoring agree on one rule:

- latent frame n covers samples [n r, (n + 1) r) (r = the autoencoder's downsampling ratio) and is real when
  its first sample is, so a crop of L real samples has ceil(L / r) real frames;
- the timing condition (Stable Audio's): seconds_start = floor(offset / sr) with the offset of the crop in its
  source file, seconds_total = ceil(L / sr) with L the crop's real samples (not the source file's length);
- generating for a crop means generating exactly its L samples, conditioned on its seconds_start and
  seconds_total, and scoring against its L real samples.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch


def timing(offset_samples: int, real_samples: int, sample_rate: int) -> tuple[float, float]:
    """A crop's timing condition: (floor(offset / sr), ceil(real / sr)) in seconds, offset in its source file."""
    return float(offset_samples // sample_rate), seconds_total(real_samples, sample_rate)


def seconds_total(samples: int, sample_rate: int) -> float:
    """The seconds_total condition of a clip of `samples` real samples: ceil(samples / sr)."""
    return float(-(-int(samples) // sample_rate))


def seconds_to_samples(seconds: float, sample_rate: int) -> int:
    """A length in seconds -> whole samples (round half to even, at least 1)."""
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"a clip length must be a positive number of seconds, got {seconds}")
    return max(round(seconds * sample_rate), 1)


def frames_for(samples: int | torch.Tensor, ratio: int) -> int | torch.Tensor:
    """Latent frames that cover `samples` real samples: ceil(samples / ratio)."""
    return -(-samples // ratio)


def frame_keep(sample_keep: torch.Tensor | None, ratio: int, frames: int) -> torch.Tensor | None:
    """Sample padding mask (B, S) -> latent-frame keep mask (B, frames): frame n is real when sample n r is.
    Frames past the mask (a latent longer than S / r) are padding. None stays None."""
    if sample_keep is None:
        return None
    keep = sample_keep.bool()[:, ::ratio][:, :frames]  # (B, ceil(S / r)) -> (B, <= frames)
    if keep.shape[-1] < frames:
        keep = torch.nn.functional.pad(keep, (0, frames - keep.shape[-1]), value=False)
    return keep


def keep_from_lengths(lengths: torch.Tensor, size: int) -> torch.Tensor:
    """Real lengths (B,) -> keep mask (B, size): True on the first lengths[i] positions."""
    return torch.arange(size, device=lengths.device)[None] < lengths[:, None]


def real_samples(batch: dict, ratio: int = 1) -> torch.Tensor:
    """(B,) int64: real audio samples of each crop of a batch.

    `real_samples` when the batch carries it (the DataModules do); else the padding mask's count (audio
    batches: samples; latent batches: frames * ratio); else the whole padded length."""
    if batch.get("real_samples") is not None:
        return torch.as_tensor(batch["real_samples"]).long().cpu()
    data = batch["audio"] if "audio" in batch else batch["latent"]
    per_step = 1 if "audio" in batch else ratio
    padding = batch.get("keep")
    if padding is None:
        return torch.full((data.shape[0],), data.shape[-1] * per_step, dtype=torch.long)
    return padding.bool().sum(-1).long().cpu() * per_step


def trim(clips: torch.Tensor | Sequence[torch.Tensor], lengths: Sequence[int] | torch.Tensor) -> list[torch.Tensor]:
    """(B, C, S) (or B clips (C, S_i)) -> B clips (C, lengths[i]); a clip shorter than its length is an error."""
    lengths = [int(n) for n in (lengths.tolist() if isinstance(lengths, torch.Tensor) else lengths)]
    if len(lengths) != len(clips):
        raise ValueError(f"{len(clips)} clips but {len(lengths)} lengths")
    out = []
    for clip, n in zip(clips, lengths, strict=True):
        if clip.shape[-1] < n:
            raise ValueError(f"a clip of {clip.shape[-1]} samples cannot be trimmed to {n}")
        out.append(clip[..., :n])
    return out
