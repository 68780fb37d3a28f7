"""TensorFlow 2.13's CPU STFT pieces in PyTorch, bit for bit: the FFT and the Hann window of openl3 0.4.2's
front end (docs/metrics.md, "The STFT").

The FD_openl3 reference (stable-audio-metrics pins tensorflow 2.13.1) computes `tf.signal.rfft` with Eigen's
`TensorFFT` (later releases use DUCC, tensorflow/tensorflow#6541, not reproduced here): for a power-of-two
length a bit-reversal permutation, 8-point butterflies, then merges of 16, 32, ..., n points whose twiddles
come from a float32 recurrence, w <- w * (1 + wp)^4, that drifts by up to 1.1e-5 (m = 2048): ~40x less
accurate than exact twiddles, and most of what the reference sees in the empty 22.05-24 kHz band of 44.1 kHz
audio. `eigen_rfft` repeats these float32 operations in the same order (complex products as (ac - bd, ad +
bc), no fused multiply-add), so it equals `tf.signal.rfft` bit for bit on the CPU (tested against recorded
TensorFlow outputs).
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch

SQRT2DIV2 = np.float32(0.7071067811865476)
MAX_LOG2 = 15  # Eigen's tables end at 2^15 points


def _cmul(ar, ai, br, bi):
    """std::complex<float> product as compiled without FMA: (ac - bd, ad + bc), each operation rounded."""
    return ar * br - ai * bi, ar * bi + ai * br


@functools.cache
def bit_reversal(n: int) -> np.ndarray:
    """The index order Eigen's scramble_FFT leaves: out[i] = in[perm[i]] (the bit reversal of i)."""
    bits = n.bit_length() - 1
    return np.array([int(format(i, f"0{bits}b")[::-1], 2) for i in range(n)], dtype=np.int64)


