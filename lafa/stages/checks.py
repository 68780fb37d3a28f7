"""Config values checked before any work starts: one line naming the key, the value and the allowed range.
A stage calls `check_range` on its numbers in `__init__` and `check_crop` (and, where it scores fd_mel,
`check_fd_mel_crop`) when the Trainer attaches its data."""

from __future__ import annotations

from typing import Any

from lafa.errors import LafaUserError

BOUNDS = {">0": (lambda v: v > 0, "> 0"), ">=0": (lambda v: v >= 0, ">= 0"), ">=1": (lambda v: v >= 1, ">= 1"),
          "[0,1]": (lambda v: 0 <= v <= 1, "in [0, 1]"), "[0,1)": (lambda v: 0 <= v < 1, "in [0, 1)")}


def check_range(values: dict[str, Any], prefix: str = "model.init_args.") -> None:
    """values: {key: (value, bound)} with a bound of `BOUNDS`; None values are skipped."""
    for key, (value, bound) in values.items():
        ok, allowed = BOUNDS[bound]
        if value is not None and not ok(value):
            raise LafaUserError(f"{prefix}{key}: {value!r} is not allowed; it must be {allowed}")


def check_crop(datamodule: Any, ratio: int, what: str) -> None:
    """The data's audio crop (`data.init_args.sample_size`) must hold at least one latent frame of `ratio` samples."""
    size = getattr(getattr(datamodule, "hparams", None), "sample_size", None)
    if isinstance(size, int) and size < ratio:
        raise LafaUserError(f"data.init_args.sample_size: {size} samples is shorter than one latent frame of {what} "
                            f"({ratio} samples); set it to at least {ratio} (a multiple of {ratio} wastes nothing)")


FD_MEL_OFF = " or set fd_mel_clips: 0 in the config's DitSamplesCallback / FdMelCriterionCallback"


def _fd_mel_stft(sample_rate: int) -> tuple[int, str]:
    """(the fewest samples fd_mel takes at `sample_rate`, why: the metric's STFT settings)."""
    from lafa.metrics.mel_fd import SETTINGS, min_samples

    need = min_samples(sample_rate)
    return need, (f"the fd_mel metric's STFT (n_fft {SETTINGS['n_fft']} at {SETTINGS['sample_rate']} Hz needs more "
                  f"than {SETTINGS['n_fft'] // 2} samples there, i.e. at least {need} at {sample_rate} Hz)")


def check_fd_mel_crop(datamodule: Any, sample_rate: int, fix: str) -> None:
    """The data's audio crop must be long enough for fd_mel's STFT (`lafa.metrics.mel_fd.min_samples`); `fix` ends
    the message after "set it to at least N" (the other way out, e.g. turning the metric off)."""
    size = getattr(getattr(datamodule, "hparams", None), "sample_size", None)
    need, why = _fd_mel_stft(sample_rate)
    if isinstance(size, int) and size < need:
        raise LafaUserError(f"data.init_args.sample_size: {size} samples at {sample_rate} Hz is too short for {why}; "
                            f"set it to at least {need}{fix}")


def check_fd_mel_clips(ids: list, samples: list[int], sample_rate: int, split: str, fix: str) -> None:
    """Each clip's real audio must be long enough for fd_mel's STFT: a source file shorter than the crop is only
    known at its batch (data_prep keeps whole files down to its --min_clip_seconds)."""
    need, why = _fd_mel_stft(sample_rate)
    for clip_id, n in zip(ids, samples, strict=True):
        if n < need:
            raise LafaUserError(f"data.init_args.{split}_shards: clip {clip_id} holds {n} samples of real audio at "
                                f"{sample_rate} Hz, too short for {why}; leave clips shorter than {need} samples "
                                f"out of these shards (`python -m data_prep build --min_clip_seconds`){fix}")
