"""Chunked encode/decode (`OobleckVAE.encode_chunked`, the CPU engine's `chunk_frames`): overlapping windows,
stitched with a linear crossfade; exact up to float rounding when the overlap exceeds twice the receptive reach."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch


def windows(frames: int, chunk: int, overlap: int) -> list[tuple[int, int]]:
    """Evenly spaced [start, end) windows of at most `chunk` frames covering `frames`, neighbours overlapping by
    at least `overlap`. n windows of equal length L = ceil((frames + (n - 1) overlap) / n), so the frames run
    are about frames + (n - 1) overlap: overhead <= chunk / (chunk - overlap) for any length."""
    if frames <= chunk:
        return [(0, frames)]
    n = math.ceil((frames - overlap) / (chunk - overlap))
    length = math.ceil((frames + (n - 1) * overlap) / n)
    starts = [(i * (frames - length)) // (n - 1) for i in range(n)]
    return [(s, s + length) for s in starts]


def _ramp(n: int, device: torch.device) -> torch.Tensor:
    return (torch.arange(n, device=device, dtype=torch.float32) + 0.5) / n  # rises over n steps, sums to 1 w/ flip


def chunked(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, frames: int, in_per_frame: int,
            out_per_frame: int, out_channels: int, chunk: int, overlap: int, reach: int) -> torch.Tensor:
    """Run `fn` on overlapping windows of x (B, C, >= frames * in_per_frame) and crossfade them together.

    A window [a, b) in frames reads x[..., a * in_per_frame : b * in_per_frame] (the last one reads to the end of
    x, so trailing samples reach `fn` as in a whole-clip call) and gives (b - a) * out_per_frame outputs. In each
    overlap [a_next, b) the first `m` and last `m` frames are dropped (m = min(reach, (overlap - 1) // 2): the
    frames within a window's receptive-field reach of its edge) and a linear crossfade spans the rest.
    Returns (B, out_channels, frames * out_per_frame) in float32.
    """
    if not 0 <= overlap < chunk:
        raise ValueError(f"need 0 <= overlap < chunk, got overlap={overlap}, chunk={chunk}")
    spans = windows(frames, chunk, overlap)
    if any(spans[i - 1][1] > spans[i + 1][0] for i in range(1, len(spans) - 1)):
        raise ValueError(f"overlap {overlap} too large for chunk {chunk} at {frames} frames: three windows would "
                         "overlap; use overlap <= chunk / 3")
    if len(spans) == 1:
        return fn(x).float()
    out = torch.zeros(x.shape[0], out_channels, frames * out_per_frame, device=x.device)
    for i, (a, b) in enumerate(spans):
        end = x.shape[-1] if i == len(spans) - 1 else b * in_per_frame
        y = fn(x[..., a * in_per_frame: end]).float()[..., : (b - a) * out_per_frame]  # (B, out, (b - a) opf)
        w = torch.ones((b - a) * out_per_frame, device=x.device)
        if i > 0:  # fade in over the centre of the overlap with the previous window
            prev_end = spans[i - 1][1]
            m = min(reach, (prev_end - a - 1) // 2)
            lo, hi = (m * out_per_frame, (prev_end - a - m) * out_per_frame)
            w[:lo] = 0
            w[lo:hi] = _ramp(hi - lo, x.device)
        if i < len(spans) - 1:  # fade out over the centre of the overlap with the next window
            next_start = spans[i + 1][0]
            m = min(reach, (b - next_start - 1) // 2)
            lo, hi = ((next_start - a + m) * out_per_frame, (b - a - m) * out_per_frame)
            w[lo:hi] = 1 - _ramp(hi - lo, x.device)
            w[hi:] = 0
        out[..., a * out_per_frame: b * out_per_frame] += y * w
    return out


def receptive_reach(convs: list[tuple[int, int, int, bool]], start_step: float, frame: float) -> int:
    """An upper bound, in frames, of how far (one side) an output depends on input: the sum over the conv stack
    (kernel, stride, dilation, transposed) of each kernel's one-sided reach times the step size where it runs.
    `start_step`: the input's step in the unit `frame` is measured in."""
    step, reach = start_step, 0.0
    for k, s, d, transposed in convs:
        if transposed:
            reach += math.ceil(k / s) * step  # each output reads ceil(k / s) inputs
            step /= s
        elif s > 1:
            reach += k * step  # strided: conservatively the whole kernel span
            step *= s
        else:
            reach += math.ceil((k - 1) * d / 2) * step
    return math.ceil(reach / frame)
