"""The LAFA encoder (paper Sec. 4.3, Fig. 4): a ViT over the frozen VAE latent, on a (time x channel-group) grid.

A token is one frame of one group of g consecutive channels. Masked channels are replaced by a learned mask
value and flagged; each token's g values and g flags go through a Linear to the hidden width. Blocks alternate
attention along time (bidirectional, within a group) and attention along the channel groups of a frame,
optionally causal (group j sees groups <= j: the Sec. 4.1 causal mask along the channel index). An output head
maps each token to its share of the LAFA latent's channels, so the output keeps the frame rate.

Sec. 4.3 says "position embedding is added"; two readings of it and of the output projection are kept
(docs/lafa.md): positions "rope" (default: rotary embeddings in the time attention, translation-equivariant in
time) or "absolute" (a sinusoidal frame embedding added to every token); output_heads "group" (default: one
head per channel group) or "shared" (one Linear for every group). Channel groups always get a learned group
embedding. With g = C there is one group per frame (the plain time-token ViT of Sec. 4.3; `causal` has no
effect).
"""

from __future__ import annotations

import torch
from torch import nn

from lafa.models.blocks import Attention, FeedForward, RotaryEmbedding, sinusoidal_embedding
from lafa.models.presets import check_choice

POSITIONS = ("rope", "absolute")
OUTPUT_HEADS = ("group", "shared")


def init_vit_weights(module: nn.Module) -> None:
    """MAE-style init: xavier-uniform Linear weights, zero biases; LayerNorm at identity."""
    if isinstance(module, nn.Linear):
        nn.init.xavier_uniform_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


def frame_positions(frames: int, dim: int, device: torch.device) -> torch.Tensor:
    """Sinusoidal position embedding of frames 0..frames-1: (frames, dim)."""
    return sinusoidal_embedding(torch.arange(frames, device=device), dim)


