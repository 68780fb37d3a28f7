"""Winograd (Toom-Cook) minimal filtering for the VAE's kernel-7 dilated convolutions at inference.

F(m, 7) computes m outputs of a 7-tap correlation from an (m + 6)-sample tile with m + 6 multiplications per
input-output channel pair instead of 7 m (Lavin & Gray 2016, "Fast Algorithms for Convolutional Neural Networks"):

    y = A^T [ (G g) * (B^T d) ]      per tile; across channels the products become m + 6 GEMMs of (tiles x C_in)
                                      by (C_in x C_out): U[a] = sum_k G[a, k] W[:, :, k]^T, M[a] = V[a] @ U[a].

F(4, 7) does 10 / 28 of the multiply-adds of the direct convolution; the interpolation points (`POINTS`, a
search over small rationals) decide its float32 error (docs/benchmarks.md). A dilated convolution runs on the
dilated grid: tile (b, n, r) reads samples n m d + r + t d (t < m + 6) and writes n m d + r + j d (j < m). The
transforms are numba loops in the calling thread; the GEMMs one oneDNN grouped 1x1 convolution over the
tile-major (tiles, m + 6, C) layout, its packed weight cached.
"""

from __future__ import annotations

from fractions import Fraction
from functools import cache

import numba
import numpy as np
import torch

POINTS: dict[int, tuple[Fraction, ...]] = {  # interpolation points (plus infinity) per output tile m, kernel 7
    2: tuple(map(Fraction, (0, 1, -1, 2, -2, "1/2", "-1/2"))),
    4: tuple(map(Fraction, (0, 1, -1, 2, -2, "1/2", "-1/2", "-3/2", "3/4"))),
}
KERNEL = 7


def _inverse(rows: list[list[Fraction]]) -> list[list[Fraction]]:
    """Exact Gauss-Jordan inverse of a square matrix of Fractions."""
    n = len(rows)
    a = [row[:] + [Fraction(int(i == j)) for j in range(n)] for i, row in enumerate(rows)]
    for c in range(n):
        p = next(r for r in range(c, n) if a[r][c] != 0)
        a[c], a[p] = a[p], a[c]
        a[c] = [v / a[c][c] for v in a[c]]
        for r in range(n):
            if r != c and a[r][c] != 0:
                f = a[r][c]
                a[r] = [x - f * y for x, y in zip(a[r], a[c], strict=True)]
    return [row[n:] for row in a]


def _evaluation(points: tuple[Fraction, ...], degree: int) -> list[list[Fraction]]:
    """Rows evaluating a polynomial of `degree` coefficients at each point, and its leading coefficient (infinity)."""
    return [[p**i for i in range(degree)] for p in points] + [[Fraction(0)] * (degree - 1) + [Fraction(1)]]


