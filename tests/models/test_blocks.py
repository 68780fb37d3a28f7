"""Shared transformer blocks against independent reference computations."""

import math

import pytest
import torch

from lafa.models.blocks import (
    Attention,
    FeedForward,
    FourierFeatures,
    RotaryEmbedding,
    TimestepEmbedder,
    apply_rotary,
    modulate,
    sinusoidal_embedding,
)


def _reference_attention(q, k, v, keep=None, causal=False):
    """Plain softmax(q k^T / sqrt(d)) v on (B, H, S, D) with -inf on dropped keys."""
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    if keep is not None:
        scores = scores.masked_fill(~keep[:, None, None, :], float("-inf"))
    if causal:
        s_q, s_k = scores.shape[-2:]
        scores = scores.masked_fill(~torch.ones(s_q, s_k, dtype=torch.bool).tril(s_k - s_q), float("-inf"))
    return scores.softmax(-1) @ v


def test_self_attention_matches_reference_with_padding_mask():
    torch.manual_seed(0)
    attn = Attention(32, heads=4)
    x = torch.randn(2, 7, 32)
    keep = torch.ones(2, 7, dtype=torch.bool)
    keep[1, 5:] = False
    out = attn(x, key_keep=keep)
    q, k, v = (t.view(2, 7, 4, 8).transpose(1, 2) for t in attn.to_qkv(x).chunk(3, -1))
    ref = _reference_attention(q, k, v, keep).transpose(1, 2).reshape(2, 7, 32)
    torch.testing.assert_close(out, attn.to_out(ref), atol=1e-5, rtol=1e-5)


def test_masked_self_attention_with_rotary_equals_the_unpadded_sequence():
    """The DiTs' self-attention: with trailing padding masked out of the keys, the real tokens' outputs equal
    those of the real tokens alone (rotary positions are relative, and padding only follows real tokens)."""
    torch.manual_seed(0)
    attn = Attention(32, heads=4)
    rotary = RotaryEmbedding(4)(9)
    x = torch.randn(1, 5, 32)
    padded = torch.cat((x, 10 * torch.randn(1, 4, 32)), dim=1)
    keep = torch.arange(9)[None] < 5
    out = attn(padded, key_keep=keep, rotary=rotary)
    torch.testing.assert_close(out[:, :5], attn(x, rotary=rotary), atol=1e-5, rtol=1e-5)
    assert (attn(padded, rotary=rotary)[:, :5] - out[:, :5]).abs().max() > 1e-2  # unmasked padding leaks in


def test_cross_attention_ignores_padded_context_and_supports_gqa():
    torch.manual_seed(0)
    attn = Attention(32, heads=4, context_dim=12, kv_heads=2)
    x, ctx = torch.randn(2, 5, 32), torch.randn(2, 6, 12)
    keep = torch.tensor([[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 1]], dtype=torch.bool)
    out = attn(x, context=ctx, key_keep=keep)
    ctx2 = ctx.clone()
    ctx2[0, 3:] = 100.0  # padded tokens change, output must not
    torch.testing.assert_close(attn(x, context=ctx2, key_keep=keep), out)
    # grouped-query reference: kv head j serves query heads 2j and 2j+1
    q = attn.to_q(x).view(2, 5, 4, 8).transpose(1, 2)
    k, v = (t.view(2, 6, 2, 8).transpose(1, 2).repeat_interleave(2, 1) for t in attn.to_kv(ctx).chunk(2, -1))
    ref = attn.to_out(_reference_attention(q, k, v, keep).transpose(1, 2).reshape(2, 5, 32))
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_causal_attention_does_not_see_the_future_and_full_mask_is_finite():
    torch.manual_seed(0)
    attn = Attention(16, heads=2)
    x = torch.randn(1, 6, 16)
    y = x.clone()
    y[:, 4:] = torch.randn(1, 2, 16)
    torch.testing.assert_close(attn(x, causal=True)[:, :4], attn(y, causal=True)[:, :4])
    out = attn(x, key_keep=torch.zeros(1, 6, dtype=torch.bool))
    assert torch.isfinite(out).all()


def test_sao_block_initialize_weights_makes_it_the_identity():
    from lafa.models.dit import SaoBlock

    block = SaoBlock(16, heads=2, cond_dim=16)
    block.initialize_weights()
    x, ctx = torch.randn(2, 3, 16), torch.randn(2, 4, 16)
    out = block(x, None, ctx, torch.ones(2, 4, dtype=torch.bool), RotaryEmbedding(4)(3))
    assert torch.equal(out, x)


def test_rotary_base_partial_dims_and_relative_positions():
    rope = RotaryEmbedding(8, base=16384.0)
    torch.testing.assert_close(rope.inv_freq, 16384.0 ** (-torch.arange(0, 8, 2) / 8.0))
    freqs = rope(20)
    assert freqs.shape == (20, 8)
    torch.manual_seed(0)
    q, k = torch.randn(16), torch.randn(16)
    # rotate only the first 8 of 16 head dims; the rest pass through
    qs = apply_rotary(q.expand(20, 16).clone(), freqs)
    ks = apply_rotary(k.expand(20, 16).clone(), freqs)
    torch.testing.assert_close(qs[:, 8:], q[8:].expand(20, 8))
    # the rotated dot product depends only on the position difference
    d1 = (qs[3, :8] * ks[1, :8]).sum()
    d2 = (qs[15, :8] * ks[13, :8]).sum()
    torch.testing.assert_close(d1, d2, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(qs[0], q)  # position 0 is the identity
    # rotation preserves the norm
    torch.testing.assert_close(qs.norm(dim=-1), q.norm().expand(20), atol=1e-5, rtol=1e-5)


def test_feedforward_kinds_match_formulas():
    torch.manual_seed(0)
    x = torch.randn(3, 8)
    sw = FeedForward(8, mult=2, kind="swiglu")
    h = sw.proj_in(x)
    value, gate = h[:, :16], h[:, 16:]
    torch.testing.assert_close(sw(x), sw.proj_out(value * gate * torch.sigmoid(gate)))
    ge = FeedForward(8, mult=2, kind="gelu_tanh")
    u = ge.proj_in(x)
    tanh_gelu = 0.5 * u * (1 + torch.tanh(math.sqrt(2 / math.pi) * (u + 0.044715 * u**3)))
    torch.testing.assert_close(ge(x), ge.proj_out(tanh_gelu))
    with pytest.raises(ValueError):
        FeedForward(8, kind="relu")


def test_timestep_features():
    t = torch.tensor([0.0, 0.5])
    emb = sinusoidal_embedding(t, 8)
    torch.testing.assert_close(emb[0], torch.tensor([1.0] * 4 + [0.0] * 4))
    freqs = torch.exp(-math.log(10000.0) * torch.arange(4) / 4)
    torch.testing.assert_close(emb[1, 4:], torch.sin(0.5 * freqs))
    ff = FourierFeatures(1, 6)
    out = ff(t[:, None])
    torch.testing.assert_close(out[1, :3], torch.cos(2 * math.pi * 0.5 * ff.weight[:, 0]))
    for kind in ("fourier", "sinusoidal"):
        assert TimestepEmbedder(12, features=kind, feature_dim=16)(t).shape == (2, 12)


def test_modulate():
    x = torch.ones(2, 3, 4)
    shift, scale = torch.full((2, 4), 0.5), torch.full((2, 4), 1.0)
    torch.testing.assert_close(modulate(x, shift, scale), torch.full((2, 3, 4), 2.5))
