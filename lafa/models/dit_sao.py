"""DiT-SAO: the text-to-audio Diffusion Transformer as Stable Audio Open 1.0 builds it (paper Sec. 5.1).

Latent frames are tokens (patch size 1). Width 1536, depth 24, 24 heads at paper scale (about 1.06 B
parameters). Text tokens and two timing tokens condition every block through cross-attention; the timestep
embedding plus the timing MLP form one global token prepended to the sequence. Pre-norm blocks (LayerNorm
without bias), fused bias-free qkv, rotary embeddings on half the head dims in self-attention only, SwiGLU
feed-forward x4; attention and feed-forward outputs and the 1x1 pre/post convolutions are zero-initialised.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from lafa.models.blocks import Attention, FeedForward, RotaryEmbedding
from lafa.models.conditioners import ConditionEmbedder


class SaoBlock(nn.Module):
    """Pre-norm: x + SelfAttn(LN x, rotary) -> x + CrossAttn(LN x, context) -> x + SwiGLU(LN x)."""

    def __init__(self, dim: int, heads: int, cond_dim: int, ff_mult: float = 4) -> None:
        super().__init__()
        head_dim = dim // heads
        self.self_norm = nn.LayerNorm(dim, bias=False)
        self.self_attn = Attention(dim, heads, zero_init_out=True)
        self.cross_norm = nn.LayerNorm(dim, bias=False)
        # key/value heads of the conditioning width share query heads (SAO: 768 / 64 = 12 kv heads for 24 q heads)
        if cond_dim % head_dim:
            raise ValueError(f"cond_dim {cond_dim} must be a multiple of the head dim {head_dim}")
        self.cross_attn = Attention(dim, heads, context_dim=cond_dim, zero_init_out=True, kv_heads=cond_dim // head_dim)
        self.ff_norm = nn.LayerNorm(dim, bias=False)
        self.ff = FeedForward(dim, mult=ff_mult, kind="swiglu", zero_init_out=True)

    def forward(
        self,
        x: torch.Tensor,
        context: torch.Tensor,
        context_mask: torch.Tensor,
        rotary: torch.Tensor,
        self_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        x = x + self.self_attn(self.self_norm(x), rotary=rotary, key_padding_mask=self_mask)
        x = x + self.cross_attn(self.cross_norm(x), context=context, key_padding_mask=context_mask)
        return x + self.ff(self.ff_norm(x))


class DiTSAO(nn.Module):
    """forward(x (B, C, N), t (B,), text (B, L, text_dim), text_mask (B, L), seconds_start (B,), seconds_total (B,),
    cond_drop (B,) bool, frame_keep (B, N) bool) -> model output (B, C, N) (v or rectified-flow velocity, by the
    objective trained). frame_keep marks real frames (True) and padding (False): self-attention keys at padded
    frames are masked, so a clip's real frames do not depend on its padding (every other op is per token)."""

    def __init__(
        self,
        io_channels: int = 64,
        dim: int = 1536,
        depth: int = 24,
        heads: int = 24,
        text_dim: int = 768,
        cond_dim: int = 768,
        ff_mult: float = 4,
        rope_base: float = 10000.0,
        timestep_features: str = "fourier",
        max_seconds: float = 512.0,
        checkpointing: bool = False,
    ) -> None:
        super().__init__()
        head_dim = dim // heads
        self.io_channels = io_channels
        self.checkpointing = checkpointing
        self.cond = ConditionEmbedder(dim, text_dim, cond_dim, timestep_features, max_seconds)
        self.preprocess_conv = nn.Conv1d(io_channels, io_channels, 1, bias=False)
        self.project_in = nn.Linear(io_channels, dim, bias=False)
        self.rotary = RotaryEmbedding(head_dim // 2, base=rope_base)  # half the head dims (SAO: 32 of 64)
        self.blocks = nn.ModuleList(SaoBlock(dim, heads, cond_dim, ff_mult) for _ in range(depth))
        self.project_out = nn.Linear(dim, io_channels, bias=False)
        self.postprocess_conv = nn.Conv1d(io_channels, io_channels, 1, bias=False)
        nn.init.zeros_(self.preprocess_conv.weight)
        nn.init.zeros_(self.postprocess_conv.weight)

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
        context, context_mask, global_vec = self.cond(t, text, text_mask, seconds_start, seconds_total, cond_drop)
        x = self.preprocess_conv(x) + x
        h = self.project_in(x.transpose(1, 2))  # (B, C, N) -> (B, N, dim)
        h = torch.cat((global_vec[:, None].to(h.dtype), h), dim=1)  # (B, 1 + N, dim): prepended global token
        rotary = self.rotary(h.shape[1], device=h.device)
        self_mask = None  # (B, 1 + N): the global token is always attended
        if frame_keep is not None:
            self_mask = torch.cat((torch.ones_like(frame_keep[:, :1], dtype=torch.bool), frame_keep.bool()), dim=1)
        for block in self.blocks:
            if self.checkpointing and self.training:
                h = checkpoint(block, h, context, context_mask, rotary, self_mask, use_reentrant=False)
            else:
                h = block(h, context, context_mask, rotary, self_mask)
        out = self.project_out(h[:, 1:]).transpose(1, 2)  # (B, N, dim) -> (B, C, N)
        return self.postprocess_conv(out) + out
