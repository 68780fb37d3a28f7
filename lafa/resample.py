"""Band-limited resampling: torchaudio's Kaiser-windowed sinc filter, applied as a few dense matrix products.

The filter is torchaudio.functional.resample's `sinc_interp_kaiser` with lowpass_filter_width 64, rolloff
0.9476 and beta 14.77 (the resampy `kaiser_best` settings torchaudio documents), computed once per reduced
rate pair orig:new (lru_cache). Phase j's output is y[m*new + j] = sum_k kernel[j, k] x_pad[m*orig + k]; lafa
applies it as GEMMs (`plan`): B = ceil(ROWS_PER_GROUP / new) periods form one frame when new < ROWS_PER_GROUP,
the frame's rows are split into groups of consecutive phases, and each group is one product over the union of
its rows' nonzero supports (rows padded to a multiple of TILE). The design, its measurements and the speed
against torchaudio (bench/bench_resample.py): docs/data.md, "Resampling".

Same output as torchaudio.functional.resample with these settings: same length ceil(new * S / orig), same
filter (float32 input: the float32 kernel torchaudio's `Resample` transform builds, whose phase j / new is
rounded to float32; float64 input: torchaudio's float64 kernel), and an error against torchaudio's float64
result no larger than torchaudio's own float32 result has (tests/test_resample.py).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, replace

import torch

LOWPASS_FILTER_WIDTH = 64  # zero crossings of the sinc on each side
ROLLOFF = 0.9475937167399596  # cutoff as a fraction of the lower Nyquist frequency
BETA = 14.769656459379492  # Kaiser window shape
ROWS_PER_GROUP = 64  # output phases per GEMM (chosen by measurement: docs/data.md, "Resampling")
TILE = 16  # a group's rows are padded to a multiple of this
WINDOW_ELEMENTS = 1 << 21  # input windows materialized per GEMM at most (8 MiB of float32): bounds memory


def reduced_rates(orig_sr: int, target_sr: int) -> tuple[int, int]:
    """The pair divided by its gcd: the filter's period is `orig` input and `new` output samples."""
    if int(orig_sr) != orig_sr or int(target_sr) != target_sr or orig_sr <= 0 or target_sr <= 0:
        raise ValueError(f"sample rates must be positive integers, got {orig_sr} and {target_sr}")
    g = math.gcd(int(orig_sr), int(target_sr))
    return int(orig_sr) // g, int(target_sr) // g


def _width(orig: int, new: int) -> int:
    return math.ceil(LOWPASS_FILTER_WIDTH * orig / (min(orig, new) * ROLLOFF))


def _times(orig: int, new: int, phase: torch.Tensor, tap: torch.Tensor, double: bool) -> torch.Tensor:
    """Sinc arguments t (in zero crossings, float64) at (phase j, tap i) grids of int64 indices, i in
    [0, 2*width + orig), as torchaudio's _get_sinc_resample_kernel computes them: j / new in float32 unless
    the kernel is float64 (its default kernel's arange has no dtype), i / orig in float64."""
    phases = -(phase.double() if double else phase) / new
    return (phases + (tap - _width(orig, new)).double() / orig) * (min(orig, new) * ROLLOFF)


def _kernel_values(orig: int, new: int, t: torch.Tensor) -> torch.Tensor:
    """torchaudio's sinc_interp_kaiser kernel with lafa's settings at the arguments t, operation for operation
    (its beta and window normalizer are float32 scalars, for either kernel dtype); float64.
    Where |t| >= 64 zero crossings it holds the clamped value sinc(64) * window(64) ~ 1e-22."""
    t = t.clamp(-LOWPASS_FILTER_WIDTH, LOWPASS_FILTER_WIDTH)
    beta = torch.tensor(BETA)  # float32, as torchaudio's
    window = torch.i0(beta * torch.sqrt(1 - (t / LOWPASS_FILTER_WIDTH) ** 2)) / torch.i0(beta)
    t = t * math.pi
    kernel = torch.where(t == 0, torch.tensor(1.0, dtype=t.dtype), t.sin() / t)
    return kernel * (window * (min(orig, new) * ROLLOFF / orig))


def sinc_kernel(orig: int, new: int, double: bool = False) -> tuple[torch.Tensor, int]:
    """The full (new, 2*width + orig) filter of a reduced pair (float32, or float64 when `double`), and width:
    what torchaudio's conv1d applies. lafa applies it by groups (`plan`); this is for tests and inspection."""
    width = _width(orig, new)
    t = _times(orig, new, torch.arange(new)[:, None], torch.arange(2 * width + orig)[None], double)  # (new, K)
    kernel = _kernel_values(orig, new, t)
    return kernel.to(torch.float64 if double else torch.float32), width


@dataclass(frozen=True)
class Group:
    """One GEMM: output rows [row, row + rows) of a frame from input taps [tap, tap + taps) of the frame."""

    row: int
    rows: int
    tap: int
    weight: torch.Tensor  # (taps, rows rounded up to TILE): the kernel's rows transposed, zero columns padded


