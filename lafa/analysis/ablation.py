"""Per-channel ablation residuals (Appendix G, Fig. 6).

For each channel c of z = encode(x): replace z_c (all frames) by Gaussian noise of small standard deviation,
keep the other channels, decode, and take the log-mel residual of the result against the ground truth x.
Strong, structured residuals mark channels that carry salient information; weak or noise-like ones mark
redundant or noisy channels. `reference="reconstruction"` subtracts the unablated reconstruction instead of
x, which removes the autoencoder's own reconstruction error common to every channel's residual.
"""

from __future__ import annotations

import torch

from lafa.models.log_mel import LogMel


@torch.no_grad()
def channel_ablation(
    autoencoder,
    audio: torch.Tensor,
    mel: LogMel,
    noise_std: float = 0.1,
    reference: str = "ground_truth",
    batch_size: int = 8,
    steps: int | None = None,
    seed: int = 0,
) -> dict[str, torch.Tensor]:
    """audio: (io_channels, S) one clip. Returns residuals (C, n_mels, F), baseline (n_mels, F) (the
    unablated reconstruction's residual against x) and energy (C,): mean |residual| per channel.

    autoencoder: anything with the `lafa.models.autoencoder.Autoencoder` interface (encode/decode). Every draw (the
    replacement noise and a flow decoder's) comes from `seed`, so the same call gives the same numbers.
    """
    if reference not in ("ground_truth", "reconstruction"):
        raise ValueError(f"reference must be 'ground_truth' or 'reconstruction', got {reference!r}")
    if audio.ndim != 2:
        raise ValueError(f"expected one clip (channels, samples), got shape {tuple(audio.shape)}")
    generator = torch.Generator().manual_seed(seed)
    z = autoencoder.encode(audio[None])  # (1, C, N)
    channels = z.shape[1]
    target = mel(audio[None].cpu())[0]  # (n_mels, F)
    recon = mel(autoencoder.decode(z, steps=steps, generator=generator).float().cpu())[0]  # a flow decoder draws
    frames = min(target.shape[-1], recon.shape[-1])
    reference_mel = (target if reference == "ground_truth" else recon)[:, :frames]
    residuals = []
    for start in range(0, channels, batch_size):
        chans = torch.arange(start, min(start + batch_size, channels))
        zs = z.repeat(len(chans), 1, 1)  # (k, C, N)
        noise = noise_std * torch.randn(len(chans), z.shape[-1], generator=generator)
        zs[torch.arange(len(chans)), chans] = noise.to(zs)
        decoded = mel(autoencoder.decode(zs, steps=steps, generator=generator).float().cpu())  # (k, n_mels, F')
        residuals.append(decoded[..., :frames] - reference_mel)
    residuals = torch.cat(residuals)  # (C, n_mels, frames)
    return {
        "residuals": residuals,
        "baseline": recon[:, :frames] - target[:, :frames],
        "energy": residuals.abs().mean(dim=(1, 2)),
    }
