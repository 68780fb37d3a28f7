"""The Oobleck VAE's CPU inference engine, a path the caller asks for: `InferenceVAE(vae, **options)`.

Its `encode`, `encode_mean` and `decode` run the engine on CPU float32 calls with autograd off, where it is
measured faster (docs/benchmarks.md): the VAE's modules one by one through `lafa.models.vae_inference`'s
kernels, long clips in windows (`lafa.models.chunking`), bf16 where asked and native. Any other call (GPU,
other dtypes, autograd on, not an OobleckVAE, `enabled=False`) runs the plain model. Outputs agree with the
plain model's within `TOLERANCE` of the max (tests/golden/test_vae_golden.py). Nothing is written to the
model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from lafa.models import oobleck, vae_inference, winograd
from lafa.models.chunking import chunked
from lafa.models.oobleck import OobleckVAE, WNConv1d
from lafa.models.vae_inference import FoldedWeight

TOLERANCE = 1e-4  # max |engine - plain| / max |plain| (float32, default options)


@dataclass
class InferenceConfig:
    """Knobs of the VAE's CPU inference engine."""

    chunk_frames: int | None = 256  # longest window in latent frames (11.9 s at 44.1 kHz); None: whole clips
    overlap_frames: int = 24  # least overlap of neighbouring windows; >= 2 x reach + 1 makes chunking exact
    fused_snake: bool = True  # compiled SnakeBeta kernel (falls back to eager with a warning)
    dtype: torch.dtype | None = None  # torch.bfloat16: bf16 activations and weights; None: the input's float32
    channels_last: bool = True  # activations with the channel fastest (oneDNN's direct 1-D kernels); False: (B, C, L)
    tile_elements: int | None = 128 * 45056  # residual units run on time tiles of about this many B x C x L
    # elements (23 MB in float32, cache-sized), with exact halos; None: whole activations
    winograd_tile: int | None = 4  # kernel-7 convs by Winograd F(m, 7), m in (2, 4): 8 / 14 or 10 / 28 of the
    # multiply-adds, ~4e-6 / ~2e-5 of the max per conv (direct: ~1.5e-6); None: direct convolutions everywhere
    winograd_min_channels: int = 128  # ... from this many input channels (below, no faster: docs/benchmarks.md)

    def __post_init__(self) -> None:
        if self.tile_elements is not None and self.tile_elements < 1:
            raise ValueError(f"tile_elements must be positive or None, got {self.tile_elements}")
        if self.chunk_frames is not None and not 0 <= self.overlap_frames < self.chunk_frames:
            raise ValueError(f"need 0 <= overlap_frames < chunk_frames, got {self.overlap_frames}, "
                             f"{self.chunk_frames}")
        if self.winograd_tile not in (None, *winograd.POINTS):
            raise ValueError(f"winograd_tile must be one of {sorted(winograd.POINTS)} or None, got {self.winograd_tile}")
        if self.dtype not in (None, torch.float32, torch.bfloat16):
            raise ValueError(f"inference dtype must be float32 or bfloat16, got {self.dtype}")


