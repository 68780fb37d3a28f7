"""Winograd F(m, 7) convolutions (lafa.models.winograd) against the direct convolution in float64."""

from __future__ import annotations

import warnings
from fractions import Fraction

import pytest
import torch
import torch.nn.functional as F

from lafa.models import vae_inference, winograd
from lafa.models.oobleck import OobleckVAE, WNConv1d
from lafa.models.vae_engine import InferenceVAE
from lafa.models.vae_inference import channels_last

pytestmark = pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="needs oneDNN (CPU)")


@pytest.mark.parametrize("m", sorted(winograd.POINTS))
def test_matrices_compute_the_correlation_exactly(m):
    """A^T [(G g) * (B^T d)] = sum_k g_k d_{j+k}: the algebra holds in float64 to rounding (a wrong point set,
    transposition or inverse breaks it by O(1))."""
    at, g, bt = winograd.matrices(m)
    assert at.shape == (m, m + 6) and g.shape == (m + 6, 7) and bt.shape == (m + 6, m + 6)
    gen = torch.Generator().manual_seed(m)
    for _ in range(5):
        w, d = torch.randn(7, generator=gen, dtype=torch.float64), torch.randn(m + 6, generator=gen, dtype=torch.float64)
        direct = torch.stack([w @ d[j: j + 7] for j in range(m)])
        torch.testing.assert_close(at @ ((g @ w) * (bt @ d)), direct, rtol=0, atol=1e-10)


def _conv(x, w, bias, d, m):
    block = winograd.block_tiles(tuple(x.shape), d, m)
    return winograd.conv1d(x, winograd.pack(w, block, m), bias, d, m, w.shape[0])


def _rel(a, b):
    return ((a.double() - b).abs().max() / b.abs().max()).item()


@pytest.mark.parametrize("m", sorted(winograd.POINTS))
@pytest.mark.parametrize("batch,length,dilation", [(1, 333, 1), (2, 257, 3), (3, 100, 9), (1, 5, 9), (2, 4096, 1)])
def test_conv1d_equals_direct_convolution(m, batch, length, dilation):
    """Lengths that are not a multiple of the tile (m d), shorter than one tile, batches, every dilation; channels
    out != in; bias. Error against float64 within the documented bound, the direct float32 conv's own ~1e-6."""
    gen = torch.Generator().manual_seed(batch * 1000 + length + dilation)
    c_in, c_out = 48, 40
    w = torch.randn(c_out, c_in, 7, generator=gen) / (7 * c_in) ** 0.5
    bias = torch.randn(c_out, generator=gen)
    x = channels_last(torch.randn(batch, c_in, length, generator=gen))
    ref = F.conv1d(x.double(), w.double(), bias.double(), 1, 3 * dilation, dilation)
    y = _conv(x, w, bias, dilation, m)
    assert y.shape == ref.shape and y.stride(1) == 1  # (B, O, L) channels-last
    assert _rel(y, ref) < (1e-5 if m == 2 else 5e-5)
    y0 = _conv(x, w, None, dilation, m)  # no bias
    assert _rel(y0, ref - bias.double()[:, None]) < (1e-5 if m == 2 else 5e-5)


def test_blocks_do_not_change_the_result(monkeypatch):
    """Several GEMM blocks (the last one partly used), on one or two threads, give the same bits as one block on
    one thread: each tile is computed independently."""
    gen = torch.Generator().manual_seed(0)
    w, x = torch.randn(32, 32, 7, generator=gen), channels_last(torch.randn(2, 32, 3001, generator=gen))
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = _conv(x, w, None, 3, 4)
        monkeypatch.setattr(winograd, "BLOCK_ELEMENTS", 10 * 32 * 130)
        monkeypatch.setattr(winograd, "MIN_BLOCK_TILES", 1)
        assert winograd.block_tiles(tuple(x.shape), 3, 4) == 130 < winograd.num_tiles(tuple(x.shape), 3, 4)
        torch.set_num_threads(2)
        many = _conv(x, w, None, 3, 4)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one, many)


