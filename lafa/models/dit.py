"""The text-to-audio Diffusion Transformer of paper Sec. 5.1, in its two block types, with named presets.

Latent frames are tokens (patch size 1). Text tokens and two timing tokens condition every block through
cross-attention (`ConditionEmbedder`); the timestep embedding plus the timing MLP form one global vector.

- block "sao" (DiT-SAO, Stable Audio Open 1.0): the global vector is a token prepended to the sequence; pre-norm
  blocks (LayerNorm without bias), fused bias-free qkv, rotary embeddings on half the head dims in
  self-attention only, SwiGLU feed-forward x4; 1x1 pre/post convolutions around bias-free in/out projections.
- block "etta" (DiT-ETTA): AdaLN timestep conditioning, zero-initialised final projection, GELU (tanh), rotary
  base 16,384, text through cross-attention; what the paper leaves open is filled in as docs/dit.md says
  (DiT's AdaLN-zero blocks with a pre-norm cross-attention between them).

`initialize_weights` holds every non-default initialisation (facebookresearch/DiT's convention): the zero-init
that makes each block start as the identity. `DIT_PRESETS` names the sizes configs use (`preset: sao-1.0`).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from lafa.models.blocks import Attention, FeedForward, RotaryEmbedding, modulate
from lafa.models.conditioners import ConditionEmbedder
from lafa.models.presets import check_choice, config_class

BLOCKS = ("sao", "etta")
# Paper-scale sizes (Sec. 5.1: DiT-SAO is Stable Audio Open 1.0's DiT, about 1.06 B parameters) and the CPU size
# of the tiny configs; a config names one and may override any argument.
DIT_PRESETS: dict[str, dict] = {
    "sao-1.0": dict(block="sao", dim=1536, depth=24, heads=24, rope_base=10000.0),
    "etta": dict(block="etta", dim=1536, depth=24, heads=24, rope_base=16384.0),
    "tiny": dict(block="sao", dim=64, depth=2, heads=4, cond_dim=64),
    "tiny-etta": dict(block="etta", dim=64, depth=2, heads=4, cond_dim=64, rope_base=16384.0),
}


class SaoBlock(nn.Module):
    """Pre-norm: x + SelfAttn(LN x, rotary) -> x + CrossAttn(LN x, context) -> x + SwiGLU(LN x)."""

    def __init__(self, dim: int, heads: int, cond_dim: int, ff_mult: float = 4) -> None:
        super().__init__()
        head_dim = dim // heads
        self.self_norm = nn.LayerNorm(dim, bias=False)
        self.self_attn = Attention(dim, heads)
        self.cross_norm = nn.LayerNorm(dim, bias=False)
        # key/value heads of the conditioning width share query heads (SAO: 768 / 64 = 12 kv heads for 24 q heads)
        if cond_dim % head_dim:
            raise ValueError(f"cond_dim {cond_dim} must be a multiple of the head dim {head_dim}")
        self.cross_attn = Attention(dim, heads, context_dim=cond_dim, kv_heads=cond_dim // head_dim)
        self.ff_norm = nn.LayerNorm(dim, bias=False)
        self.ff = FeedForward(dim, mult=ff_mult, kind="swiglu")

    def initialize_weights(self) -> None:
        for layer in (self.self_attn.to_out, self.cross_attn.to_out, self.ff.proj_out):  # residual branches start at 0
            nn.init.zeros_(layer.weight)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor, c: torch.Tensor, context: torch.Tensor, context_keep: torch.Tensor,
                rotary: torch.Tensor, self_keep: torch.Tensor | None = None) -> torch.Tensor:
        """c (the global vector) is unused: DiT-SAO carries it as the first token of x."""
        x = x + self.self_attn(self.self_norm(x), rotary=rotary, key_keep=self_keep)
        x = x + self.cross_attn(self.cross_norm(x), context=context, key_keep=context_keep)
        return x + self.ff(self.ff_norm(x))


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

    def initialize_weights(self) -> None:
        nn.init.zeros_(self.ada_ln[1].weight)  # AdaLN-zero: every block starts as the identity
        nn.init.zeros_(self.ada_ln[1].bias)

    def forward(self, x: torch.Tensor, c: torch.Tensor, context: torch.Tensor, context_keep: torch.Tensor,
                rotary: torch.Tensor, self_keep: torch.Tensor | None = None) -> torch.Tensor:
        shift_sa, scale_sa, gate_sa, shift_ff, scale_ff, gate_ff = self.ada_ln(c).chunk(6, dim=-1)  # 6 x (B, dim)
        h = modulate(self.self_norm(x), shift_sa, scale_sa)
        x = x + gate_sa[:, None] * self.self_attn(h, rotary=rotary, key_keep=self_keep)
        x = x + self.cross_attn(self.cross_norm(x), context=context, key_keep=context_keep)
        return x + gate_ff[:, None] * self.ff(modulate(self.ff_norm(x), shift_ff, scale_ff))


class FinalLayer(nn.Module):
    """DiT-ETTA's output: AdaLN (shift, scale) then the zero-initialised projection to the latent channels."""

    def __init__(self, dim: int, out_channels: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.ada_ln = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim))
        self.proj = nn.Linear(dim, out_channels)

    def initialize_weights(self) -> None:
        for layer in (self.ada_ln[1], self.proj):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.ada_ln(c).chunk(2, dim=-1)
        return self.proj(modulate(self.norm(x), shift, scale))


