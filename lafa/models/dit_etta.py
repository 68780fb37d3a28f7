"""DiT-ETTA: the ETTA-style text-to-audio Diffusion Transformer (paper Sec. 5.1).

What the paper states: AdaLN timestep conditioning; the final projection zero-initialised; GELU with the tanh
approximation; rotary position embeddings with base 16,384; text through cross-attention.
What lafa fills in (docs/dit.md): DiT's AdaLN-zero blocks (shift/scale/gate for self-attention and feed-forward
from the global vector, gates zero-initialised) with a pre-norm cross-attention between them; the global vector
is the timestep embedding plus the timing MLP, and the cross-attention tokens are text + timing tokens, wired as
in DiT-SAO (`ConditionEmbedder`); rotary on half the head dims in self-attention only.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from lafa.models.blocks import Attention, FeedForward, RotaryEmbedding, modulate
from lafa.models.conditioners import ConditionEmbedder


class EttaBlock(nn.Module):
    """AdaLN-zero self-attention, pre-norm cross-attention, AdaLN-zero GELU(tanh) feed-forward."""

    def __init__(self, dim: int, heads: int, cond_dim: int, ff_mult: float = 4) -> None:
        super().__init__()
        self.self_norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.self_attn = Attention(dim, heads, qkv_bias=True)
        self.cross_norm = nn.LayerNorm(dim, eps=1e-6)
        self.cross_attn = Attention(dim, heads, context_dim=cond_dim, qkv_bias=True)
        self.ff_norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.ff = FeedForward(dim, mult=ff_mult, kind="gelu_tanh")
        self.ada_ln = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))
        nn.init.zeros_(self.ada_ln[1].weight)  # AdaLN-zero: every block starts as the identity
        nn.init.zeros_(self.ada_ln[1].bias)

    def forward(
        self,
        x: torch.Tensor,
        c: torch.Tensor,
        context: torch.Tensor,
        context_mask: torch.Tensor,
        rotary: torch.Tensor,
        self_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        shift_sa, scale_sa, gate_sa, shift_ff, scale_ff, gate_ff = self.ada_ln(c).chunk(6, dim=-1)  # 6 x (B, dim)
        h = modulate(self.self_norm(x), shift_sa, scale_sa)
        x = x + gate_sa[:, None] * self.self_attn(h, rotary=rotary, key_padding_mask=self_mask)
        x = x + self.cross_attn(self.cross_norm(x), context=context, key_padding_mask=context_mask)
        return x + gate_ff[:, None] * self.ff(modulate(self.ff_norm(x), shift_ff, scale_ff))


class FinalLayer(nn.Module):
    """AdaLN (shift, scale) then the zero-initialised projection to the latent channels."""

    def __init__(self, dim: int, out_channels: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.ada_ln = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim))
        self.proj = nn.Linear(dim, out_channels)
        for layer in (self.ada_ln[1], self.proj):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.ada_ln(c).chunk(2, dim=-1)
        return self.proj(modulate(self.norm(x), shift, scale))


class DiTETTA(nn.Module):
    """forward(x (B, C, N), t (B,), text (B, L, text_dim), text_mask (B, L), seconds_start (B,), seconds_total (B,),
    cond_drop (B,) bool, frame_keep (B, N) bool) -> model output (B, C, N); exactly zero at initialisation.
    frame_keep marks real frames (True) and padding (False): self-attention keys at padded frames are masked."""

    def __init__(
        self,
        io_channels: int = 64,
        dim: int = 1536,
        depth: int = 24,
        heads: int = 24,
        text_dim: int = 768,
        cond_dim: int = 768,
        ff_mult: float = 4,
        rope_base: float = 16384.0,
        timestep_features: str = "fourier",
        max_seconds: float = 512.0,
        checkpointing: bool = False,
    ) -> None:
        super().__init__()
        self.io_channels = io_channels
        self.checkpointing = checkpointing
        self.cond = ConditionEmbedder(dim, text_dim, cond_dim, timestep_features, max_seconds)
        self.project_in = nn.Linear(io_channels, dim)
        self.rotary = RotaryEmbedding((dim // heads) // 2, base=rope_base)
        self.blocks = nn.ModuleList(EttaBlock(dim, heads, cond_dim, ff_mult) for _ in range(depth))
        self.final = FinalLayer(dim, io_channels)

    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        text: torch.Tensor,
        text_mask: torch.Tensor,
        seconds_start: torch.Tensor,
        seconds_total: torch.Tensor,
        cond_drop: torch.Tensor | None = None,
        frame_keep: torch.Tensor | None = None,
    ) -> torch.Tensor:
        context, context_mask, c = self.cond(t, text, text_mask, seconds_start, seconds_total, cond_drop)
        h = self.project_in(x.transpose(1, 2))  # (B, C, N) -> (B, N, dim)
        c = c.to(h.dtype)
        rotary = self.rotary(h.shape[1], device=h.device)
        for block in self.blocks:  # frame_keep (B, N): self-attention keys at padded frames are masked
            if self.checkpointing and self.training:
                h = checkpoint(block, h, c, context, context_mask, rotary, frame_keep, use_reentrant=False)
            else:
                h = block(h, c, context, context_mask, rotary, frame_keep)
        return self.final(h, c).transpose(1, 2)  # (B, N, C) -> (B, C, N)