@dataclass(frozen=True)
class Plan:
    """How a reduced pair is applied: frames of `stride` input and `rows` output samples (B periods)."""

    orig: int
    new: int
    width: int  # left zero padding, as torchaudio's
    periods: int  # B: periods per frame
    stride: int  # orig * B input samples per frame
    rows: int  # new * B output samples per frame
    span: int  # input taps one frame reads past its start (the last group's end)
    groups: tuple[Group, ...]

    def to(self, device: torch.device, dtype: torch.dtype) -> Plan:
        return replace(self, groups=tuple(replace(g, weight=g.weight.to(device, dtype)) for g in self.groups))


def _group(orig: int, new: int, periods: int, r0: int, r1: int, double: bool) -> Group:
    """Frame rows [r0, r1) (row r*new + j: phase j, r periods, r*orig taps, later) and the union of their
    supports, computed on that block only (a 7919 -> 44100 Hz kernel would hold 355 M taps)."""
    width, klen = _width(orig, new), 2 * _width(orig, new) + orig
    half = LOWPASS_FILTER_WIDTH * orig / (min(orig, new) * ROLLOFF)  # support half-width in input samples
    lo = max(0, math.floor(width + r0 * orig / new - half) - 2)  # row centres width + row * orig / new
    hi = min(klen + (periods - 1) * orig, math.ceil(width + (r1 - 1) * orig / new + half) + 3)
    row, col = torch.arange(r0, r1)[:, None], torch.arange(lo, hi)[None]  # (rows, 1), (1, taps)
    phase, tap = row % new, col - row // new * orig  # (rows, taps): the kernel entry of each frame entry
    in_row = (tap >= 0) & (tap < klen)
    t = _times(orig, new, phase, tap.clamp(0, klen - 1), double)
    inside = (t.abs() < LOWPASS_FILTER_WIDTH) & in_row  # the taps lafa multiplies
    cols = inside.any(0).nonzero()[:, 0]
    if (cols[0] == 0 and lo > 0) or (cols[-1] == hi - lo - 1 and hi < klen + (periods - 1) * orig):
        raise RuntimeError(f"resample plan {orig}:{new}: rows {r0}:{r1} reach past their support estimate")
    c0, c1 = int(cols[0]), int(cols[-1]) + 1
    weight = torch.where(in_row, _kernel_values(orig, new, t), 0.0)[:, c0:c1].T  # (taps, rows)
    weight = weight.to(torch.float64 if double else torch.float32)
    weight = torch.nn.functional.pad(weight, (0, -(r1 - r0) % TILE)).contiguous()  # (taps, rows up to TILE)
    return Group(r0, r1 - r0, lo + c0, weight)


@functools.lru_cache(maxsize=64)
def _cpu_plan(orig: int, new: int, double: bool) -> Plan:
    periods = math.ceil(ROWS_PER_GROUP / new) if new < ROWS_PER_GROUP else 1
    rows = new * periods
    step = math.ceil(rows / max(1, round(rows / ROWS_PER_GROUP)))
    groups = tuple(_group(orig, new, periods, r0, min(rows, r0 + step), double)
                   for r0 in range(0, rows, step))
    span = max(g.tap + g.weight.shape[0] for g in groups)
    return Plan(orig, new, _width(orig, new), periods, orig * periods, rows, span, groups)


@functools.lru_cache(maxsize=64)
def plan(orig: int, new: int, dtype: torch.dtype, device: torch.device) -> Plan:
    """The cached plan of a reduced pair for input of this dtype and device (float64 input: float64 kernel;
    any other floating dtype: the float32 kernel, cast)."""
    return _cpu_plan(orig, new, dtype == torch.float64).to(device, dtype)


def resample(audio: torch.Tensor, orig_sr: int, target_sr: int) -> torch.Tensor:
    """(..., S) floating audio at orig_sr -> (..., ceil(S * target_sr / orig_sr)) at target_sr, on the input's
    device and dtype; identity (the same tensor) when the rates agree."""
    if not audio.is_floating_point():
        raise TypeError(f"resample needs floating-point audio, got {audio.dtype}")
    orig, new = reduced_rates(orig_sr, target_sr)
    if orig == new:
        return audio
    p = plan(orig, new, audio.dtype, audio.device)
    shape, n = audio.shape, audio.shape[-1]
    x = audio.reshape(math.prod(shape[:-1]), n)  # (N, S)
    batch, target = x.shape[0], math.ceil(new * n / orig)
    frames = math.ceil(target / p.rows)
    padded = x.new_zeros(batch, max((frames - 1) * p.stride + p.span, p.width + n))  # (N, S'): zeros both sides
    padded[:, p.width : p.width + n] = x
    out = x.new_empty(batch, frames, p.rows)  # (N, frames, rows)
    chunk = max(1, WINDOW_ELEMENTS // max(1, batch * max(g.weight.shape[0] for g in p.groups)))
    for f0 in range(0, frames, chunk):
        f1 = min(frames, f0 + chunk)
        for g in p.groups:
            taps = g.weight.shape[0]
            windows = padded.as_strided((batch, f1 - f0, taps), (padded.stride(0), p.stride, 1),
                                        padded.storage_offset() + f0 * p.stride + g.tap)  # (N, f, taps)
            out[:, f0:f1, g.row : g.row + g.rows] = (windows @ g.weight)[..., : g.rows]  # (N, f, rows)
    return out.reshape(batch, frames * p.rows)[:, :target].reshape(*shape[:-1], target)  # (..., target)
