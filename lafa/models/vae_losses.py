"""The VAE training losses as Stable Audio computes them (stable-audio-tools' autoencoder training).

- spectral: auraloss sum-and-difference multi-resolution STFT on the stereo pair, plus the same multi-resolution
  STFT on the left and on the right channel (log magnitude + spectral convergence, A-weighting pre-filter);
- adversarial: hinge losses on the multi-scale STFT discriminator's logits, summed over scales;
- feature matching: L1 between real and fake discriminator activations, averaged over layers, summed over scales.
The KL term comes from the bottleneck (`lafa.models.oobleck.vae_sample`). Weights are applied by the stage.
"""

from __future__ import annotations

import auraloss
import torch
from torch import nn


class SpectralReconstructionLoss(nn.Module):
    """(decoded, reals) (B, 2, S) -> {"stft_sum_diff", "stft_left", "stft_right"} (unweighted scalars)."""

    def __init__(self, sample_rate: int = 44100,
                 fft_sizes: tuple[int, ...] = (2048, 1024, 512, 256, 128, 64, 32),
                 hop_sizes: tuple[int, ...] = (512, 256, 128, 64, 32, 16, 8),
                 win_lengths: tuple[int, ...] = (2048, 1024, 512, 256, 128, 64, 32),
                 perceptual_weighting: bool = True) -> None:
        super().__init__()
        kwargs = dict(fft_sizes=list(fft_sizes), hop_sizes=list(hop_sizes), win_lengths=list(win_lengths),
                      perceptual_weighting=perceptual_weighting, sample_rate=sample_rate)
        self.sum_diff = auraloss.freq.SumAndDifferenceSTFTLoss(**kwargs)
        self.per_channel = auraloss.freq.MultiResolutionSTFTLoss(**kwargs)

    def forward(self, decoded: torch.Tensor, reals: torch.Tensor) -> dict[str, torch.Tensor]:
        if decoded.shape != reals.shape or decoded.shape[1] != 2:
            raise ValueError(f"need two stereo (B, 2, S) signals, got {tuple(decoded.shape)} and {tuple(reals.shape)}")
        decoded, reals = decoded.float(), reals.float()  # STFTs in float32 under bf16 autocast
        return {
            "stft_sum_diff": self.sum_diff(decoded, reals),
            "stft_left": self.per_channel(decoded[:, :1], reals[:, :1]),
            "stft_right": self.per_channel(decoded[:, 1:], reals[:, 1:]),
        }


def hinge_discriminator_loss(real_logits: list[torch.Tensor], fake_logits: list[torch.Tensor]) -> torch.Tensor:
    """sum over scales of mean(relu(1 - D(real))) + mean(relu(1 + D(fake)))."""
    return sum(torch.relu(1 - r).mean() + torch.relu(1 + f).mean() for r, f in zip(real_logits, fake_logits, strict=True))


def hinge_generator_loss(fake_logits: list[torch.Tensor]) -> torch.Tensor:
    """sum over scales of -mean(D(fake))."""
    return sum(-f.mean() for f in fake_logits)


def feature_matching_loss(real_features: list[list[torch.Tensor]],
                          fake_features: list[list[torch.Tensor]]) -> torch.Tensor:
    """sum over scales of the layer-averaged mean |D_l(real) - D_l(fake)|; real activations are targets."""
    return sum(
        sum((r.detach() - f).abs().mean() for r, f in zip(real, fake, strict=True)) / len(real)
        for real, fake in zip(real_features, fake_features, strict=True)
    )
