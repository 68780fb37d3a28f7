"""The VAE's CPU inference engine (lafa.models.vae_engine.InferenceVAE, kernels in lafa.models.vae_inference)
against the plain model: folded weight norm, fused SnakeBeta, chunked encode/decode, bf16 gating, where it runs."""

import math

import pytest
import torch

from lafa.models import vae_inference
from lafa.models.autoencoder import VaeAutoencoder
from lafa.models.chunking import windows
from lafa.models.oobleck import OobleckVAE, WNConv1d
from lafa.models.vae_engine import InferenceVAE
from lafa.models.vae_inference import bf16_supported
from tests.helpers.vae import rel, seeded_vae

RATIO = 2048


def tiny(**kw) -> OobleckVAE:
    return seeded_vae(channels=4, latent_dim=8, **kw)


def reference(vae: OobleckVAE, fn: str, x: torch.Tensor) -> torch.Tensor:
    """The plain model on the same weights, autograd off."""
    with torch.no_grad():
        return getattr(vae, fn)(x)


def test_folded_equals_unfolded_and_state_dict_unchanged():
    vae = tiny()
    engine = InferenceVAE(vae, fused_snake=False, chunk_frames=None)  # isolate the fold
    keys = {k: v.clone() for k, v in vae.state_dict().items()}
    audio, z = torch.randn(2, 2, 5 * RATIO), torch.randn(2, 8, 5)
    with torch.no_grad():
        enc, dec = engine.encode_mean(audio), engine.decode(z)
    assert all(engine.folded[m].weight is not None for m in vae.modules() if isinstance(m, WNConv1d))  # it did fold
    assert rel(enc, reference(vae, "encode_mean", audio)) <= 1e-5
    assert rel(dec, reference(vae, "decode", z)) <= 1e-5
    state = vae.state_dict()
    assert state.keys() == keys.keys() and all(torch.equal(state[k], keys[k]) for k in keys)


def test_fused_snake_path_matches_plain_model():
    vae = tiny()
    engine = InferenceVAE(vae)  # default options; small tensors take the eager in-place snake form
    audio = torch.randn(1, 2, 7 * RATIO)
    with torch.no_grad():
        out = engine.decode(engine.encode_mean(audio))
        expected = vae.decode(vae.encode_mean(audio))
    assert rel(out, expected) <= 1e-5


def test_engine_leaves_training_parameters_and_gradients_alone():
    audio = torch.randn(1, 2, 3 * RATIO)
    a, b = tiny(), tiny()
    engine = InferenceVAE(a)
    with torch.no_grad():
        engine.decode(engine.encode_mean(audio))  # folds
    for vae in (a, b):
        vae.zero_grad()
        vae.decode(vae.encode_mean(audio)).square().mean().backward()
    for (name, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters(), strict=True):
        assert torch.equal(pa, pb), name
        assert torch.equal(pa.grad, pb.grad), name


def test_fold_follows_parameter_updates():
    """An optimizer step or load_state_dict after folding must not leave a stale folded weight."""
    vae = tiny()
    engine = InferenceVAE(vae, fused_snake=False)
    audio = torch.randn(1, 2, 2 * RATIO)
    with torch.no_grad():
        before = engine.encode_mean(audio)
        for p in vae.parameters():
            p.mul_(1.1)  # in place, as an optimizer does
        after = engine.encode_mean(audio)
    assert rel(after, reference(vae, "encode_mean", audio)) <= 1e-5 and not torch.allclose(before, after)
    vae.load_state_dict(tiny().state_dict())
    with torch.no_grad():
        assert rel(engine.encode_mean(audio), before) <= 1e-5


@pytest.mark.parametrize("stride,length", [(2, 9), (8, 3), (8, 1)])
def test_packed_transposed_conv_equals_dense(stride, length):
    torch.manual_seed(0)
    conv = WNConv1d(6, 5, 2 * stride, stride=stride, padding=math.ceil(stride / 2), transposed=True)
    engine, dense = InferenceVAE(conv), torch.nn.functional.conv_transpose1d
    with torch.no_grad():
        for shape in [(2, 6, length), (1, 6, length + 4), (2, 6, length)]:  # repacks on a new input shape
            x = torch.randn(shape)
            torch.testing.assert_close(engine.conv(conv, x), dense(x, conv.weight(), conv.bias, stride, conv.padding),
                                       rtol=1e-5, atol=1e-6)


