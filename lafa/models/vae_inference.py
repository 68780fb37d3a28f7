"""The kernels of the Oobleck VAE's CPU inference engine (`lafa.models.vae_engine.InferenceVAE` runs them).

Folded weight norm (`FoldedWeight`), oneDNN's packed convolutions (Winograd kernel-7 convs from
lafa.models.winograd), channels-last activations, time tiles with exact halos (`tiled`), the fused SnakeBeta
and the bf16 check. Measurements: docs/benchmarks.md.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable

import torch

from lafa.models import winograd

PACKED_SHAPES = 2  # input shapes whose packed weights a conv keeps (tiles and windows of a clip take two)
FUSED_SNAKE_MIN_NUMEL = 1 << 20  # below this compiling does not pay (kernel launch dominates); eager in-place form


def bf16_supported(device: torch.device | str) -> bool:
    """Whether `device` has native bf16 arithmetic: CUDA bf16, or oneDNN bf16 on the CPU (AVX512-BF16 / AMX)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return False


class FoldedWeight:
    """A conv's folded weight, valid while its g and v keep their storage and version (no in-place update)."""

    def __init__(self) -> None:
        self.key: tuple | None = None
        self.sources: tuple[torch.Tensor, ...] = ()  # detached aliases: keep the storages alive, so no reuse
        self.weight: torch.Tensor | None = None
        self.packed: dict[tuple, torch.Tensor] = {}  # input shape -> oneDNN-packed weight, the last PACKED_SHAPES

    def packed_for(self, shape: tuple, pack: Callable[[], torch.Tensor]) -> torch.Tensor:
        """oneDNN's packed weight for this input shape, packed on first use; at most PACKED_SHAPES shapes are kept
        (a clip's tiles and windows take at most two: the common length and the last one)."""
        if shape not in self.packed:
            if len(self.packed) >= PACKED_SHAPES:
                self.packed.pop(next(iter(self.packed)))
            self.packed[shape] = pack()
        return self.packed[shape]

    def get(self, v: torch.Tensor, g: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        key = (v.data_ptr(), v._version, g.data_ptr(), g._version, v.device, dtype)
        if key != self.key:
            with torch.no_grad():
                self.weight = torch._weight_norm(v, g, 0).to(dtype)  # the training path's kernel: bit-identical
            self.key, self.sources, self.packed = key, (v.detach(), g.detach()), {}
        return self.weight

    def __deepcopy__(self, memo: dict) -> FoldedWeight:  # a cache, not state: copies (EMA, deepcopy) start empty
        return FoldedWeight()

    def __getstate__(self) -> dict:
        return {}

    def __setstate__(self, state: dict) -> None:
        self.__init__()


_PACKED_FAILED: list[str] = []  # the first reason oneDNN's packed convolutions were unavailable (then dense)


def channels_last(x: torch.Tensor) -> torch.Tensor:
    """(B, C, L) with the channel as the fastest dimension (strides (C L, 1, C)): oneDNN's fast 1-D layout.

    Elementwise ops keep this layout, and `x.unsqueeze(2)` is then a channels-last (B, C, 1, L) conv input."""
    return x.transpose(1, 2).contiguous().transpose(1, 2)


def _packed_ok(x: torch.Tensor) -> bool:
    return x.device.type == "cpu" and x.dtype == torch.float32 and not _PACKED_FAILED


def _packed_failed(e: Exception, cache: FoldedWeight) -> None:
    _PACKED_FAILED.append(f"{type(e).__name__}: {e}")
    warnings.warn("lafa VAE inference: oneDNN packed convolution unavailable "
                  f"({_PACKED_FAILED[0]}); using torch's dense conv1d / conv_transpose1d", stacklevel=3)
    cache.packed = {}


def conv_inference(x: torch.Tensor, cache: FoldedWeight, bias: torch.Tensor | None, stride: int, padding: int,
                   dilation: int, residual: torch.Tensor | None = None,
                   winograd_tile: tuple[int, int] | None = None) -> torch.Tensor:
    """Conv1d with the folded weight (plus `residual`, added in the conv's output pass as oneDNN's binary post-op),
    through oneDNN's weight packed once per input shape on CPU float32: torch's dense path reorders the weight (and
    a (B, C, L) input) on every call. 1e-6 of the max from the dense conv (summation order). Elsewhere, or if the
    packed op is unavailable (warned once), dense conv1d (+ add). `winograd_tile` (m, least input channels):
    kernel-7 'same' convs with enough channels run as Winograd F(m, 7)."""
    w = cache.weight
    if winograd_tile is not None and _winograd_ok(x, w, stride, padding, dilation, winograd_tile[1]):
        try:
            m = winograd_tile[0]
            block = winograd.block_tiles(tuple(x.shape), dilation, m)  # one block shape for all long inputs
            packed = cache.packed_for(("winograd", m, block), lambda: winograd.pack(w, block, m))
            y = winograd.conv1d(x, packed, bias, dilation, m, w.shape[0])
            return y if residual is None else residual + y
        except Exception as e:  # noqa: BLE001 - numba or oneDNN unavailable or refusing: the direct path
            _WINOGRAD_FAILED.append(f"{type(e).__name__}: {e}")
            warnings.warn("lafa VAE inference: Winograd convolution unavailable "
                          f"({_WINOGRAD_FAILED[0]}); using the direct convolution", stacklevel=3)
    if _packed_ok(x) and stride > 1 and _space_to_depth_ok(x, w, stride, padding):
        try:
            return _strided_conv_space_to_depth(x, cache, bias, stride, padding)
        except (AttributeError, RuntimeError) as e:
            _packed_failed(e, cache)
    if _packed_ok(x):
        try:
            x4 = x.unsqueeze(2)  # (B, C, 1, L)
            packed = cache.packed_for(tuple(x4.shape), lambda: torch.ops.mkldnn._reorder_convolution_weight(
                w.unsqueeze(2), [0, padding], [1, stride], [1, dilation], 1, list(x4.shape)))
            args = (packed, bias, [0, padding], [1, stride], [1, dilation], 1)
            fmt = torch.channels_last if x4.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format
            if residual is not None and residual.shape[1] == w.shape[0] and stride == 1 and \
                    residual.unsqueeze(2).is_contiguous(memory_format=fmt):  # same layout as the output: fuse
                y = torch.ops.mkldnn._convolution_pointwise.binary(x4, residual.unsqueeze(2), *args, "add", None,
                                                                   None, [], None)
                return y.squeeze(2)  # (B, out, L), in x's layout
            y = torch.ops.mkldnn._convolution_pointwise(x4, *args, "none", [], "").squeeze(2)
            return y if residual is None else residual + y
        except (AttributeError, RuntimeError) as e:  # op missing in this torch build, or oneDNN refused
            _packed_failed(e, cache)
    y = torch.nn.functional.conv1d(x, w, bias, stride, padding, dilation)
    return y if residual is None else residual + y


_WINOGRAD_FAILED: list[str] = []  # the first reason the Winograd path failed (then direct convolutions)


def _winograd_ok(x: torch.Tensor, w: torch.Tensor, stride: int, padding: int, dilation: int, min_channels: int
                 ) -> bool:
    return (not _WINOGRAD_FAILED and _packed_ok(x) and w.shape[-1] == winograd.KERNEL and stride == 1 and padding == 3 * dilation
            and w.shape[1] >= min_channels and x.stride(1) == 1)


def _space_to_depth_ok(x: torch.Tensor, w: torch.Tensor, stride: int, padding: int) -> bool:
    """The encoder's downsampling convs (kernel 2s, stride s, padding s / 2) on a channels-last input."""
    return w.shape[-1] == 2 * stride and 2 * padding == stride and x.transpose(1, 2).is_contiguous()


def _strided_conv_space_to_depth(x: torch.Tensor, cache: FoldedWeight, bias: torch.Tensor | None, stride: int,
                                 padding: int) -> torch.Tensor:
    """A kernel-2s, stride-s conv as a kernel-2, stride-1 conv over s x C channels: on a channels-last input the
    regrouping of s consecutive samples into one frame is a free view (after the zero padding).

    y[t] = sum_{j<2, r<s} W[:, :, s j + r] x_pad[s (t + j) + r]: the same products, summed in another order.
    oneDNN's strided 1-D kernels ran at 20-40 GF/s here against 40-78 for this form (docs/benchmarks.md).
    """
    b, c, length = x.shape
    w = cache.weight  # (O, C, 2s)
    frames = length // stride  # the strided conv's output length: floor((L + 2p - 2s) / s) + 1 with 2p = s
    need = (frames + 1) * stride
    xp = torch.nn.functional.pad(x.transpose(1, 2), (0, 0, padding, max(need - padding - length, 0)))[:, :need]
    xs = xp.reshape(b, frames + 1, stride * c).transpose(1, 2).unsqueeze(2)  # (B, sC, 1, T + 1) channels-last
    w2 = w.view(w.shape[0], c, 2, stride).permute(0, 3, 1, 2).reshape(w.shape[0], stride * c, 1, 2)  # [o, rC+c, 0, j]
    packed = cache.packed_for(tuple(xs.shape), lambda: torch.ops.mkldnn._reorder_convolution_weight(
        w2.contiguous(), [0, 0], [1, 1], [1, 1], 1, list(xs.shape)))
    y = torch.ops.mkldnn._convolution_pointwise(xs, packed, bias, [0, 0], [1, 1], [1, 1], 1, "none", [], "")
    return y.squeeze(2)  # (B, O, T), channels-last


def conv_transpose_inference(x: torch.Tensor, cache: FoldedWeight, bias: torch.Tensor | None, stride: int,
                             padding: int, dilation: int) -> torch.Tensor:
    """Transposed conv with the folded weight, through oneDNN's packed weight layout on CPU float32.

    torch's dense CPU path reorders the (in, out, k) weight on every call; packing once per input shape removes
    that (exact: same oneDNN kernel). Elsewhere, or if the packed op is unavailable (warned once), the dense op.
    """
    w = cache.weight
    if _packed_ok(x):
        try:
            x4 = x.unsqueeze(2)  # (B, C, 1, L)
            packed = cache.packed_for(tuple(x4.shape), lambda: torch.ops.mkldnn._reorder_convolution_transpose_weight(
                w.unsqueeze(2), [0, padding], [0, 0], [1, stride], [1, dilation], 1, list(x4.shape)))
            y = torch.ops.mkldnn._convolution_transpose_pointwise(
                x4, packed, bias, [0, padding], [0, 0], [1, stride], [1, dilation], 1,
                "none", [], "")  # (B, out, 1, L * stride)
            return y.squeeze(2)
        except (AttributeError, RuntimeError) as e:  # op missing in this torch build, or oneDNN refused
            _packed_failed(e, cache)
    return torch.nn.functional.conv_transpose1d(x, w, bias, stride, padding, dilation=dilation)


def _snake(x: torch.Tensor, alpha: torch.Tensor, inv_beta: torch.Tensor) -> torch.Tensor:
    return x + inv_beta * torch.sin(alpha * x).pow(2)


def snake_eager(x: torch.Tensor, alpha: torch.Tensor, inv_beta: torch.Tensor) -> torch.Tensor:
    """x + inv_beta * sin(alpha x)^2 with one temporary, updated in place (no autograd: inference only)."""
    t = x * alpha
    t.sin_()
    t.square_()
    return torch.addcmul(x, t, inv_beta)


_compiled_snake: list[Callable | None] = []  # [] not tried yet; [None] compile unavailable (warned); [fn]


def _no_cuda_runtime_notice(record: logging.LogRecord) -> bool:
    """False for the notice torch's C++ build helper logs when a CUDA build of torch compiles for the CPU on a machine
    without a GPU ("No CUDA runtime is found, using CUDA_HOME=..."): it says nothing about lafa's CPU kernel."""
    return not str(record.msg).startswith("No CUDA runtime is found")


def snake_fused(x: torch.Tensor, alpha: torch.Tensor, inv_beta: torch.Tensor) -> torch.Tensor:
    """SnakeBeta in one compiled kernel; the eager in-place form for small tensors or where compile fails."""
    if x.numel() < FUSED_SNAKE_MIN_NUMEL or _compiled_snake == [None]:
        return snake_eager(x, alpha, inv_beta)
    if not _compiled_snake:
        cpp_logger = logging.getLogger("torch.utils.cpp_extension")
        if _no_cuda_runtime_notice not in cpp_logger.filters:
            cpp_logger.addFilter(_no_cuda_runtime_notice)
        _compiled_snake.append(torch.compile(_snake, dynamic=True))
    try:
        return _compiled_snake[0](x, alpha, inv_beta)
    except Exception as e:  # noqa: BLE001 - any compiler failure (no C++ compiler, backend error) means eager
        _compiled_snake[0] = None
        warnings.warn(f"lafa VAE inference: torch.compile of SnakeBeta failed ({type(e).__name__}: "
                      f"{str(e).splitlines()[0] if str(e) else ''}); using the eager SnakeBeta (slower)",
                      stacklevel=2)
        return snake_eager(x, alpha, inv_beta)


def tiled(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, tile_elements: int | None,
          halo: int) -> torch.Tensor:
    """Run a length-preserving stack `fn` on time tiles of x (B, C, L) of about `tile_elements` B x C x L elements
    (cache-sized), each read with `halo` samples of context on either side (clamped at the clip's edges). With
    halo >= the stack's one-sided reach, equal to the whole call up to summation order. Returns x's layout."""
    b, c, length = x.shape
    tile = max(tile_elements // (b * c), 4 * halo, 1) if tile_elements else length
    if length <= tile:
        return fn(x)
    n = math.ceil(length / tile)
    step = math.ceil(length / n)  # equal tiles but the last (two shapes: each conv packs its weight twice at most)
    bounds = [min(i * step, length) for i in range(n + 1)]
    out = None
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
        a, z = max(lo - halo, 0), min(hi + halo, length)
        y = fn(x[..., a:z])[..., lo - a: hi - a]  # (B, C', hi - lo)
        if out is None:
            out = (torch.empty(b, length, y.shape[1], dtype=y.dtype, device=y.device).transpose(1, 2)
                   if y.stride(1) == 1 else y.new_empty(b, y.shape[1], length))
        out[..., lo:hi] = y
    return out
