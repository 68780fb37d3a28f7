"""Config values checked before any work starts: one line naming the key, the value and the allowed range.
A stage calls `check_range` on its numbers in `__init__` and `check_crop` when the Trainer attaches its data."""

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
