"""LAFA's latent decoders (paper Sec. 4.3, Table 6, Table 7).

Rectified flow (Sec. 4.3): the decoder predicts U = eps - Z0 from (Z_t, h, t), conditioned on the LAFA latent
h through cross-attention (objective: `lafa.diffusion.objectives`); sampling runs the Euler sampler of
`lafa.diffusion.samplers` from t = 1 (noise) to t = 0 (Table 7: 1, 2, 10, 100 steps). The Table 6 ablation
replaces it with a ViT decoder that maps h straight to Z0, trained with MSE.

Frame positions follow the encoder's `positions`: "rope" (default) rotates queries and keys of the self- and
cross-attention by frame index (relative positions only), "absolute" adds a sinusoidal frame embedding to the
Z_t and h tokens.
"""

from __future__ import annotations

import torch
from torch import nn

from lafa.diffusion.samplers import euler, tensor_time_grid
from lafa.models.blocks import Attention, FeedForward, TimestepEmbedder
from lafa.models.lafa_encoder import frame_positions, init_vit_weights, time_rotary


class DecoderBlock(nn.Module):
    """Pre-norm transformer block over time tokens: self-attention, cross-attention to the context (if any), MLP."""

    def __init__(self, dim: int, heads: int, cross: bool, mlp_ratio: float) -> None:
        super().__init__()
        self.norm_self = nn.LayerNorm(dim)
        self.self_attn = Attention(dim, heads)
        self.norm_cross = nn.LayerNorm(dim) if cross else None
        self.cross_attn = Attention(dim, heads, context_dim=dim) if cross else None
        self.norm_ff = nn.LayerNorm(dim)
        self.ff = FeedForward(dim, mlp_ratio)

    def forward(
        self,
        x: torch.Tensor,
        context: torch.Tensor | None,
        frame_keep: torch.Tensor | None,
        rotary: torch.Tensor | None = None,
    ) -> torch.Tensor:
        x = x + self.self_attn(self.norm_self(x), key_keep=frame_keep, rotary=rotary)
        if self.cross_attn is not None:  # query frame n and context frame m: rotary sees n - m
            x = x + self.cross_attn(self.norm_cross(x), context=context, key_keep=frame_keep, rotary=rotary)
        return x + self.ff(self.norm_ff(x))


class _TokenDecoder(nn.Module):
    """What Table 6's two decoders share: their settings, input layers (`build_inputs`), `depth` DecoderBlocks
    over the N time tokens (cross-attending to h when `cross`), then LayerNorm and a projection to C channels;
    ViT init (the output projection zeroed where `zero_output`)."""

    cross: bool
    zero_output: bool

    def __init__(
        self,
        latent_channels: int = 64,
        context_channels: int = 64,
        dim: int = 512,
        depth: int = 8,
        heads: int = 8,
        mlp_ratio: float = 4.0,
        positions: str = "rope",
    ) -> None:
        super().__init__()
        self.rotary = time_rotary(positions, dim, heads)
        self.build_inputs(latent_channels, context_channels, dim)
        self.blocks = nn.ModuleList(DecoderBlock(dim, heads, self.cross, mlp_ratio) for _ in range(depth))
        self.norm_out = nn.LayerNorm(dim)
        self.proj_out = nn.Linear(dim, latent_channels)
        self.apply(init_vit_weights)
        if self.zero_output:
            nn.init.zeros_(self.proj_out.weight)

    def build_inputs(self, latent_channels: int, context_channels: int, dim: int) -> None:
        raise NotImplementedError

    def run_blocks(
        self, x: torch.Tensor, context: torch.Tensor | None, frame_keep: torch.Tensor | None
    ) -> torch.Tensor:
        """Tokens x (B, N, D) and context tokens (B, N, D) (if any), with frame positions, through the blocks
        -> (B, C, N)."""
        n = x.shape[1]
        rotary = None if self.rotary is None else self.rotary(n, x.device)
        if rotary is None:  # absolute positions
            pos = frame_positions(n, x.shape[-1], x.device)  # (N, D)
            x = x + pos.to(x.dtype)
            context = None if context is None else context + pos.to(context.dtype)
        for block in self.blocks:
            x = block(x, context, frame_keep, rotary)
        return self.proj_out(self.norm_out(x)).transpose(1, 2)  # (B, N, C) -> (B, C, N)


class FlowDecoder(_TokenDecoder):
    """Rectified-flow latent decoder: (Z_t (B, C, N), t (B,), h (B, C_h, N)) -> U_hat (B, C, N)."""

    cross, zero_output = True, True  # start at U_hat = 0

    def build_inputs(self, latent_channels: int, context_channels: int, dim: int) -> None:
        self.proj_in = nn.Linear(latent_channels, dim)
        self.context_in = nn.Linear(context_channels, dim)
        self.time_embed = TimestepEmbedder(dim, features="sinusoidal")

    def forward(
        self, z_t: torch.Tensor, t: torch.Tensor, context: torch.Tensor, frame_keep: torch.Tensor | None = None
    ) -> torch.Tensor:
        x = self.proj_in(z_t.transpose(1, 2))  # (B, C, N) -> (B, N, D)
        x = x + self.time_embed(t)[:, None].to(x.dtype)  # timestep conditioning on every token
        return self.run_blocks(x, self.context_in(context.transpose(1, 2)), frame_keep)  # context (B, N, D)

    def sample(
        self,
        context: torch.Tensor,
        noise: torch.Tensor,
        steps: int = 2,
        frame_keep: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Z0_hat (B, C, N) from noise (B, C, N) in `steps` Euler steps, conditioned on context (B, C_h, N)."""
        return euler(lambda z, t: self(z, t, context, frame_keep), noise, tensor_time_grid(steps, noise.device))


class VitDecoder(_TokenDecoder):
    """Table 6 ablation: a ViT over the time tokens of h, mapped straight to Z0_hat (B, C, N); MSE-trained."""

    cross, zero_output = False, False

    def build_inputs(self, latent_channels: int, context_channels: int, dim: int) -> None:
        self.proj_in = nn.Linear(context_channels, dim)

    def forward(self, context: torch.Tensor, frame_keep: torch.Tensor | None = None) -> torch.Tensor:
        x = self.proj_in(context.transpose(1, 2))  # (B, C_h, N) -> (B, N, D)
        return self.run_blocks(x, None, frame_keep)
