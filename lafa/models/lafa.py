"""LAFA (paper Sec. 4, Fig. 4): channel-span masker + ViT encoder + latent decoder, on a frozen VAE's latent.

Training (Fig. 4): Z (B, C, N) from the frozen VAE -> mask -> encoder -> LAFA latent Y (B, C_lafa, N) ->
decoder inpaints Z0 = Z (rectified flow, or the Table 6 ViT decoder with MSE). Inference: the encoder sees
the unmasked Z; decoding runs k Euler steps of the flow decoder (Table 7).

mask_site "input" (Fig. 4, Sec. 4.3; default) masks Z before the encoder; "latent" (Proposition 1) encodes
the unmasked Z and masks Y before the decoder's cross-attention. Both use the same masker.

The VAE latent is standardised before LAFA sees it (`input_norm`, statistics measured once, then frozen;
"none" is the paper-literal reading; docs/lafa.md); `encode`/`loss`/`decode` take and return the VAE's own
scale. The latent a DiT models is Y normalised by statistics measured on data (`LatentNormalizer`).
"""

from __future__ import annotations

import torch
from torch import nn

from lafa.diffusion.objectives import masked_mse_pooled, noisy, target
from lafa.models.flow_decoder import FlowDecoder, VitDecoder
from lafa.models.lafa_encoder import LafaEncoder
from lafa.models.masking import ChannelSpanMasker
from lafa.models.presets import check_choice, config_class
from lafa.models.spectrum_loss import power_law_loss

MASK_SITES = ("input", "latent")
DECODERS = ("flow", "vit")
NORM_MODES = ("scalar", "channel")
INPUT_NORMS = ("channel", "scalar", "none")


class LatentNormalizer(nn.Module):
    """(y - mean) / std with statistics measured on data: one mean/std for the whole latent ("scalar", keeps the
    relative scale of channels that the channel-axis analyses measure) or one per channel ("channel").

    `reset()`, then `accumulate(y)` over batches, then `commit()` writes the buffers. `count` is the number of
    values the stored statistics came from (0: never measured; mean 0, std 1)."""

    def __init__(self, channels: int, mode: str = "scalar") -> None:
        super().__init__()
        check_choice("normalisation mode", mode, NORM_MODES)
        self.mode = mode
        self.register_buffer("mean", torch.zeros(channels, 1))
        self.register_buffer("std", torch.ones(channels, 1))
        self.register_buffer("count", torch.zeros((), dtype=torch.float64))
        self._sums: torch.Tensor | None = None  # (3, C) float64: count, sum, sum of squares per channel

    def reset(self) -> None:
        self._sums = None

    def accumulate(self, y: torch.Tensor, frame_keep: torch.Tensor | None = None) -> None:
        """Add a batch y (B, C, N) (real frames only, where frame_keep (B, N) is True)."""
        y = y.detach().double()
        keep = torch.ones_like(y[:, 0]) if frame_keep is None else frame_keep.to(y.dtype)  # (B, N)
        keep = keep[:, None]
        sums = torch.stack(
            (keep.sum(dim=(0, 2)).expand(y.shape[1]), (y * keep).sum(dim=(0, 2)), (y.pow(2) * keep).sum(dim=(0, 2)))
        )
        self._sums = sums if self._sums is None else self._sums + sums

    def pending(self) -> torch.Tensor | None:
        """The accumulated (3, C) sums, e.g. to all-reduce across processes before `commit`."""
        return self._sums

    def commit(self, sums: torch.Tensor | None = None) -> None:
        """Write mean/std from the accumulated sums (or the given ones) into the buffers."""
        sums = self._sums if sums is None else sums
        if sums is None or sums[0].sum() == 0:
            raise ValueError("no latent values were accumulated; cannot compute normalisation statistics")
        if self.mode == "scalar":
            sums = sums.sum(dim=1, keepdim=True)  # (3, 1)
        n, s, ss = sums
        mean = s / n
        std = (ss / n - mean.pow(2)).clamp_min(1e-12).sqrt()
        self.mean.copy_(mean.expand(self.mean.shape[0]).unsqueeze(-1).to(self.mean.dtype))
        self.std.copy_(std.expand(self.std.shape[0]).unsqueeze(-1).to(self.std.dtype))
        self.count.fill_(float(n.sum()))
        self._sums = None

    def normalize(self, y: torch.Tensor) -> torch.Tensor:
        return (y - self.mean.to(y.dtype)) / self.std.to(y.dtype)

    def denormalize(self, y: torch.Tensor) -> torch.Tensor:
        return y * self.std.to(y.dtype) + self.mean.to(y.dtype)