def matrices(m: int, r: int = KERNEL, points: tuple[Fraction, ...] | None = None
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(A^T (m, a), G (a, r), B^T (a, a)) in float64 for F(m, r), a = m + r - 1, exact up to the final rounding.

    Correlation y_j = sum_k g_k x_{j+k} is the transpose of the Toom-Cook linear convolution c = V^-1 [(E_r g) *
    (E_m u)] (E: evaluation at the points, V: of the product's a coefficients), so A^T = E_m^T, B^T = V^-T."""
    points = POINTS[m] if points is None else points
    if len(points) != m + r - 2:
        raise ValueError(f"F({m}, {r}) needs {m + r - 2} finite points, got {len(points)}")
    em, er, v = _evaluation(points, m), _evaluation(points, r), _inverse(_evaluation(points, m + r - 1))
    f64 = lambda rows: torch.tensor([[float(x) for x in row] for row in rows], dtype=torch.float64)  # noqa: E731
    return f64(em).T.contiguous(), f64(er), f64(v).T.contiguous()


def filter_transform(weight: torch.Tensor, m: int) -> torch.Tensor:
    """(O, C, 7) conv weight -> (a O, C, 1, 1): group a holds U[a]^T = (G W)[a], as the grouped 1x1 conv wants."""
    _, g, _ = matrices(m)
    u = torch.einsum("ak,ock->aoc", g, weight.double())  # (a, O, C), computed in float64 then rounded once
    return u.float().reshape(-1, weight.shape[1], 1, 1).contiguous()


@numba.njit(nogil=True, cache=True)
def _input_tiles(x, bt, m, d, pad, tiles, first, count, v):  # pragma: no cover - compiled
    """v[i] = B^T @ (the tile of x read by tile first + i), for i < count; x (B, L, C), v (block, a, C)."""
    _, length, channels = x.shape
    a = bt.shape[0]
    for i in range(count):
        q = first + i
        b, n, r = q // (tiles * d), (q // d) % tiles, q % d
        base = n * m * d + r - pad
        for k in range(a):
            for c in range(channels):
                v[i, k, c] = 0.0
        for t in range(a):
            s = base + t * d
            if s < 0 or s >= length:
                continue  # the convolution's zero padding
            for k in range(a):
                f = bt[k, t]
                if f != 0.0:
                    for c in range(channels):
                        v[i, k, c] += f * x[b, s, c]


@numba.njit(nogil=True, cache=True)
def _output_tiles(mm, at, bias, m, d, tiles, first, count, y):  # pragma: no cover - compiled
    """y[outputs of tile first + i] = A^T @ mm[i] + bias, for i < count; mm (block, a, O), y (B, L, O)."""
    length, out = y.shape[1], y.shape[2]
    a = at.shape[1]
    for i in range(count):
        q = first + i
        b, n, r = q // (tiles * d), (q // d) % tiles, q % d
        for j in range(m):
            p = n * m * d + j * d + r
            if p >= length:
                continue
            for o in range(out):
                y[b, p, o] = bias[o]
            for k in range(a):
                f = at[j, k]
                if f != 0.0:
                    for o in range(out):
                        y[b, p, o] += f * mm[i, k, o]


@cache
def _transforms32(m: int) -> tuple[np.ndarray, np.ndarray]:
    """(A^T, B^T) in float32 for the kernels."""
    at, _, bt = matrices(m)
    return at.float().numpy(), bt.float().numpy()


BLOCK_ELEMENTS = 1 << 20  # transformed-input floats per GEMM (4 MB): the tiles of a block stay in cache from
# transform to GEMM to inverse transform (one GEMM over a whole 1 s activation ran at half the rate here)
MIN_BLOCK_TILES = 128


def num_tiles(x_shape: tuple[int, ...], dilation: int, m: int) -> int:
    """Tiles of an input (B, C, L): B x ceil(L / (m d)) x d."""
    b, _, length = x_shape
    return b * -(-length // (m * dilation)) * dilation


def block_tiles(x_shape: tuple[int, ...], dilation: int, m: int) -> int:
    """Tiles per GEMM block: about BLOCK_ELEMENTS transformed floats (at least 128), or all tiles if fewer."""
    per_block = max(MIN_BLOCK_TILES, BLOCK_ELEMENTS // ((m + KERNEL - 1) * x_shape[1]))
    return min(per_block, num_tiles(x_shape, dilation, m))


def conv1d(x: torch.Tensor, packed: torch.Tensor, bias: torch.Tensor | None, dilation: int, m: int,
           out_channels: int) -> torch.Tensor:
    """A kernel-7, stride-1, 'same' (padding 3 d) conv1d of a channels-last float32 CPU input (B, C, L) by F(m, 7).

    `packed`: `pack(weight, block, m)`, oneDNN's packed grouped 1x1 conv over a block of `block_tiles` tiles in the
    tile-major (tiles, a, C) layout. Tiles are processed block by block (the last block is computed whole, its
    unused tiles never read). Returns (B, O, L), channels-last."""
    b, c, length = x.shape
    a = m + KERNEL - 1
    at, bt = _transforms32(m)
    tiles = -(-length // (m * dilation))  # per batch item and residue
    q, block = num_tiles(x.shape, dilation, m), block_tiles(x.shape, dilation, m)
    xs = x.transpose(1, 2).numpy()  # (B, L, C), contiguous
    y = torch.empty(b, length, out_channels)
    bias_ = (torch.zeros(out_channels) if bias is None else bias.float()).numpy()
    v = torch.empty(block, a, c)
    v4 = v.view(1, block, a * c).transpose(1, 2).unsqueeze(2)  # (1, a C, 1, block) channels-last
    for q0 in range(0, q, block):
        q1 = min(q0 + block, q)
        _input_tiles(xs, bt, m, dilation, 3 * dilation, tiles, q0, q1 - q0, v.numpy())
        mm = torch.ops.mkldnn._convolution_pointwise(v4, packed, None, [0, 0], [1, 1], [1, 1], a, "none", [], "")
        mm = mm.squeeze(2).transpose(1, 2).reshape(block, a, out_channels)  # a view of the channels-last output
        _output_tiles(mm.numpy(), at, bias_, m, dilation, tiles, q0, q1 - q0, y.numpy())
    return y.transpose(1, 2)  # (B, O, L) channels-last


def pack(weight: torch.Tensor, block: int, m: int) -> torch.Tensor:
    """oneDNN's packed grouped-1x1 weight of `filter_transform(weight, m)` for blocks of `block` tiles."""
    a, c = m + KERNEL - 1, weight.shape[1]
    return torch.ops.mkldnn._reorder_convolution_weight(filter_transform(weight, m), [0, 0], [1, 1], [1, 1], a,
                                                        [1, a * c, 1, block])