class DiT(nn.Module):
    """forward(x (B, C, N), t (B,), text (B, L, text_dim), text_mask (B, L), seconds_start (B,), seconds_total (B,),
    cond_drop (B,) bool, frame_keep (B, N) bool) -> model output (B, C, N) (v or rectified-flow velocity, by the
    objective trained). text_mask and frame_keep are True on real tokens / frames: self-attention keys at padded
    frames are masked, so a clip's real frames do not depend on its padding (every other op is per token)."""

    def __init__(
        self,
        block: str = "sao",
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
        check_choice("DiT block", block, BLOCKS)
        self.block = block
        self.io_channels = io_channels
        self.checkpointing = checkpointing
        sao = block == "sao"
        self.cond = ConditionEmbedder(dim, text_dim, cond_dim, timestep_features, max_seconds)
        if sao:
            self.preprocess_conv = nn.Conv1d(io_channels, io_channels, 1, bias=False)
        self.project_in = nn.Linear(io_channels, dim, bias=not sao)
        self.rotary = RotaryEmbedding((dim // heads) // 2, base=rope_base)  # half the head dims (SAO: 32 of 64)
        block_cls = SaoBlock if sao else EttaBlock
        self.blocks = nn.ModuleList(block_cls(dim, heads, cond_dim, ff_mult) for _ in range(depth))
        if sao:
            self.project_out = nn.Linear(dim, io_channels, bias=False)
            self.postprocess_conv = nn.Conv1d(io_channels, io_channels, 1, bias=False)
        else:
            self.final = FinalLayer(dim, io_channels)
        self.initialize_weights()

    def initialize_weights(self) -> None:
        """Every layer keeps torch's default init except these zeros: the model's output starts at 0 (ETTA)
        or each residual branch does (SAO, with the 1x1 convolutions around the transformer)."""
        for block in self.blocks:
            block.initialize_weights()
        if self.block == "sao":
            nn.init.zeros_(self.preprocess_conv.weight)
            nn.init.zeros_(self.postprocess_conv.weight)
        else:
            self.final.initialize_weights()

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
        context, context_keep, c = self.cond(t, text, text_mask, seconds_start, seconds_total, cond_drop)
        sao = self.block == "sao"
        if sao:
            x = self.preprocess_conv(x) + x
        h = self.project_in(x.transpose(1, 2))  # (B, C, N) -> (B, N, dim)
        self_keep = frame_keep
        if sao:  # the global vector as a token: (B, 1 + N, dim), always attended
            h = torch.cat((c[:, None].to(h.dtype), h), dim=1)
            if frame_keep is not None:
                self_keep = torch.cat((torch.ones_like(frame_keep[:, :1], dtype=torch.bool), frame_keep.bool()), 1)
        else:
            c = c.to(h.dtype)
        rotary = self.rotary(h.shape[1], device=h.device)
        for block in self.blocks:
            if self.checkpointing and self.training:
                h = checkpoint(block, h, c, context, context_keep, rotary, self_keep, use_reentrant=False)
            else:
                h = block(h, c, context, context_keep, rotary, self_keep)
        if not sao:
            return self.final(h, c).transpose(1, 2)  # (B, N, C) -> (B, C, N)
        out = self.project_out(h[:, 1:]).transpose(1, 2)  # (B, N, dim) -> (B, C, N)
        return self.postprocess_conv(out) + out


DiTConfig = config_class(DiT, exclude=("text_dim",))  # text_dim: the text encoder's width

