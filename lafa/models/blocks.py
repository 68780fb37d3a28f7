"""Transformer blocks shared by the DiTs and the LAFA encoder/decoder: attention, rotary embeddings,
feed-forward, timestep embeddings and the AdaLN modulation.

Attention goes through torch's `scaled_dot_product_attention` (flash / memory-efficient kernels on GPU).
Layouts: tokens are (B, S, dim); heads are (B, H, S, head_dim).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from lafa.models.presets import check_choice


class RotaryEmbedding(nn.Module):
    """Rotary position embedding on the first `dim` dims of each head (GPT-J style partial rotary).

    Stable Audio Open rotates half of the head dims (64-dim heads, 32 rotated) with base 10,000;
    DiT-ETTA uses base 16,384 (paper Sec. 5.1).
    """

    def __init__(self, dim: int, base: float = 10000.0) -> None:
        super().__init__()
        if dim % 2:
            raise ValueError(f"rotary dim must be even, got {dim}")
        self.dim = dim
        self.base = float(base)
        inv_freq = 1.0 / (self.base ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def forward(self, seq_len: int, device: torch.device | None = None) -> torch.Tensor:
        """Angles (seq_len, dim) for positions 0..seq_len-1: the half-dim frequencies repeated twice."""
        inv_freq = self.inv_freq.to(device) if device is not None else self.inv_freq
        pos = torch.arange(seq_len, device=inv_freq.device, dtype=torch.float32)
        freqs = torch.outer(pos, inv_freq)  # (S, dim/2)
        return torch.cat((freqs, freqs), dim=-1)  # (S, dim)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rotary(x: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
    """Rotate the first freqs.shape[-1] dims of x (..., S, head_dim) by angles freqs (S, rot_dim), in float32."""
    rot_dim, seq_len = freqs.shape[-1], x.shape[-2]
    if rot_dim > x.shape[-1]:
        raise ValueError(f"rotary dim {rot_dim} exceeds head dim {x.shape[-1]}")
    freqs = freqs[:seq_len].float()
    x_rot, x_pass = x[..., :rot_dim].float(), x[..., rot_dim:]
    x_rot = x_rot * freqs.cos() + _rotate_half(x_rot) * freqs.sin()
    return torch.cat((x_rot.to(x.dtype), x_pass), dim=-1)


class Attention(nn.Module):
    """Multi-head self- or cross-attention (cross when `context_dim` is given).

    Self-attention uses one fused qkv projection. Cross-attention may use fewer key/value heads than query
    heads (`kv_heads`, grouped-query attention): Stable Audio Open projects its 768-wide conditioning tokens
    to 12 key/value heads of 64 dims that its 24 query heads share in pairs.
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        context_dim: int | None = None,
        qkv_bias: bool = False,
        kv_heads: int | None = None,
    ) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by heads {heads}")
        self.heads = heads
        self.head_dim = dim // heads
        self.kv_heads = heads if kv_heads is None else kv_heads
        if heads % self.kv_heads:
            raise ValueError(f"heads {heads} is not divisible by kv_heads {self.kv_heads}")
        self.is_cross = context_dim is not None
        kv_width = self.kv_heads * self.head_dim
        if self.is_cross:
            self.to_q = nn.Linear(dim, dim, bias=qkv_bias)
            self.to_kv = nn.Linear(context_dim, 2 * kv_width, bias=qkv_bias)
        else:
            if self.kv_heads != heads:
                raise ValueError("kv_heads < heads is only supported for cross-attention")
            self.to_qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.to_out = nn.Linear(dim, dim, bias=qkv_bias)

    def _split(self, t: torch.Tensor, heads: int) -> torch.Tensor:
        b, s, _ = t.shape
        return t.view(b, s, heads, self.head_dim).transpose(1, 2)  # (B, S, H*D) -> (B, H, S, D)

    def forward(
        self,
        x: torch.Tensor,
        context: torch.Tensor | None = None,
        key_keep: torch.Tensor | None = None,
        causal: bool = False,
        rotary: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """x (B, S, dim); context (B, S_kv, context_dim) for cross-attention;
        key_keep (B, S_kv) bool, True = attend to that key (an all-False row attends to every key, never NaN);
        rotary: angles (>= S, rot_dim) from `RotaryEmbedding`, applied to q and k by position."""
        if self.is_cross:
            if context is None:
                raise ValueError("cross-attention needs a context")
            q = self._split(self.to_q(x), self.heads)
            k, v = (self._split(t, self.kv_heads) for t in self.to_kv(context).chunk(2, dim=-1))
        else:
            if context is not None:
                raise ValueError("self-attention got a context; build it with context_dim")
            q, k, v = (self._split(t, self.heads) for t in self.to_qkv(x).chunk(3, dim=-1))
        if rotary is not None:
            q, k = apply_rotary(q, rotary), apply_rotary(k, rotary)
        if self.kv_heads != self.heads:  # grouped-query: each kv head serves heads // kv_heads query heads
            k = k.repeat_interleave(self.heads // self.kv_heads, dim=1)
            v = v.repeat_interleave(self.heads // self.kv_heads, dim=1)

        mask = None
        if key_keep is not None:
            keep = key_keep.bool()
            keep = keep | ~keep.any(dim=-1, keepdim=True)
            mask = keep[:, None, None, :]  # (B, 1, 1, S_kv)
        if causal:
            s_q, s_kv = q.shape[-2], k.shape[-2]
            tri = torch.ones(s_q, s_kv, dtype=torch.bool, device=x.device).tril(s_kv - s_q)
            mask = tri if mask is None else mask & tri
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (B, H, S, D)
        out = out.transpose(1, 2).reshape(x.shape[0], x.shape[1], -1)
        return self.to_out(out)


class FeedForward(nn.Module):
    """Position-wise MLP, hidden width dim * mult.

    kind="swiglu": Linear(dim, 2 * hidden) -> value * SiLU(gate) -> Linear(hidden, dim) (Stable Audio Open);
    kind="gelu_tanh": Linear -> GELU(tanh approximation) -> Linear (DiT-ETTA, paper Sec. 5.1).
    """

    def __init__(self, dim: int, mult: float = 4, kind: str = "swiglu") -> None:
        super().__init__()
        hidden = int(dim * mult)
        self.kind = kind
        if kind == "swiglu":
            self.proj_in = nn.Linear(dim, 2 * hidden)
        elif kind == "gelu_tanh":
            self.proj_in = nn.Linear(dim, hidden)
            self.act = nn.GELU(approximate="tanh")
        else:
            raise ValueError(f"unknown feed-forward kind {kind!r} (swiglu | gelu_tanh)")
        self.proj_out = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.proj_in(x)
        if self.kind == "swiglu":
            value, gate = h.chunk(2, dim=-1)
            h = value * F.silu(gate)
        else:
            h = self.act(h)
        return self.proj_out(h)


def sinusoidal_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """(B,) -> (B, dim): [cos(t f_i), sin(t f_i)] with f_i = max_period^(-i / (dim/2)) (DiT / ADM style)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat((torch.cos(args), torch.sin(args)), dim=-1)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb


class FourierFeatures(nn.Module):
    """Learned Fourier features (Stable Audio Open's timestep features): x (B, in) ->
    [cos(2 pi x W^T), sin(2 pi x W^T)] (B, out), W ~ N(0, std^2) of shape (out/2, in), trained."""

    def __init__(self, in_features: int, out_features: int, std: float = 1.0) -> None:
        super().__init__()
        if out_features % 2:
            raise ValueError(f"out_features must be even, got {out_features}")
        self.weight = nn.Parameter(torch.randn(out_features // 2, in_features) * std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = 2 * math.pi * x @ self.weight.T
        return torch.cat((f.cos(), f.sin()), dim=-1)


class TimestepEmbedder(nn.Module):
    """t (B,) in [0, 1] -> (B, dim): features (learned Fourier, SAO; or sinusoidal) -> Linear -> SiLU -> Linear.

    Sinusoidal features see 1000 t so their frequencies cover the unit interval (DiT uses integer steps).
    """

    def __init__(self, dim: int, features: str = "fourier", feature_dim: int = 256) -> None:
        super().__init__()
        check_choice("timestep features", features, ("fourier", "sinusoidal"))
        self.feature_dim = feature_dim
        self.fourier = FourierFeatures(1, feature_dim) if features == "fourier" else None
        self.mlp = nn.Sequential(nn.Linear(feature_dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        if self.fourier is not None:
            feats = self.fourier(t[:, None].to(self.fourier.weight.dtype))
        else:
            feats = sinusoidal_embedding(1000.0 * t, self.feature_dim)
        return self.mlp(feats.to(self.mlp[0].weight.dtype))


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """AdaLN modulation: x (B, S, D) * (1 + scale (B, D)) + shift (B, D)."""
    return x * (1 + scale[:, None]) + shift[:, None]