class InferenceVAE:
    """`vae` for inference. Not a module (nothing in a state dict): it caches each conv's folded and packed weight,
    keyed by the parameters' storage and version, so training or reloading the VAE in between is safe."""

    def __init__(self, vae: nn.Module, enabled: bool = True, allow_emulated_bf16: bool = False, **options) -> None:
        self.vae, self.enabled = vae, enabled
        self.config = InferenceConfig()
        self.folded: dict[nn.Module, FoldedWeight] = {}
        self.configure(allow_emulated_bf16, **options)

    def configure(self, allow_emulated_bf16: bool = False, **options) -> InferenceConfig:
        """Set `InferenceConfig` fields. bf16 needs native bf16 on the VAE's device (else refused unless
        `allow_emulated_bf16`: for measuring its error); off the CPU it runs the plain model under bf16 autocast."""
        config = InferenceConfig(**{**self.config.__dict__, **options})
        if config.dtype == torch.bfloat16:
            if not isinstance(self.vae, OobleckVAE):
                raise ValueError("bf16 inference needs an Oobleck VAE autoencoder")
            device = next(self.vae.parameters()).device
            if not allow_emulated_bf16 and not vae_inference.bf16_supported(device):
                raise ValueError(f"bf16 inference needs native bf16 arithmetic; {device} has none (the CPU needs "
                                 "AVX512-BF16 or AMX): it would be slower than float32")
        self.config = config
        self.folded = {}
        return config

    def uses_engine(self, x: torch.Tensor) -> bool:
        """Whether a call on `x` runs the engine (else the plain model)."""
        return (self.enabled and isinstance(self.vae, OobleckVAE) and x.device.type == "cpu"
                and x.dtype == torch.float32 and not torch.is_grad_enabled())

    def _plain(self, fn: Callable, x: torch.Tensor, *args):
        if self.config.dtype != torch.bfloat16:
            return fn(x, *args)
        with torch.autocast(x.device.type, dtype=torch.bfloat16):
            out = fn(x, *args)
        return out.to(x.dtype) if torch.is_tensor(out) else tuple(t.to(x.dtype) for t in out)

    def encode(self, audio: torch.Tensor, sample: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """As `OobleckVAE.encode`: z (sampled, or the mean with sample=False) and the KL."""
        if not self.uses_engine(audio):
            return self._plain(self.vae.encode, audio, sample)
        mean, scale = self.encoder_out(audio).chunk(2, dim=1)
        z, kl = oobleck.vae_sample(mean, scale)
        return (z if sample else mean), kl

    def encode_mean(self, audio: torch.Tensor) -> torch.Tensor:
        """As `OobleckVAE.encode_mean`: (B, 2, S) -> (B, C, S // 2048)."""
        if not self.uses_engine(audio):
            return self._plain(self.vae.encode_mean, audio)
        return self.encoder_out(audio).chunk(2, dim=1)[0]

    def encoder_out(self, audio: torch.Tensor) -> torch.Tensor:
        """The encoder output (B, 2C, S // 2048): mean and scale of the posterior (the engine's, else the plain
        model's)."""
        if not self.uses_engine(audio):
            return self._plain(self.vae.encoder, audio)
        vae, ratio = self.vae, self.vae.downsampling_ratio
        vae._check_audio(audio)
        return self._chunked(vae.encoder, audio, audio.shape[-1] // ratio, ratio, 1, 2 * vae.latent_dim,
                             vae.encoder_reach)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """As `OobleckVAE.decode`: (B, C, N) -> (B, 2, N * 2048)."""
        if not self.uses_engine(z):
            return self._plain(self.vae.decode, z)
        vae = self.vae
        vae._check_latent(z)
        return self._chunked(vae.decoder, z, z.shape[-1], 1, vae.downsampling_ratio, vae.io_channels,
                             vae.decoder_reach)

    @torch.no_grad()
    def _chunked(self, net: nn.Module, x: torch.Tensor, frames: int, in_per_frame: int, out_per_frame: int,
                 out_channels: int, reach: int) -> torch.Tensor:
        """The encoder or decoder on windows of at most `chunk_frames` frames, in the configured dtype and layout."""
        cfg = self.config
        chunk = cfg.chunk_frames or max(frames, 1)
        fn = lambda t: self.run(net, vae_inference.channels_last(t) if cfg.channels_last else t)  # noqa: E731
        out = chunked(fn, x if cfg.dtype is None else x.to(cfg.dtype), frames, in_per_frame, out_per_frame,
                      out_channels, chunk, min(cfg.overlap_frames, chunk - 1), reach)
        return out.to(x.dtype).contiguous()

    def run(self, m: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """One module of the VAE as the engine runs it; modules it has no kernel for run their own forward."""
        if isinstance(m, WNConv1d):
            return self.conv(m, x)
        if isinstance(m, oobleck.SnakeBeta) and self.config.fused_snake:
            alpha = m.alpha.exp().to(x.dtype)[None, :, None]  # (1, C, 1)
            inv_beta = (1.0 / (m.beta.exp() + 1e-9)).to(x.dtype)[None, :, None]
            return vae_inference.snake_fused(x, alpha, inv_beta)
        if isinstance(m, oobleck.ResidualUnit):  # the residual add fused into the last conv's output pass
            return self.conv(m.layers[3], self.run(m.layers[:3], x), residual=x)
        if isinstance(m, oobleck.EncoderBlock):  # residual units and act on time tiles, then the strided conv
            return self.conv(m.layers[4], self._tiled(m.layers[:4], x))
        if isinstance(m, oobleck.DecoderBlock):  # act, transposed conv, then the residual units on time tiles
            return self._tiled(m.layers[2:], self.run(m.layers[:2], x))
        if isinstance(m, (oobleck.OobleckEncoder, oobleck.OobleckDecoder)):
            m = m.layers
        if isinstance(m, nn.Sequential):
            for layer in m:
                x = self.run(layer, x)
            return x
        return m(x)

    def _tiled(self, stack: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
        """A length-preserving stack on time tiles with halos of its receptive-field reach (exact)."""
        halo = sum((c.kernel_size - 1) // 2 * c.dilation for c in stack.modules() if isinstance(c, WNConv1d))
        return vae_inference.tiled(lambda t: self.run(stack, t), x, self.config.tile_elements, halo)

    def conv(self, m: WNConv1d, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        """conv(x) (+ residual) with the folded weight, computed once per parameter version, and packed kernels."""
        folded = self.folded.setdefault(m, FoldedWeight())
        folded.get(m.weight_v, m.weight_g, x.dtype)
        bias = None if m.bias is None else m.bias.to(x.dtype)
        if m.transposed:  # (never with a residual in the VAE)
            return vae_inference.conv_transpose_inference(x, folded, bias, m.stride, m.padding, m.dilation)
        cfg = self.config
        tile = None if cfg.winograd_tile is None else (cfg.winograd_tile, cfg.winograd_min_channels)
        return vae_inference.conv_inference(x, folded, bias, m.stride, m.padding, m.dilation, residual, tile)
