"""A run's logged curves: read from its TensorBoard events, and the step at which one reaches a target."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

Curve = list[tuple[int, float]]


def read_curves(tb_dir: str | Path) -> dict[str, Curve]:
    """Every scalar a run logged: tag -> [(step, value)] sorted by step; a step logged twice (a resumed run
    re-logging steps after its last checkpoint) keeps the value written last."""
    from tensorboard.backend.event_processing.event_accumulator import SCALARS, EventAccumulator

    tb_dir = Path(tb_dir)
    if not tb_dir.is_dir():
        return {}
    acc = EventAccumulator(str(tb_dir), size_guidance={SCALARS: 0})
    acc.Reload()
    curves = {}
    for tag in acc.Tags()["scalars"]:
        by_step: dict[int, float] = {}
        for event in sorted(acc.Scalars(tag), key=lambda e: e.wall_time):
            by_step[int(event.step)] = float(event.value)
        curves[tag] = sorted(by_step.items())
    return curves


def steps_to_target(curve: Curve, target: float, mode: str = "min") -> float | None:
    """First step at which the curve reaches `target` (<= for mode "min", >= for "max"), interpolated linearly
    between the evaluation before and the one at the crossing; None if it never does. A curve already at the
    target at its first evaluation gives that evaluation's step (nothing was measured before it)."""
    sign = 1.0 if mode == "min" else -1.0
    previous = None
    for step, value in curve:
        if sign * value <= sign * target:
            if previous is None or previous[1] == value:
                return float(step)
            (s0, v0) = previous
            return s0 + (target - v0) * (step - s0) / (value - v0)
        previous = (step, value)
    return None


@contextmanager
def figure(path: Path, *args: Any, **kwargs: Any) -> Iterator[tuple[Any, Any]]:
    """`plt.subplots(*args, **kwargs)` on matplotlib's Agg backend; on leaving, laid out, saved to `path` at
    120 dpi and closed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(*args, **kwargs)
    yield fig, axes
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
