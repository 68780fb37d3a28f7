"""The VAE inference path (lafa.models.vae_inference) against the training path it replaces: folded weight norm,
fused SnakeBeta, chunked encode/decode, bf16 gating."""

import copy
import math

import pytest
import torch

from lafa.models import vae_inference
from lafa.models.oobleck import OobleckVAE, WNConv1d
from lafa.models.vae_inference import bf16_supported, windows

RATIO = 2048


def tiny(**kw) -> OobleckVAE:
    torch.manual_seed(0)
    vae = OobleckVAE(channels=4, latent_dim=8, **kw)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # no trivially unit gains / zero snake logs
        for name, p in vae.named_parameters():
            if name.endswith((".alpha", ".beta")):
                p.copy_(0.3 * torch.randn(p.shape, generator=g))
            elif name.endswith("weight_g"):
                p.mul_(1 + 0.2 * torch.randn(p.shape, generator=g))
    return vae


def reference(vae: OobleckVAE, fn: str, x: torch.Tensor) -> torch.Tensor:
    """The unchanged (training) path on the same weights: a copy in train mode, autograd off."""
    ref = copy.deepcopy(vae).train()
    with torch.no_grad():
        return getattr(ref, fn)(x)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).abs().max() / b.double().abs().max()).item()


def test_folded_equals_unfolded_and_state_dict_unchanged():
    vae = tiny().eval()
    vae.configure_inference(fused_snake=False, chunk_frames=None)  # isolate the fold
    keys = {k: v.clone() for k, v in vae.state_dict().items()}
    audio, z = torch.randn(2, 2, 5 * RATIO), torch.randn(2, 8, 5)
    with torch.no_grad():
        enc, dec = vae.encode_mean(audio), vae.decode(z)
    assert all(m.folded.weight is not None for m in vae.modules() if isinstance(m, WNConv1d))  # it did fold
    assert rel(enc, reference(vae, "encode_mean", audio)) <= 1e-5
    assert rel(dec, reference(vae, "decode", z)) <= 1e-5
    state = vae.state_dict()
    assert state.keys() == keys.keys() and all(torch.equal(state[k], keys[k]) for k in keys)


def test_fused_snake_path_matches_training_path():
    vae = tiny().eval()  # default inference config; small tensors take the eager in-place snake form
    audio = torch.randn(1, 2, 7 * RATIO)
    with torch.no_grad():
        out = vae.decode(vae.encode_mean(audio))
    ref = copy.deepcopy(vae).train()
    with torch.no_grad():
        expected = ref.decode(ref.encode_mean(audio))
    assert rel(out, expected) <= 1e-5


def test_round_trip_restores_training_parameters_and_gradients():
    audio = torch.randn(1, 2, 3 * RATIO)
    a, b = tiny(), tiny()
    a.eval()
    with torch.no_grad():
        a.decode(a.encode_mean(audio))  # folds
    a.train()
    assert all(m.folded.weight is None for m in a.modules() if isinstance(m, WNConv1d))  # caches released
    for vae in (a, b):
        vae.zero_grad()
        vae.decode(vae.encode_mean(audio)).square().mean().backward()
    for (name, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters(), strict=True):
        assert torch.equal(pa, pb), name
        assert torch.equal(pa.grad, pb.grad), name


def test_fold_follows_parameter_updates():
    """An optimizer step or load_state_dict after folding must not leave a stale folded weight."""
    vae = tiny().eval()
    vae.configure_inference(fused_snake=False)
    audio = torch.randn(1, 2, 2 * RATIO)
    with torch.no_grad():
        before = vae.encode_mean(audio)
        for p in vae.parameters():
            p.mul_(1.1)  # in place, as an optimizer does
        after = vae.encode_mean(audio)
    assert rel(after, reference(vae, "encode_mean", audio)) <= 1e-5 and not torch.allclose(before, after)
    vae.load_state_dict(tiny().state_dict())
    with torch.no_grad():
        assert rel(vae.encode_mean(audio), before) <= 1e-5


@pytest.mark.parametrize("stride,length", [(2, 9), (8, 3), (8, 1)])
def test_packed_transposed_conv_equals_dense(stride, length):
    torch.manual_seed(0)
    conv = WNConv1d(6, 5, 2 * stride, stride=stride, padding=math.ceil(stride / 2), transposed=True).eval()
    dense = torch.nn.functional.conv_transpose1d
    with torch.no_grad():
        for shape in [(2, 6, length), (1, 6, length + 4), (2, 6, length)]:  # repacks on a new input shape
            x = torch.randn(shape)
            torch.testing.assert_close(conv(x), dense(x, conv.weight(), conv.bias, stride, conv.padding),
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
    vae = tiny().eval()
    overlap = 2 * max(vae.encoder_reach, vae.decoder_reach) + 1
    vae.configure_inference(chunk_frames=3 * overlap, overlap_frames=overlap)
    frames = 7 * overlap + 5
    audio = torch.randn(1, 2, frames * RATIO + 777)
    z = torch.randn(2, 8, frames)
    with torch.no_grad():
        assert len(windows(frames, 3 * overlap, overlap)) >= 3
        assert rel(vae.encode_mean(audio), reference(vae, "encode_mean", audio)) <= 1e-5
        assert rel(vae.decode(z), reference(vae, "decode", z)) <= 1e-5


def test_chunked_small_overlap_equals_whole_away_from_seams():
    """A narrow overlap (crossfade inside the receptive field): exact away from the seams, bounded at them."""
    vae = tiny().eval()
    chunk, overlap = 40, 8
    vae.configure_inference(chunk_frames=chunk, overlap_frames=overlap)
    frames = 150
    z = torch.randn(1, 8, frames)
    with torch.no_grad():
        out = vae.decode(z)
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
    vae = tiny().eval()
    audio = torch.randn(1, 2, samples)
    with torch.no_grad():
        out = vae.encode_mean(audio)
    assert out.shape == (1, 8, samples // RATIO)
    assert rel(out, reference(vae, "encode_mean", audio)) <= 1e-5


def test_overlap_too_large_is_refused():
    with pytest.raises(ValueError, match="overlap_frames < chunk_frames"):
        tiny().configure_inference(chunk_frames=16, overlap_frames=16)
    with pytest.raises(ValueError, match="three windows"):
        tiny().eval().decode_chunked(torch.randn(1, 8, 60), chunk_size=32, overlap=24)


@pytest.mark.skipif(bf16_supported("cpu"), reason="this CPU has native bf16")
def test_bf16_refused_without_native_bf16():
    with pytest.raises(ValueError, match="native bf16"):
        tiny().configure_inference(dtype=torch.bfloat16)


# bf16 against float32 on the SAO-width check below; docs/benchmarks.md states the measured figure
BF16_REL_ERROR_BOUND = 5e-2


@pytest.mark.skipif(not bf16_supported("cpu"), reason="bf16 arithmetic not native on this CPU")
def test_bf16_error_against_float32():
    vae = tiny().eval()
    audio = torch.randn(1, 2, 8 * RATIO)
    with torch.no_grad():
        z32 = vae.encode_mean(audio)
        vae.configure_inference(dtype=torch.bfloat16)
        z16 = vae.encode_mean(audio)
        assert z16.dtype == torch.float32
        assert rel(z16, z32) <= BF16_REL_ERROR_BOUND
        assert rel(vae.decode(z32), reference(vae, "decode", z32)) <= BF16_REL_ERROR_BOUND