@functools.cache
def merge_twiddles(m: int) -> tuple[np.ndarray, np.ndarray]:
    """The float32 factors of Eigen's butterfly_1D_merge for size m (forward): (w, p), both (count, 2) re/im;
    w[k] the recurrence's w at step k (w_0 = 1, w_k = w_{k-1} * p[4]), p[j] = (1 + wp)^j for j = 0..4."""
    f = np.float32
    # Eigen's tables -2 sin^2(pi / m) and -sin(2 pi / m), 15 digits in TensorFFT.h cast to float32: the same
    # float32 values as these for every m = 4 .. 2^15
    one = (f(1.0) + f(-2 * math.sin(math.pi / m) ** 2), f(-math.sin(2 * math.pi / m)))
    powers = [(f(1.0), f(0.0)), one]
    for _ in range(3):
        powers.append(_cmul(*powers[-1], *one))
    w = [(f(1.0), f(0.0))]
    for _ in range(m // 8 - 1):
        w.append(_cmul(*w[-1], *powers[4]))
    return np.array(w, dtype=np.float32), np.array(powers, dtype=np.float32)


def _butterfly_8(re: torch.Tensor, im: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigen's butterfly_8 on the last axis (size 8), in its order of operations."""
    d = [(re[..., k], im[..., k]) for k in range(8)]

    def add(a, b):
        return a[0] + b[0], a[1] + b[1]

    def sub(a, b):
        return a[0] - b[0], a[1] - b[1]

    def times(a, cr, ci):  # a * ComplexScalar(cr, ci)
        return _cmul(a[0], a[1], cr, ci)

    s, z, one = SQRT2DIV2, np.float32(0.0), np.float32(1.0)
    t1 = [
        add(d[0], d[1]), sub(d[0], d[1]), add(d[2], d[3]), times(sub(d[2], d[3]), z, -one),
        add(d[4], d[5]), sub(d[4], d[5]), add(d[6], d[7]), times(sub(d[6], d[7]), z, -one),
    ]  # fmt: skip
    t2 = [
        add(t1[0], t1[2]), add(t1[1], t1[3]), sub(t1[0], t1[2]), sub(t1[1], t1[3]), add(t1[4], t1[6]),
        times(add(t1[5], t1[7]), s, -s), times(sub(t1[4], t1[6]), z, -one), times(sub(t1[5], t1[7]), -s, -s),
    ]  # fmt: skip
    out = [add(t2[k], t2[k + 4]) for k in range(4)] + [sub(t2[k], t2[k + 4]) for k in range(4)]
    return torch.stack([o[0] for o in out], -1), torch.stack([o[1] for o in out], -1)


def eigen_rfft(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(..., n) real float32, n a power of two (8 .. 2^15) -> (re, im), each (..., n // 2 + 1): tf.signal.rfft.

    On the CPU a compiled loop per frame (eigen_rfft_frames, ~10x faster), elsewhere the tensor form
    (eigen_rfft_tensor); the two are equal bit for bit (tests/metrics/test_eigen_fft.py).
    """
    _check(x)
    if x.device.type != "cpu":
        return eigen_rfft_tensor(x)
    n, lead = x.shape[-1], x.shape[:-1]
    re, im = eigen_rfft_frames(x.detach().reshape(-1, n).contiguous().numpy())
    return torch.from_numpy(re).reshape(*lead, -1), torch.from_numpy(im).reshape(*lead, -1)


def _check(x: torch.Tensor) -> None:
    n = x.shape[-1]
    if x.dtype != torch.float32:
        raise TypeError(f"eigen_rfft reproduces TensorFlow's float32 FFT; got {x.dtype}")
    if n < 8 or n & (n - 1) or n.bit_length() - 1 > MAX_LOG2:
        raise ValueError(f"eigen_rfft needs a power-of-two length from 8 to 2^{MAX_LOG2}, got {n}")


def eigen_rfft_tensor(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """eigen_rfft as tensor operations over all frames at once (any device)."""
    _check(x)
    n, lead = x.shape[-1], x.shape[:-1]
    re = x[..., torch.from_numpy(bit_reversal(n)).to(x.device)]
    im = torch.zeros_like(re)  # Eigen's MakeComplex: (x, 0)
    re, im = _butterfly_8(re.reshape(*lead, n // 8, 8), im.reshape(*lead, n // 8, 8))  # (..., n/8, 8)
    m = 16
    while m <= n:
        w, p = (torch.from_numpy(a).to(x.device) for a in merge_twiddles(m))
        shape = (*lead, n // m, 2, m // 8, 4)  # blocks of m: halves, recurrence steps, 4 points per step
        re, im = re.reshape(shape), im.reshape(shape)
        top_re, top_im = re[..., 0, :, :], im[..., 0, :, :]
        bot_re, bot_im = re[..., 1, :, :], im[..., 1, :, :]
        t_re, t_im = _cmul(bot_re, bot_im, w[:, 0:1], w[:, 1:2])  # data * w
        t_re, t_im = _cmul(t_re, t_im, p[:4, 0], p[:4, 1])  # (data * w) * wp_one^j; times (1, 0) is exact
        re = torch.stack([top_re + t_re, top_re - t_re], -3)  # (..., n/m, 2, m/8, 4)
        im = torch.stack([top_im + t_im, top_im - t_im], -3)
        m *= 2
    re, im = re.reshape(*lead, n), im.reshape(*lead, n)
    return re[..., : n // 2 + 1], im[..., : n // 2 + 1]


def eigen_rfft_frames(frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(F, n) float32 frames -> (re, im), each (F, n // 2 + 1): eigen_rfft_tensor's operations, one frame at a time."""
    n = frames.shape[1]
    tables = [merge_twiddles(2**k) for k in range(4, n.bit_length())]  # the merges m = 16, 32, ..., n
    w_all = np.concatenate([np.zeros((0, 2), np.float32), *(w for w, _ in tables)])  # (sum of m / 8, 2)
    p_all = np.stack([p for _, p in tables]) if tables else np.zeros((0, 5, 2), np.float32)  # (merges, 5, 2)
    re = np.empty((frames.shape[0], n // 2 + 1), np.float32)
    im = np.empty_like(re)
    _frames_kernel()(frames, bit_reversal(n), w_all, p_all, SQRT2DIV2, re, im)
    return re, im


@functools.cache
def _frames_kernel():
    """The compiled loop (numba, as resampy's; built on first use). No fastmath: numba then neither reassociates
    nor contracts a product and a sum into an FMA, so every float32 operation rounds as in the tensor form."""
    import numba

    @numba.jit(nopython=True, nogil=True, cache=False)
    def cmul(ar, ai, br, bi):
        return ar * br - ai * bi, ar * bi + ai * br

    @numba.jit(nopython=True, nogil=True, cache=False)
    def butterfly_8(re, im, base, s):  # _butterfly_8 on re/im[base : base + 8], in place
        z, one = np.float32(0.0), np.float32(1.0)
        d0r, d0i, d1r, d1i = re[base], im[base], re[base + 1], im[base + 1]
        d2r, d2i, d3r, d3i = re[base + 2], im[base + 2], re[base + 3], im[base + 3]
        d4r, d4i, d5r, d5i = re[base + 4], im[base + 4], re[base + 5], im[base + 5]
        d6r, d6i, d7r, d7i = re[base + 6], im[base + 6], re[base + 7], im[base + 7]
        a0r, a0i, a1r, a1i = d0r + d1r, d0i + d1i, d0r - d1r, d0i - d1i
        a2r, a2i = d2r + d3r, d2i + d3i
        a3r, a3i = cmul(d2r - d3r, d2i - d3i, z, -one)
        a4r, a4i, a5r, a5i = d4r + d5r, d4i + d5i, d4r - d5r, d4i - d5i
        a6r, a6i = d6r + d7r, d6i + d7i
        a7r, a7i = cmul(d6r - d7r, d6i - d7i, z, -one)
        b0r, b0i, b1r, b1i = a0r + a2r, a0i + a2i, a1r + a3r, a1i + a3i
        b2r, b2i, b3r, b3i = a0r - a2r, a0i - a2i, a1r - a3r, a1i - a3i
        b4r, b4i = a4r + a6r, a4i + a6i
        b5r, b5i = cmul(a5r + a7r, a5i + a7i, s, -s)
        b6r, b6i = cmul(a4r - a6r, a4i - a6i, z, -one)
        b7r, b7i = cmul(a5r - a7r, a5i - a7i, -s, -s)
        re[base], im[base], re[base + 4], im[base + 4] = b0r + b4r, b0i + b4i, b0r - b4r, b0i - b4i
        re[base + 1], im[base + 1], re[base + 5], im[base + 5] = b1r + b5r, b1i + b5i, b1r - b5r, b1i - b5i
        re[base + 2], im[base + 2], re[base + 6], im[base + 6] = b2r + b6r, b2i + b6i, b2r - b6r, b2i - b6i
        re[base + 3], im[base + 3], re[base + 7], im[base + 7] = b3r + b7r, b3i + b7i, b3r - b7r, b3i - b7i

    @numba.jit(nopython=True, nogil=True, cache=False)
    def kernel(frames, perm, w_all, p_all, s, out_re, out_im):
        count, n = frames.shape
        re = np.empty(n, np.float32)
        im = np.empty(n, np.float32)
        for f in range(count):
            for i in range(n):
                re[i] = frames[f, perm[i]]
                im[i] = np.float32(0.0)
            for base in range(0, n, 8):
                butterfly_8(re, im, base, s)
            m, level, offset = 16, 0, 0
            while m <= n:
                half = m // 2
                for block in range(0, n, m):
                    for k in range(m // 8):
                        wr, wi = w_all[offset + k, 0], w_all[offset + k, 1]
                        for j in range(4):
                            top = block + 4 * k + j
                            tr, ti = cmul(re[top + half], im[top + half], wr, wi)  # data * w
                            tr, ti = cmul(tr, ti, p_all[level, j, 0], p_all[level, j, 1])  # * wp_one^j
                            rr, ri = re[top], im[top]
                            re[top], im[top] = rr + tr, ri + ti
                            re[top + half], im[top + half] = rr - tr, ri - ti
                offset += m // 8
                level += 1
                m *= 2
            for i in range(n // 2 + 1):
                out_re[f, i], out_im[f, i] = re[i], im[i]

    return kernel


def _eigen_cos(x: np.ndarray) -> np.ndarray:
    """Eigen's float32 psincos_float<false> as built without FMA (TensorFlow's x86 wheels): cos of float32 x.
    Cody-Waite reduction by pi/2, then the cos / sin polynomials chosen and signed by the quadrant."""
    f = np.float32
    x = np.asarray(x, dtype=f)
    if np.abs(x).max(initial=0) >= 18838.0:
        raise ValueError("_eigen_cos covers |x| < 18838 (Eigen's fast path)")
    y_round = np.abs(x) * f(0.636619746685028076171875) + f(12582912)  # 2/pi, rounding to an integer
    quadrant = y_round.view(np.int32)
    y = y_round - f(12582912)
    r = np.abs(x)
    pi_half_parts = (
        -1.5703125, -0.000483989715576171875, 1.62865035235881805419921875e-07,
        5.5644315544167710640977020375430583953857421875e-11,
    )  # fmt: skip
    for c in pi_half_parts:
        r = r + y * f(c)  # pmadd without FMA: rounded product, rounded sum
    r2 = r * r
    cos_poly = f(2.4372266125283204019069671630859375e-05)
    for c in (-0.00138865201734006404876708984375, 0.041666619479656219482421875, -0.5, 1.0):
        cos_poly = cos_poly * r2 + f(c)
    sin_poly = f(-0.0001959234114083702898469196984621021329076029360294342041015625)
    for c in (0.0083326873655616851693794799871284340042620897293090820312500000,
              -0.1666666203982298255503735617821803316473960876464843750000000000):  # fmt: skip
        sin_poly = sin_poly * r2 + f(c)
    sin_poly = (sin_poly * r2) * r + r
    out = np.where((quadrant & 1) == 0, cos_poly, sin_poly)
    sign = ((quadrant + 1) << 30) & np.int32(-(2**31))  # cos: second bit of quadrant + 1
    return (out.view(np.int32) ^ sign).view(f)


@functools.cache
def _tensorflow_hann(n: int) -> np.ndarray:
    f = np.float32
    arg = (f(2 * np.pi) * np.arange(n, dtype=f)) / f(n)  # (2 pi * count) / n in float32, as window_ops.py
    return f(0.5) - f(0.5) * _eigen_cos(arg)


def tensorflow_hann_window(n: int) -> torch.Tensor:
    """(n,) float32: tf.signal.hann_window(n, periodic=True) of TensorFlow 2.13 on the CPU, bit for bit (its
    cosine is Eigen's float32 `pcos`; it differs from torch's window in ~11% of samples, by up to 6e-8)."""
    return torch.from_numpy(_tensorflow_hann(n).copy())


def complex_magnitude(re: torch.Tensor, im: torch.Tensor) -> torch.Tensor:
    """|re + i im| as tf.abs computes it on the CPU (libm hypotf: the float64 root rounded to float32)."""
    return torch.sqrt(re.double().square() + im.double().square()).float()