def time_rotary(positions: str, dim: int, heads: int) -> RotaryEmbedding | None:
    """Rotary embedding for time attention on all of a head's dims (base 10,000); None: absolute positions."""
    check_choice("positions", positions, POSITIONS)
    return RotaryEmbedding(dim // heads) if positions == "rope" else None


class AxialBlock(nn.Module):
    """Pre-norm block on (B, N, G, D) tokens: attention along time, then along groups (if G > 1), then MLP."""

    def __init__(self, dim: int, heads: int, groups: int, causal: bool, mlp_ratio: float) -> None:
        super().__init__()
        self.causal = causal
        self.norm_time = nn.LayerNorm(dim)
        self.time_attn = Attention(dim, heads)
        self.norm_group = nn.LayerNorm(dim) if groups > 1 else None
        self.group_attn = Attention(dim, heads) if groups > 1 else None
        self.norm_ff = nn.LayerNorm(dim)
        self.ff = FeedForward(dim, mlp_ratio)

    def forward(
        self, x: torch.Tensor, frame_keep: torch.Tensor | None, rotary: torch.Tensor | None = None
    ) -> torch.Tensor:
        b, n, g, d = x.shape
        h = x.transpose(1, 2).reshape(b * g, n, d)  # (B, N, G, D) -> (B*G, N, D): sequences along time
        keep = frame_keep.repeat_interleave(g, dim=0) if frame_keep is not None else None
        h = h + self.time_attn(self.norm_time(h), key_keep=keep, rotary=rotary)
        x = h.reshape(b, g, n, d).transpose(1, 2)
        if self.group_attn is not None:
            h = x.reshape(b * n, g, d)  # sequences along the channel groups of one frame
            h = h + self.group_attn(self.norm_group(h), causal=self.causal)
            x = h.reshape(b, n, g, d)
        return x + self.ff(self.norm_ff(x))


class GroupHeads(nn.Module):
    """One Linear(dim, k) per channel group: (B, N, G, D) -> (B, N, G, k); xavier-uniform per group, zero bias."""

    def __init__(self, groups: int, dim: int, out_per_group: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(groups, dim, out_per_group))
        self.bias = nn.Parameter(torch.zeros(groups, out_per_group))
        for w in self.weight:
            nn.init.xavier_uniform_(w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.einsum("bngd,gdk->bngk", x, self.weight) + self.bias


class LafaEncoder(nn.Module):
    """(B, C, N) VAE latent + (B, C) channel mask -> (B, C_out, N) LAFA latent."""

    def __init__(
        self,
        in_channels: int = 64,
        out_channels: int = 64,
        channel_group_size: int = 8,
        dim: int = 512,
        depth: int = 8,
        heads: int = 8,
        causal: bool = True,
        mlp_ratio: float = 4.0,
        positions: str = "rope",
        output_heads: str = "group",
    ) -> None:
        super().__init__()
        if in_channels % channel_group_size:
            raise ValueError(f"channel_group_size {channel_group_size} does not divide {in_channels} channels")
        self.groups = in_channels // channel_group_size
        if out_channels % self.groups:
            raise ValueError(f"{out_channels} output channels do not split into {self.groups} channel groups")
        check_choice("output_heads", output_heads, OUTPUT_HEADS)
        self.in_channels, self.out_channels, self.group_size = in_channels, out_channels, channel_group_size
        self.causal = causal and self.groups > 1
        self.positions = positions
        self.mask_value = nn.Parameter(torch.zeros(in_channels))  # learned stand-in for a masked channel
        self.proj_in = nn.Linear(2 * channel_group_size, dim)  # a group's values and mask flags
        self.group_embed = nn.Parameter(torch.zeros(self.groups, dim))
        self.rotary = time_rotary(positions, dim, heads)
        self.blocks = nn.ModuleList(
            AxialBlock(dim, heads, self.groups, self.causal, mlp_ratio) for _ in range(depth)
        )
        self.norm_out = nn.LayerNorm(dim)
        per_group = out_channels // self.groups
        self.proj_out = GroupHeads(self.groups, dim, per_group) if output_heads == "group" else nn.Linear(dim, per_group)
        self.apply(init_vit_weights)
        nn.init.normal_(self.group_embed, std=0.02)

    def forward(
        self, z: torch.Tensor, masked: torch.Tensor | None = None, frame_keep: torch.Tensor | None = None
    ) -> torch.Tensor:
        """z (B, C, N); masked (B, C) bool, True = masked (None: nothing masked); frame_keep (B, N) bool, True on
        real frames (padding frames are never attended to, so real frames do not depend on them).
        Returns (B, C_out, N)."""
        b, c, n = z.shape
        if c != self.in_channels:
            raise ValueError(f"LAFA encoder expects {self.in_channels} latent channels, got {tuple(z.shape)}")
        if masked is None:
            masked = torch.zeros(b, c, dtype=torch.bool, device=z.device)
        flags = masked[:, :, None].expand(b, c, n)
        z = torch.where(flags, self.mask_value.to(z.dtype)[None, :, None], z)
        g, gs = self.groups, self.group_size
        tokens = torch.cat((z.reshape(b, g, gs, n), flags.reshape(b, g, gs, n).to(z.dtype)), dim=2)
        tokens = tokens.permute(0, 3, 1, 2)  # (B, G, 2g, N) -> (B, N, G, 2g)
        x = self.proj_in(tokens) + self.group_embed  # (B, N, G, D)
        if self.positions == "absolute":
            x = x + frame_positions(n, x.shape[-1], z.device).to(x.dtype)[None, :, None]
        rotary = None if self.rotary is None else self.rotary(n, z.device)  # (N, head_dim)
        for block in self.blocks:
            x = block(x, frame_keep, rotary)
        y = self.proj_out(self.norm_out(x))  # (B, N, G, C_out / G)
        return y.reshape(b, n, self.out_channels).transpose(1, 2)  # (B, C_out, N)
