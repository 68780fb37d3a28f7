"""EnCodec-style multi-scale complex-STFT discriminator, as Stable Audio trains its VAE with.

Each scale: complex STFT (real and imaginary parts as channels, time x frequency) -> weight-normalised Conv2d
stack, kernels (3, 9), time dilations 1, 2, 4, frequency stride 2, LeakyReLU(0.2) -> a 1-channel logit map.
The activations after every conv are returned for feature matching.
"""

from __future__ import annotations

import torch
import torchaudio
from torch import nn
from torch.nn.utils.parametrizations import weight_norm


def _same_padding(kernel: tuple[int, int], dilation: tuple[int, int] = (1, 1)) -> tuple[int, int]:
    return (kernel[0] - 1) * dilation[0] // 2, (kernel[1] - 1) * dilation[1] // 2


class STFTDiscriminator(nn.Module):
    """One scale: (B, channels, S) -> logits (B, 1, T', F'), features [5 x (B, filters, T', F')]."""

    def __init__(self, in_channels: int, filters: int, n_fft: int, hop_length: int, win_length: int) -> None:
        super().__init__()
        self.spec = torchaudio.transforms.Spectrogram(
            n_fft=n_fft, hop_length=hop_length, win_length=win_length, window_fn=torch.hann_window,
            normalized=True, center=False, power=None,
        )
        width = min(filters, 1024)
        kernel, square = (3, 9), (3, 3)
        convs = [nn.Conv2d(2 * in_channels, width, kernel, padding=_same_padding(kernel))]
        for d in (1, 2, 4):
            convs.append(nn.Conv2d(width, width, kernel, stride=(1, 2), dilation=(d, 1),
                                   padding=_same_padding(kernel, (d, 1))))
        convs.append(nn.Conv2d(width, width, square, padding=_same_padding(square)))
        self.convs = nn.ModuleList(weight_norm(c) for c in convs)
        self.conv_post = weight_norm(nn.Conv2d(width, 1, square, padding=_same_padding(square)))
        self.activation = nn.LeakyReLU(0.2)

    def forward(self, audio: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        spec = self.spec(audio.float())  # (B, C, F, T) complex; float32 even under bf16 autocast
        x = torch.cat([spec.real, spec.imag], dim=1).transpose(2, 3)  # (B, 2C, T, F)
        features = []
        for conv in self.convs:
            x = self.activation(conv(x))
            features.append(x)
        return self.conv_post(x), features


class MultiScaleSTFTDiscriminator(nn.Module):
    """One STFTDiscriminator per (n_fft, hop, win); returns per-scale logits and feature lists."""

    def __init__(self, in_channels: int = 2, filters: int = 64,
                 n_ffts: tuple[int, ...] = (2048, 1024, 512, 256, 128),
                 hop_lengths: tuple[int, ...] = (512, 256, 128, 64, 32),
                 win_lengths: tuple[int, ...] = (2048, 1024, 512, 256, 128)) -> None:
        super().__init__()
        if not len(n_ffts) == len(hop_lengths) == len(win_lengths):
            raise ValueError("n_ffts, hop_lengths and win_lengths must have the same length")
        self.discriminators = nn.ModuleList(
            STFTDiscriminator(in_channels, filters, n, h, w) for n, h, w in zip(n_ffts, hop_lengths, win_lengths, strict=True)
        )

    def forward(self, audio: torch.Tensor) -> tuple[list[torch.Tensor], list[list[torch.Tensor]]]:
        outputs = [d(audio) for d in self.discriminators]
        return [o[0] for o in outputs], [o[1] for o in outputs]