def _einsum_f4(x, w, points):
    """F(4, 7) for a (1, C, 2000) input in plain float32 einsums, for any point set."""
    at, g, bt = winograd.matrices(4, points=points)
    u = torch.einsum("ak,ock->aoc", g, w.double()).float()
    xp = F.pad(x, (3, 3))[0].T  # (2006, C): 500 tiles of 4 outputs read 10 samples each
    tiles = torch.stack([xp[4 * n: 4 * n + 10] for n in range(500)])  # (N, 10, C)
    v = torch.einsum("at,ntc->anc", bt.float(), tiles)
    return torch.einsum("ja,ano->njo", at.float(), torch.einsum("anc,aoc->ano", v, u)).reshape(2000, -1).T


def test_sao_sized_error_bound():
    """At the SAO VAE's widths the per-conv error stays within the documented bounds (6e-6 m = 2, 3e-5 m = 4 of the
    max against float64), and lafa's F(4, 7) points beat the textbook +-3 in the same float32 arithmetic."""
    gen = torch.Generator().manual_seed(3)
    c = 256
    w = torch.randn(c, c, 7, generator=gen) / (7 * c) ** 0.5
    x = channels_last(torch.randn(1, c, 2000, generator=gen))
    ref = F.conv1d(x.double(), w.double(), None, 1, 3, 1)
    errors = {m: _rel(_conv(x, w, None, 1, m), ref) for m in winograd.POINTS}
    assert errors[2] < 6e-6 and errors[4] < 3e-5
    textbook = winograd.POINTS[4][:7] + (Fraction(3), Fraction(-3))
    assert _rel(_einsum_f4(x, w, textbook), ref[0]) > 1.5 * _rel(_einsum_f4(x, w, winograd.POINTS[4]), ref[0])


def _wide_vae() -> OobleckVAE:
    torch.manual_seed(0)
    vae = OobleckVAE(channels=8, c_mults=(1, 2, 4), strides=(2, 2, 2), latent_dim=4)
    with torch.no_grad():  # non-trivial snake parameters
        for name, p in vae.named_parameters():
            if name.endswith((".alpha", ".beta")):
                p.uniform_(-0.5, 0.5)
    return vae


def test_vae_takes_the_winograd_path_and_matches_direct(monkeypatch):
    """The engine routes every kernel-7 conv with enough channels through Winograd (counted), and the
    encoder and decoder outputs stay within 5e-5 of the direct path's."""
    vae = _wide_vae()
    engine = InferenceVAE(vae)
    audio, z = 0.3 * torch.randn(2, 2, 8 * 200), torch.randn(2, 4, 200)
    calls = []
    real = winograd.conv1d
    monkeypatch.setattr(winograd, "conv1d", lambda *a, **k: calls.append(a[0].shape[1]) or real(*a, **k))
    with torch.no_grad():
        engine.configure(winograd_tile=None)
        direct = engine.encoder_out(audio), engine.decode(z)
        assert calls == []
        engine.configure(winograd_tile=4, winograd_min_channels=8)
        fast = engine.encoder_out(audio), engine.decode(z)
    k7 = [m for m in vae.modules() if isinstance(m, WNConv1d) and m.kernel_size == 7 and m.weight_v.shape[1] >= 8]
    assert k7 and sorted(set(calls)) == sorted({m.weight_v.shape[1] for m in k7}) and len(calls) == len(k7)
    for a, b in zip(fast, direct, strict=True):
        assert _rel(a, b.double()) < 5e-5


def test_winograd_failure_warns_once_and_runs_direct(monkeypatch):
    engine = InferenceVAE(_wide_vae())
    audio = 0.3 * torch.randn(1, 2, 8 * 64)
    monkeypatch.setattr(vae_inference, "_WINOGRAD_FAILED", [])

    def broken(*args, **kwargs):
        raise RuntimeError("no numba here")

    monkeypatch.setattr(winograd, "conv1d", broken)
    with torch.no_grad():
        engine.configure(winograd_tile=None)
        direct = engine.encoder_out(audio)
        engine.configure(winograd_tile=4, winograd_min_channels=8)
        with pytest.warns(UserWarning, match="Winograd convolution unavailable .*no numba here"):
            fallback = engine.encoder_out(audio)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            engine.encoder_out(audio)  # warned once only
    assert torch.equal(fallback, direct)


def test_config_rejects_unknown_tile():
    with pytest.raises(ValueError, match="winograd_tile must be one of"):
        InferenceVAE(_wide_vae(), winograd_tile=3)