def test_compiled_snake_kernel_matches_formula():
    x = torch.randn(2, 8, vae_inference.FUSED_SNAKE_MIN_NUMEL // 8)  # large enough to take the compiled kernel
    alpha, inv_beta = torch.rand(1, 8, 1) + 0.5, torch.rand(1, 8, 1) + 0.5
    expected = x + inv_beta * torch.sin(alpha * x) ** 2
    with torch.no_grad():
        out = vae_inference.snake_fused(x, alpha, inv_beta)
    if vae_inference._compiled_snake == [None]:
        pytest.skip("torch.compile unavailable here (warned); the eager form is covered below")
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


def test_compiling_snake_silences_only_torchs_no_cuda_runtime_notice(monkeypatch):
    """`lafa generate` on a CPU machine printed torch's "No CUDA runtime is found, using CUDA_HOME=..." (logged by
    torch's C++ build helper when the CUDA build of torch compiles the CPU kernel): that one notice is dropped once the
    kernel is compiled; the helper's other warnings still show."""
    import logging

    monkeypatch.setattr(vae_inference, "_compiled_snake", [])
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: fn)  # the filter is installed whether or not it compiles
    x = torch.randn(1, 4, vae_inference.FUSED_SNAKE_MIN_NUMEL // 4)
    vae_inference.snake_fused(x, torch.ones(1, 4, 1), torch.ones(1, 4, 1))
    logger = logging.getLogger("torch.utils.cpp_extension")
    seen: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: seen.append(record.getMessage())
    logger.addHandler(handler)
    try:
        logger.warning("No CUDA runtime is found, using CUDA_HOME='%s'", "/usr/local")
        logger.warning("Error checking compiler version for %s", "c++")
    finally:
        logger.removeHandler(handler)
    assert seen == ["Error checking compiler version for c++"]


def test_snake_compile_failure_warns_and_falls_back(monkeypatch):
    def broken(fn, **kw):
        def run(*a):
            raise RuntimeError("no C++ compiler")
        return run

    monkeypatch.setattr(vae_inference, "_compiled_snake", [])
    monkeypatch.setattr(torch, "compile", broken)
    x = torch.randn(1, 4, vae_inference.FUSED_SNAKE_MIN_NUMEL // 4)
    alpha, inv_beta = torch.full((1, 4, 1), 2.0), torch.full((1, 4, 1), 0.5)
    with pytest.warns(UserWarning, match="torch.compile of SnakeBeta failed .*no C\\+\\+ compiler"):
        out = vae_inference.snake_fused(x, alpha, inv_beta)
    torch.testing.assert_close(out, x + 0.5 * torch.sin(2 * x) ** 2, rtol=1e-5, atol=1e-5)
    assert vae_inference._compiled_snake == [None]


@pytest.mark.parametrize("frames,chunk,overlap", [(1000, 128, 24), (129, 128, 24), (300, 40, 13), (5, 8, 2),
                                                  (777, 100, 0)])
def test_windows_cover_overlap_and_bound_overhead(frames, chunk, overlap):
    spans = windows(frames, chunk, overlap)
    assert spans[0][0] == 0 and spans[-1][1] == frames
    assert all(b - a <= chunk for a, b in spans)
    assert all(spans[i][1] - spans[i + 1][0] >= overlap for i in range(len(spans) - 1))
    n, run = len(spans), sum(b - a for a, b in spans)
    assert n == 1 or n == math.ceil((frames - overlap) / (chunk - overlap))
    assert run <= frames + (n - 1) * overlap + n - 1  # overhead set by the overlap (plus rounding)


def test_chunked_equals_whole_clip_when_overlap_covers_the_receptive_field():
    """overlap >= 2 x reach + 1: every frame comes from window interiors, so chunked == whole (float rounding),
    seams included; the clip is not a multiple of the hop nor of a frame (trailing samples)."""
    vae = tiny()
    overlap = 2 * max(vae.encoder_reach, vae.decoder_reach) + 1
    engine = InferenceVAE(vae, chunk_frames=3 * overlap, overlap_frames=overlap)
    frames = 7 * overlap + 5
    audio = torch.randn(1, 2, frames * RATIO + 777)
    z = torch.randn(2, 8, frames)
    with torch.no_grad():
        assert len(windows(frames, 3 * overlap, overlap)) >= 3
        assert rel(engine.encode_mean(audio), reference(vae, "encode_mean", audio)) <= 1e-5
        assert rel(engine.decode(z), reference(vae, "decode", z)) <= 1e-5


def test_chunked_small_overlap_equals_whole_away_from_seams():
    """A narrow overlap (crossfade inside the receptive field): exact away from the seams, bounded at them."""
    vae = tiny()
    chunk, overlap = 40, 8
    engine = InferenceVAE(vae, chunk_frames=chunk, overlap_frames=overlap)
    frames = 150
    z = torch.randn(1, 8, frames)
    with torch.no_grad():
        out = engine.decode(z)
    ref = reference(vae, "decode", z)
    spans = windows(frames, chunk, overlap)
    near = torch.zeros(frames, dtype=torch.bool)
    for i in range(len(spans) - 1):  # frames within the decoder's reach of an inner window edge
        lo, hi = spans[i + 1][0] - vae.decoder_reach, spans[i][1] + vae.decoder_reach
        near[max(lo, 0): hi] = True
    far = (~near).repeat_interleave(RATIO)
    assert rel(out[..., far], ref[..., far]) <= 1e-5
    assert rel(out, ref) < 0.5  # the seams are approximate but not garbage


@pytest.mark.parametrize("samples", [RATIO + 5, 3 * RATIO, 5 * RATIO + 100])
def test_shorter_than_a_chunk_is_the_whole_clip(samples):
    vae = tiny()
    audio = torch.randn(1, 2, samples)
    with torch.no_grad():
        out = InferenceVAE(vae).encode_mean(audio)
    assert out.shape == (1, 8, samples // RATIO)
    assert rel(out, reference(vae, "encode_mean", audio)) <= 1e-5


def test_overlap_too_large_is_refused():
    with pytest.raises(ValueError, match="overlap_frames < chunk_frames"):
        InferenceVAE(tiny(), chunk_frames=16, overlap_frames=16)
    with pytest.raises(ValueError, match="three windows"):
        tiny().decode_chunked(torch.randn(1, 8, 60), chunk_size=32, overlap=24)


@pytest.mark.skipif(bf16_supported("cpu"), reason="this CPU has native bf16")
def test_bf16_refused_without_native_bf16():
    with pytest.raises(ValueError, match="native bf16"):
        InferenceVAE(tiny(), dtype=torch.bfloat16)


# bf16 against float32 on the SAO-width check below; docs/benchmarks.md states the measured figure
BF16_REL_ERROR_BOUND = 5e-2


@pytest.mark.skipif(not bf16_supported("cpu"), reason="bf16 arithmetic not native on this CPU")
@pytest.mark.xfail(torch.__version__.startswith("2.14.1"), strict=False,
                   reason="torch 2.14.1's CPU bf16 conv1d (weight (16, 8, 8), stride 4, padding 2) is ~100% off against "
                          "float32 on random tensors, outside lafa: the bound holds again once torch fixes it")
def test_bf16_error_against_float32():
    vae = tiny()
    engine = InferenceVAE(vae)
    audio = torch.randn(1, 2, 8 * RATIO)
    with torch.no_grad():
        z32 = engine.encode_mean(audio)
        engine.configure(dtype=torch.bfloat16)
        z16 = engine.encode_mean(audio)
        assert z16.dtype == torch.float32
        assert rel(z16, z32) <= BF16_REL_ERROR_BOUND
        assert rel(engine.decode(z32), reference(vae, "decode", z32)) <= BF16_REL_ERROR_BOUND


@pytest.mark.parametrize("kernel,stride,dilation,padding", [(7, 1, 1, 3), (7, 1, 9, 27), (1, 1, 1, 0), (16, 8, 1, 4),
                                                             (3, 1, 1, 1), (4, 2, 1, 1), (8, 4, 1, 2), (6, 3, 1, 2)])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_packed_conv_equals_dense(kernel, stride, dilation, padding, layout):
    torch.manual_seed(0)
    conv = WNConv1d(6, 5, kernel, stride=stride, padding=padding, dilation=dilation)
    engine = InferenceVAE(conv)
    with torch.no_grad():
        for shape in [(2, 6, 304), (1, 6, 457), (2, 6, 304), (1, 6, 301)]:  # repacks on a new shape; L % s != 0
            x = torch.randn(shape)
            x = vae_inference.channels_last(x) if layout == "channels_last" else x
            out = engine.conv(conv, x)
            packed = engine.folded[conv].packed
            assert 1 <= len(packed) <= vae_inference.PACKED_SHAPES  # a packed op ran: the direct one,
            s2d = layout == "channels_last" and kernel == 2 * stride and 2 * padding == stride  # or space-to-depth
            assert list(packed)[-1][1] == (stride * 6 if s2d else 6)
            torch.testing.assert_close(out, torch.nn.functional.conv1d(x, conv.weight(), conv.bias, stride, padding,
                                                                       dilation), rtol=1e-5, atol=1e-6)


def test_packed_conv_unavailable_warns_and_runs_dense(monkeypatch):
    def refuse(*args):
        raise RuntimeError("oneDNN refused")

    monkeypatch.setattr(vae_inference, "_PACKED_FAILED", [])
    monkeypatch.setattr(torch.ops.mkldnn, "_convolution_pointwise", refuse, raising=False)
    conv = WNConv1d(4, 4, 7, padding=3)
    x = torch.randn(1, 4, 50)
    with torch.no_grad(), pytest.warns(UserWarning, match="packed convolution unavailable .*oneDNN refused"):
        out = InferenceVAE(conv).conv(conv, x)
    torch.testing.assert_close(out, torch.nn.functional.conv1d(x, conv.weight().detach(), conv.bias.detach(),
                                                               padding=3))
    assert vae_inference._PACKED_FAILED


@pytest.mark.parametrize("tile_elements", [4 * 700, 4 * 333, 2 * 4 * 1000])
def test_tiled_residual_units_equal_whole_clip(tile_elements, monkeypatch):
    """Time tiles with exact halos: many tiles (the tiny VAE has 4 channels), clip not a multiple of a tile,
    batch 2; equal to the training path's whole-clip call to float rounding."""
    vae = tiny()
    engine = InferenceVAE(vae, tile_elements=tile_elements, chunk_frames=None)
    audio, z = torch.randn(2, 2, 3 * RATIO + 321), torch.randn(2, 8, 3)
    calls, tiled = [], vae_inference.tiled

    def counting(fn, x, tile, halo):
        calls.append(x.shape[-1])
        return tiled(fn, x, tile, halo)

    monkeypatch.setattr(vae_inference, "tiled", counting)
    with torch.no_grad():
        enc, dec = engine.encode_mean(audio), engine.decode(z)
    tile = tile_elements // (2 * 4)
    assert max(calls) > tile  # some block did run on several tiles
    assert rel(enc, reference(vae, "encode_mean", audio)) <= 1e-5
    assert rel(dec, reference(vae, "decode", z)) <= 1e-5


def test_tiled_needs_the_full_halo():
    """The halo is the stack's receptive-field reach: one sample short and the tile edges are wrong."""
    torch.manual_seed(0)
    stack = torch.nn.Sequential(WNConv1d(3, 3, 7, padding=3, dilation=1), WNConv1d(3, 3, 7, padding=9, dilation=3))
    reach = 3 + 9
    x = torch.randn(1, 3, 1000)
    with torch.no_grad():
        whole = stack(x)
        exact = vae_inference.tiled(stack, x, 3 * 100, reach)
        short = vae_inference.tiled(stack, x, 3 * 100, reach - 1)
    torch.testing.assert_close(exact, whole, rtol=1e-5, atol=1e-6)
    assert (short - whole).abs().max() > 1e-3


def test_channels_last_layout_is_an_option_with_equal_results():
    engine = InferenceVAE(tiny())
    audio, z = torch.randn(1, 2, 4 * RATIO), torch.randn(1, 8, 4)
    with torch.no_grad():
        fast = engine.encode_mean(audio), engine.decode(z)
        engine.configure(channels_last=False)
        plain = engine.encode_mean(audio), engine.decode(z)
    for a, b in zip(fast, plain, strict=True):
        assert a.is_contiguous() and b.is_contiguous()  # callers get the usual layout either way
        assert rel(a, b) <= 1e-5


@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "tile_view"])
def test_residual_add_fused_into_conv_equals_separate_add(layout):
    """residual + conv(x) through oneDNN's binary post-op (or, for a residual in another layout, a separate add)."""
    torch.manual_seed(0)
    conv = WNConv1d(6, 6, 1)
    x, r = torch.randn(2, 6, 300), torch.randn(2, 6, 300)
    if layout != "contiguous":
        x, r = vae_inference.channels_last(x), vae_inference.channels_last(r)
    if layout == "tile_view":  # a tile of a longer channels-last activation, as vae_inference.tiled passes it
        r = vae_inference.channels_last(torch.randn(2, 6, 500))[..., 100:400]
    with torch.no_grad():
        out = InferenceVAE(conv).conv(conv, x, residual=r)
        expected = r + torch.nn.functional.conv1d(x, conv.weight(), conv.bias)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)


def test_engine_runs_only_where_asked_and_measured_faster():
    """CPU float32 with autograd off: the engine; GPU (any other device), other dtypes, autograd on, a VAE that is
    not an OobleckVAE or `enabled=False`: the plain model, bit for bit."""
    vae = tiny()
    engine, off = InferenceVAE(vae), InferenceVAE(vae, enabled=False)
    audio = torch.randn(1, 2, 2 * RATIO)
    with torch.no_grad():
        assert engine.uses_engine(audio) and not off.uses_engine(audio)
        assert not engine.uses_engine(torch.empty(1, 2, RATIO, device="meta"))  # not the CPU
        assert not engine.uses_engine(audio.double())
        assert not InferenceVAE(torch.nn.Linear(2, 2)).uses_engine(audio)
        plain = vae.encode_mean(audio)
        assert torch.equal(off.encode_mean(audio), plain)
        assert torch.equal(VaeAutoencoder(vae, inference_engine=False).encode(audio), plain)
        assert torch.equal(VaeAutoencoder(vae).encode(audio), engine.encode_mean(audio))
    assert not engine.uses_engine(audio)  # autograd on
    assert engine.encode_mean(audio).requires_grad
