"""OpenL3's inference fast paths equal the plain computation: the compiled Eigen FFT bit for bit, the folded convs.

The compiled per-frame FFT (eigen_rfft on the CPU) must give the tensor form's bits (which test_parity.py checks
against TensorFlow's recorded outputs); the BatchNorms folded into the convs, with oneDNN's fused ReLU, must give
the conv + BatchNorm + ReLU network's embeddings to float rounding, and follow the weights when they change.
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lafa.metrics import openl3, passt
from lafa.metrics.eigen_fft import eigen_rfft, eigen_rfft_tensor
from lafa.metrics.openl3 import OpenL3Audio, build_openl3


@pytest.mark.parametrize("n", [8, 16, 64, 512, 2048])
def test_compiled_eigen_fft_equals_tensor_form_bit_for_bit(n):
    rng = np.random.default_rng(n)
    # magnitudes from 1e-6 to 1e3 (subnormal-free), signs, a zero frame, an impulse, a strided view
    x = rng.standard_normal((3, 5, n)).astype(np.float32) * np.logspace(-6, 3, 5, dtype=np.float32)[:, None]
    x[0, 0] = 0.0
    x[0, 1] = 0.0
    x[0, 1, 1] = 1.0
    frames = torch.from_numpy(x)
    for inp in (frames, frames.transpose(0, 1)[:, ::2]):  # contiguous, and a non-contiguous view
        re, im = eigen_rfft(inp)
        ref_re, ref_im = eigen_rfft_tensor(inp)
        assert re.shape == ref_re.shape == (*inp.shape[:-1], n // 2 + 1)
        assert torch.equal(re, ref_re) and torch.equal(im, ref_im)
        assert re.dtype == torch.float32 and im.dtype == torch.float32
    with pytest.raises(ValueError, match="power-of-two"):
        eigen_rfft(torch.zeros(2, 48))


def _with_batchnorm_statistics(model: OpenL3Audio, seed: int) -> OpenL3Audio:
    """Random-weight models have identity BatchNorms; real weight files do not: give every one of them stats."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for norm in (model.input_norm, *model.norms):
            c = norm.num_features
            norm.running_mean.copy_(0.2 * torch.randn(c, generator=g))
            norm.running_var.copy_(0.5 + torch.rand(c, generator=g))
            norm.weight.copy_(0.5 + torch.rand(c, generator=g))
            norm.bias.copy_(0.1 * torch.randn(c, generator=g))
    return model


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


@pytest.mark.parametrize("input_repr, size", [("mel256", 512), ("linear", 6144)])
def test_folded_inference_equals_conv_batchnorm_network(input_repr, size):
    model = _with_batchnorm_statistics(build_openl3(None, input_repr=input_repr, embedding_size=size), 0)
    model = model.to(memory_format=torch.channels_last)  # as evaluate_folders runs it
    x = 0.1 * torch.randn(3, openl3.WINDOW, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        fast = model(x)
    with torch.enable_grad():  # autograd on: the plain conv, BatchNorm, ReLU path
        plain = model(x)
    assert plain.requires_grad and not fast.requires_grad
    assert fast.shape == plain.shape == (3, size)
    assert _rel(fast, plain.detach()) < 1e-5
    # a weight changed in place (as load_keras_weights does): the folded convs follow it
    with torch.no_grad():
        model.norms[3].running_var.mul_(4.0)
        model.convs[7].bias.add_(1.0)
        changed = model(x)
    with torch.enable_grad():
        plain_changed = model(x).detach()
    assert _rel(changed, plain.detach()) > 1e-3  # the change matters ...
    assert _rel(changed, plain_changed) < 1e-5  # ... and the fast path saw it


def test_fused_conv_relu_equals_conv2d_then_relu_and_falls_back_with_a_warning(monkeypatch):
    g = torch.Generator().manual_seed(2)
    w, b = torch.randn(32, 16, 3, 3, generator=g), torch.randn(32, generator=g)
    x = torch.randn(2, 16, 20, 13, generator=g)
    direct = F.relu(F.conv2d(x, w, b, padding=1))
    for inp in (x, x.contiguous(memory_format=torch.channels_last)):
        packed: dict = {}
        got = openl3._conv3x3_inference(inp, w, b, True, packed)
        assert len(packed) == 1 and _rel(got, direct) < 1e-6 and got.min() >= 0
    no_relu = openl3._conv3x3_inference(x, w, b, False, {})
    assert no_relu.min() < 0 and _rel(no_relu, F.conv2d(x, w, b, padding=1)) < 1e-6

    def refuse(*args, **kwargs):
        raise RuntimeError("no oneDNN here")

    monkeypatch.setattr(openl3, "_ONEDNN_FAILED", [])
    monkeypatch.setattr(torch.ops.mkldnn, "_convolution_pointwise", refuse)
    with pytest.warns(UserWarning, match="no oneDNN here"):
        fallback = openl3._conv3x3_inference(x, w, b, True, {})
    assert torch.allclose(fallback, direct, rtol=1e-5, atol=1e-5)
    assert openl3._conv3x3_inference(x, w, b, True, {}).shape == direct.shape  # no second warning needed


def test_passt_fused_attention_equals_hear21passts_attention(tmp_path):
    from hear21passt.models.passt import Attention

    torch.manual_seed(0)
    attn = Attention(64, num_heads=4, qkv_bias=True).eval()
    fused = passt.FusedAttention(attn)
    assert fused.state_dict().keys() == attn.state_dict().keys()
    x = torch.randn(3, 37, 64)
    with torch.no_grad():
        explicit = attn(x)  # q k^T * scale, softmax, @ v
        assert _rel(fused(x), explicit) < 1e-5
        fused.scale = 1.0  # the scale is applied (a fused call without it would differ)
        assert _rel(fused(x), explicit) > 1e-2
    model = passt.build_passt(None)
    assert all(isinstance(block.attn, passt.FusedAttention) for block in model.net.blocks)
    torch.save(model, tmp_path / "passt.pt")  # a plain module tree: the whole model pickles and loads back
    loaded = torch.load(tmp_path / "passt.pt", weights_only=False)
    assert loaded.state_dict().keys() == model.state_dict().keys()
