"""The Oobleck waveform VAE of Stable Audio Open 1.0 ("SAO-VAE"), key-compatible with stable-audio-tools.

Paper Sec. 4.3 / Appendix D build on it: stereo 44.1 kHz audio -> (B, latent_dim, S / 2048) latents at 21.5 Hz.
Parameter names follow the official checkpoint (`encoder.layers.N...`, `weight_g`/`weight_v`, `alpha`/`beta`),
so `lafa.checkpoints.load_sao_vae` loads official weights by name. Plain PyTorch in every mode; the CPU
inference engine is a separate path a caller asks for: `lafa.models.vae_engine.InferenceVAE(vae)`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from lafa.models.chunking import chunked, receptive_reach
from lafa.models.presets import config_class


class WNConv1d(nn.Module):
    """Weight-normalised (transposed) Conv1d: w = g * v / ||v||, the norm over all dims but dim 0.

    g and v are stored as `weight_g`, `weight_v` exactly as torch's legacy `weight_norm` names them
    (for a transposed conv, dim 0 is the input channels, so weight_g is (in, 1, 1)).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        padding: int = 0,
        dilation: int = 1,
        bias: bool = True,
        transposed: bool = False,
    ) -> None:
        super().__init__()
        conv_cls = nn.ConvTranspose1d if transposed else nn.Conv1d
        conv = conv_cls(in_channels, out_channels, kernel_size, stride=stride, padding=padding,
                        dilation=dilation, bias=bias)  # torch's default init, as the reference uses
        v = conv.weight.detach().clone()
        self.weight_g = nn.Parameter(torch.linalg.vector_norm(v, dim=(1, 2), keepdim=True))
        self.weight_v = nn.Parameter(v)
        self.bias = conv.bias
        self.stride, self.padding, self.dilation, self.transposed = stride, padding, dilation, transposed
        self.kernel_size = kernel_size

    def weight(self) -> torch.Tensor:
        # torch's fused weight-norm kernel (the one nn.utils.parametrizations.weight_norm calls): the same
        # g * v / ||v||, about 4x faster forward + backward over the SAO VAE's weights (docs/benchmarks.md)
        return torch._weight_norm(self.weight_v, self.weight_g, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.transposed:
            return F.conv_transpose1d(x, self.weight(), self.bias, self.stride, self.padding, dilation=self.dilation)
        return F.conv1d(x, self.weight(), self.bias, self.stride, self.padding, self.dilation)


class SnakeBeta(nn.Module):
    """x + 1 / (beta + 1e-9) * sin(alpha * x)^2 with per-channel alpha, beta stored as logs (init 0)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.zeros(channels))
        self.beta = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        alpha = self.alpha.exp()[None, :, None]  # (1, C, 1)
        beta = self.beta.exp()[None, :, None]
        return x + 1.0 / (beta + 1e-9) * torch.sin(alpha * x).pow(2)


def activation(channels: int, use_snake: bool) -> nn.Module:
    return SnakeBeta(channels) if use_snake else nn.ELU()


class ResidualUnit(nn.Module):
    """x + (act -> WNConv k7 dilated -> act -> WNConv k1)(x); length preserved."""

    def __init__(self, channels: int, dilation: int, use_snake: bool) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            activation(channels, use_snake),
            WNConv1d(channels, channels, 7, dilation=dilation, padding=3 * dilation),
            activation(channels, use_snake),
            WNConv1d(channels, channels, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.layers(x)


class EncoderBlock(nn.Module):
    """Residual units (dilations 1, 3, 9) -> act -> strided conv: (B, in, L) -> (B, out, L // stride)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, use_snake: bool) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            *(ResidualUnit(in_channels, d, use_snake) for d in (1, 3, 9)),
            activation(in_channels, use_snake),
            WNConv1d(in_channels, out_channels, 2 * stride, stride=stride, padding=math.ceil(stride / 2)),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class DecoderBlock(nn.Module):
    """act -> transposed conv -> residual units (1, 3, 9): (B, in, L) -> (B, out, L * stride)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, use_snake: bool) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            activation(in_channels, use_snake),
            WNConv1d(in_channels, out_channels, 2 * stride, stride=stride, padding=math.ceil(stride / 2),
                     transposed=True),
            *(ResidualUnit(out_channels, d, use_snake) for d in (1, 3, 9)),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class _LayerStack(nn.Module):
    """`self.layers` in order; `use_checkpointing`: each block's activations are recomputed in backward."""

    use_checkpointing = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        recompute = self.use_checkpointing and torch.is_grad_enabled()
        for layer in self.layers:
            if recompute and isinstance(layer, (EncoderBlock, DecoderBlock)):
                x = checkpoint(layer, x, use_reentrant=False)
            else:
                x = layer(x)
        return x


class OobleckEncoder(_LayerStack):
    """(B, in_channels, S) -> (B, out_channels, S // prod(strides))."""

    def __init__(self, in_channels: int, channels: int, c_mults: tuple[int, ...], strides: tuple[int, ...],
                 out_channels: int, use_snake: bool) -> None:
        super().__init__()
        widths = [channels * m for m in (1, *c_mults)]
        self.layers = nn.Sequential(
            WNConv1d(in_channels, widths[0], 7, padding=3),
            *(EncoderBlock(widths[i], widths[i + 1], s, use_snake) for i, s in enumerate(strides)),
            activation(widths[-1], use_snake),
            WNConv1d(widths[-1], out_channels, 3, padding=1),
        )


class OobleckDecoder(_LayerStack):
    """(B, latent_dim, N) -> (B, out_channels, N * prod(strides)); the mirror of the encoder, no bias at the end."""

    def __init__(self, out_channels: int, channels: int, c_mults: tuple[int, ...], strides: tuple[int, ...],
                 latent_dim: int, use_snake: bool, final_tanh: bool) -> None:
        super().__init__()
        widths = [channels * m for m in (1, *c_mults)]
        blocks = [DecoderBlock(widths[i + 1], widths[i], strides[i], use_snake) for i in reversed(range(len(strides)))]
        self.layers = nn.Sequential(
            WNConv1d(latent_dim, widths[-1], 7, padding=3),
            *blocks,
            activation(widths[0], use_snake),
            WNConv1d(widths[0], out_channels, 7, padding=3, bias=False),
            nn.Tanh() if final_tanh else nn.Identity(),
        )


def vae_sample(mean: torch.Tensor, scale: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Stable Audio's VAE bottleneck: std = softplus(scale) + 1e-4, z = mean + std * eps,
    KL = (mean^2 + var - log var - 1) summed over channels, averaged over batch and frames (no 1/2)."""
    std = F.softplus(scale) + 1e-4
    var = std * std
    z = mean + std * torch.randn_like(mean)
    kl = (mean * mean + var - torch.log(var) - 1).sum(1).mean()
    return z, kl


class OobleckVAE(nn.Module):
    """Encoder -> VAE bottleneck -> decoder, Stable Audio Open 1.0's autoencoder (2048x, 21.5 Hz at 44.1 kHz)."""

    def __init__(
        self,
        in_channels: int = 2,
        channels: int = 128,
        c_mults: tuple[int, ...] = (1, 2, 4, 8, 16),
        strides: tuple[int, ...] = (2, 4, 4, 8, 8),
        latent_dim: int = 64,
        sample_rate: int = 44100,
        use_snake: bool = True,
        final_tanh: bool = False,
    ) -> None:
        super().__init__()
        if len(c_mults) != len(strides):
            raise ValueError(f"c_mults {c_mults} and strides {strides} must have the same length")
        self.latent_dim = latent_dim
        self.io_channels = in_channels
        self.sample_rate = sample_rate
        self.downsampling_ratio = math.prod(strides)
        self.encoder = OobleckEncoder(in_channels, channels, tuple(c_mults), tuple(strides), 2 * latent_dim, use_snake)
        self.decoder = OobleckDecoder(in_channels, channels, tuple(c_mults), tuple(strides), latent_dim, use_snake,
                                      final_tanh)
        # one-sided receptive-field reach in latent frames (bounds; the chunked path's exactness margin)
        self.encoder_reach = receptive_reach(_convs(self.encoder), 1, self.downsampling_ratio)
        self.decoder_reach = receptive_reach(_convs(self.decoder), 1, 1)

    def set_checkpointing(self, enabled: bool) -> None:
        """Activation checkpointing of every encoder/decoder block (memory for recompute in training)."""
        self.encoder.use_checkpointing = self.decoder.use_checkpointing = enabled

    def _check_audio(self, audio: torch.Tensor) -> None:
        if audio.ndim != 3 or audio.shape[1] != self.io_channels:
            raise ValueError(f"audio must be (B, {self.io_channels}, S), got {tuple(audio.shape)}")

    def _check_latent(self, z: torch.Tensor) -> None:
        if z.ndim != 3 or z.shape[1] != self.latent_dim:
            raise ValueError(f"latent must be (B, {self.latent_dim}, N), got {tuple(z.shape)}")

    def encode(self, audio: torch.Tensor, sample: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 2, S) -> z (B, C, S // 2048), kl (scalar). sample=False returns the mean (KL still computed)."""
        self._check_audio(audio)
        mean, scale = self.encoder(audio).chunk(2, dim=1)  # (B, 2C, N) -> 2 x (B, C, N)
        z, kl = vae_sample(mean, scale)
        return (z if sample else mean), kl

    def encode_mean(self, audio: torch.Tensor) -> torch.Tensor:
        """Deterministic encode (the posterior mean), (B, 2, S) -> (B, C, S // 2048)."""
        self._check_audio(audio)
        return self.encoder(audio).chunk(2, dim=1)[0]

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """(B, C, N) -> (B, 2, N * 2048)."""
        self._check_latent(z)
        return self.decoder(z)

    def forward(self, audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Sampling encode then decode: (reconstruction (B, 2, S), kl)."""
        z, kl = self.encode(audio, sample=True)
        return self.decode(z), kl

    def encode_chunked(self, audio: torch.Tensor, chunk_size: int, overlap: int) -> torch.Tensor:
        """Deterministic encode (the mean) in windows of at most `chunk_size` latent frames overlapping by at least
        `overlap`, crossfaded (`chunking.chunked`); trailing samples short of a frame are read by the last window."""
        self._check_audio(audio)
        frames = audio.shape[-1] // self.downsampling_ratio
        out = chunked(self.encoder, audio, frames, self.downsampling_ratio, 1, 2 * self.latent_dim, chunk_size,
                      overlap, self.encoder_reach)
        return out.chunk(2, dim=1)[0].to(audio.dtype)

    def decode_chunked(self, z: torch.Tensor, chunk_size: int, overlap: int) -> torch.Tensor:
        """Decode in windows of at most `chunk_size` frames overlapping by at least `overlap`, crossfaded."""
        self._check_latent(z)
        return chunked(self.decoder, z, z.shape[-1], 1, self.downsampling_ratio, self.io_channels, chunk_size,
                       overlap, self.decoder_reach).to(z.dtype)


# Stable Audio Open 1.0's autoencoder (OobleckVAE's defaults: ~156 M parameters, 2048x) and the CPU size of the
# tiny configs; a config names one and may override any argument.
VAE_PRESETS: dict[str, dict] = {
    "sao-1.0": {},
    "tiny": dict(channels=8),
}
OobleckVAEConfig = config_class(OobleckVAE)


def _convs(module: nn.Module) -> list[tuple[int, int, int, bool]]:
    """(kernel, stride, dilation, transposed) of every WNConv1d in forward order."""
    return [(m.kernel_size, m.stride, m.dilation, m.transposed) for m in module.modules() if isinstance(m, WNConv1d)]