class Lafa(nn.Module):
    """The trainable LAFA bottleneck. Holds the masker, the encoder, the decoder and the latent statistics."""

    def __init__(
        self,
        latent_channels: int = 64,
        lafa_channels: int = 64,
        channel_group_size: int = 8,
        causal: bool = True,
        encoder_dim: int = 512,
        encoder_depth: int = 8,
        encoder_heads: int = 8,
        decoder: str = "flow",
        decoder_dim: int = 512,
        decoder_depth: int = 8,
        decoder_heads: int = 8,
        mlp_ratio: float = 4.0,
        mask_site: str = "input",
        mask_ratio: float = 1.0,
        max_spans: int = 4,
        mask_length: str = "uniform",
        p_all: float = 0.1,
        span: bool = True,
        mask_mode: str | None = None,
        spectrum_weight: float = 0.0,
        spectrum_slope: float = 2.0,
        spectrum_window: int = 64,
        norm_mode: str = "scalar",
        positions: str = "rope",
        output_heads: str = "group",
        input_norm: str = "channel",
    ) -> None:
        super().__init__()
        check_choice("input_norm", input_norm, INPUT_NORMS)
        check_choice("mask_site", mask_site, MASK_SITES)
        check_choice("decoder", decoder, DECODERS)
        self.mask_site = mask_site
        self.decoder_kind = decoder
        self.latent_channels, self.lafa_channels = latent_channels, lafa_channels
        masked_channels = latent_channels if mask_site == "input" else lafa_channels
        # mask_mode: span (Sec. 4.1) | point (Table 5, = span: false) | prefix (DC-AE 1.5); None: from `span`
        self.masker = ChannelSpanMasker(masked_channels, mask_ratio, max_spans, mask_length, p_all, span, mask_mode)
        if spectrum_weight < 0 or spectrum_window < 2:
            raise ValueError(f"spectrum_weight must be >= 0 and spectrum_window >= 2, got {spectrum_weight}, "
                             f"{spectrum_window}")
        # ESM-style spectrum matching (lafa.models.spectrum_loss): weight x L_spec(Y; alpha_t = spectrum_slope)
        self.spectrum_weight, self.spectrum_slope = float(spectrum_weight), float(spectrum_slope)
        self.spectrum_window = int(spectrum_window)
        self.encoder = LafaEncoder(
            latent_channels, lafa_channels, channel_group_size, encoder_dim, encoder_depth, encoder_heads, causal,
            mlp_ratio, positions, output_heads,
        )
        context_channels = lafa_channels
        if mask_site == "latent":  # masked Y entries: a learned value plus a flag channel each
            self.latent_mask_value = nn.Parameter(torch.zeros(lafa_channels))
            context_channels = 2 * lafa_channels
        decoder_cls = FlowDecoder if decoder == "flow" else VitDecoder
        self.decoder = decoder_cls(
            latent_channels, context_channels, decoder_dim, decoder_depth, decoder_heads, mlp_ratio, positions
        )
        self.normalizer = LatentNormalizer(lafa_channels, norm_mode)
        # the VAE latent's statistics ("none": identity, count stays 0 and nothing is measured)
        self.input_normalizer = LatentNormalizer(latent_channels, "channel" if input_norm == "none" else input_norm)
        self.input_norm = input_norm

    @property
    def needs_input_stats(self) -> bool:
        """True until the VAE latent's statistics are measured (never for input_norm "none")."""
        return self.input_norm != "none" and float(self.input_normalizer.count) == 0

    def normalize_input(self, z: torch.Tensor) -> torch.Tensor:
        return z if self.input_norm == "none" else self.input_normalizer.normalize(z)

    def denormalize_input(self, z: torch.Tensor) -> torch.Tensor:
        return z if self.input_norm == "none" else self.input_normalizer.denormalize(z)

    def encode(self, z: torch.Tensor, frame_keep: torch.Tensor | None = None) -> torch.Tensor:
        """Unmasked VAE latent (B, C, N) -> raw (un-normalised) LAFA latent Y (B, C_lafa, N); frame_keep (B, N)
        bool: real frames never attend to padding frames, so their Y does not depend on the padding."""
        return self.encoder(self.normalize_input(z), None, frame_keep)

    def context(self, y: torch.Tensor, masked: torch.Tensor | None = None) -> torch.Tensor:
        """What the decoder attends to: Y itself, or for mask_site "latent" the masked Y and its mask flags;
        masked (B, C_lafa) bool, True = masked."""
        if self.mask_site == "input":
            return y
        b, c, n = y.shape
        if masked is None:
            masked = torch.zeros(b, c, dtype=torch.bool, device=y.device)
        flags = masked[:, :, None].expand(b, c, n)
        filled = torch.where(flags, self.latent_mask_value.to(y.dtype)[None, :, None], y)
        return torch.cat((filled, flags.to(y.dtype)), dim=1)  # (B, 2 C_lafa, N)

    def loss(
        self,
        z0: torch.Tensor,
        masked: torch.Tensor,
        frame_keep: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """The training objective on a clean VAE latent z0 (B, C, N) under a channel mask `masked` (B, C) from `masker` (True = masked):
        Sec. 4.3's rectified-flow loss, or Table 6's MSE for the ViT decoder (on the standardised Z), plus
        spectrum_weight x the spectrum-matching loss of Y when spectrum_weight > 0 (`objective` has the parts)."""
        return self.objective(z0, masked, frame_keep, generator)["loss"]

    def objective(
        self,
        z0: torch.Tensor,
        masked: torch.Tensor,
        frame_keep: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> dict[str, torch.Tensor]:
        """{"loss": the total, "reconstruction": the flow (or ViT MSE) term, "spectrum": L_spec of the Y the
        decoder reads (the masked input's Y for mask_site "input"; computed only when spectrum_weight > 0)}."""
        z0 = self.normalize_input(z0)
        y = self.encoder(z0, masked if self.mask_site == "input" else None, frame_keep)
        ctx = self.context(y, masked)
        if self.decoder_kind == "vit":
            reconstruction = masked_mse_pooled(self.decoder(ctx, frame_keep), z0, frame_keep)
        else:
            b = z0.shape[0]
            draw_on = generator.device if generator is not None else z0.device  # a CPU generator: device-independent
            t = torch.rand(b, generator=generator, device=draw_on).to(z0.device)  # t ~ U[0, 1]
            noise = torch.randn(z0.shape, generator=generator, device=draw_on, dtype=z0.dtype).to(z0.device)
            z_t = noisy(z0, noise, t, "rf")  # Sec. 4.3: Z_t = (1 - t) Z0 + t eps, target U = eps - Z0
            reconstruction = masked_mse_pooled(self.decoder(z_t, t, ctx, frame_keep), target(z0, noise, t, "rf"),
                                               frame_keep)
        out = {"loss": reconstruction, "reconstruction": reconstruction}
        if self.spectrum_weight > 0:
            spectrum = power_law_loss(y.float(), self.spectrum_slope, self.spectrum_window, frame_keep)
            out["spectrum"] = spectrum
            out["loss"] = reconstruction + self.spectrum_weight * spectrum
        return out

    def decode(
        self,
        y: torch.Tensor,
        steps: int = 2,
        frame_keep: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Raw LAFA latent Y (B, C_lafa, N) -> Z0_hat (B, C, N) in the VAE's scale: k Euler steps of the flow
        decoder (Table 7), or one pass of the ViT decoder."""
        ctx = self.context(y)
        if self.decoder_kind == "vit":
            return self.denormalize_input(self.decoder(ctx, frame_keep))
        b, _, n = y.shape
        dtype = torch.promote_types(y.dtype, torch.float32)  # integrate in at least float32 (Y may be bf16)
        draw_on = generator.device if generator is not None else y.device  # a CPU generator: device-independent
        noise = torch.randn((b, self.latent_channels, n), generator=generator, device=draw_on, dtype=dtype).to(y.device)
        return self.denormalize_input(self.decoder.sample(ctx, noise, steps, frame_keep))


# The paper's model (Sec. 4-5; the widths are lafa's choice, the paper gives none) and the CPU size of the tiny
# configs; a config names one and may override any argument.
LAFA_PRESETS: dict[str, dict] = {
    "paper": {},  # Lafa's defaults
    "tiny": dict(encoder_dim=64, encoder_depth=2, encoder_heads=4, decoder_dim=64, decoder_depth=2, decoder_heads=4),
}
LafaConfig = config_class(Lafa, exclude=("latent_channels",))  # latent_channels: the frozen VAE's latent width
