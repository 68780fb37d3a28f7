"""Reconstruction metrics of Sec. 5.3 / Tables 4, 7, 9: STFT distance, mel distance, SI-SDR (auraloss defaults).

Each example is scored on its real (unpadded) region only: padding masks mark real samples with True and
padding follows the real audio, so an example is cropped to its mask's length before scoring.
"""

from __future__ import annotations

import auraloss
import torch


class ReconstructionMetrics(torch.nn.Module):
    """Per-batch STFT distance, mel distance and SI-SDR, each averaged over examples."""

    def __init__(self, sample_rate: int = 44100, min_samples: int = 2048) -> None:
        super().__init__()
        self.stft = auraloss.freq.MultiResolutionSTFTLoss()  # ffts 1024/2048/512, hops 120/240/50
        self.mel = auraloss.freq.MelSTFTLoss(sample_rate)  # n_fft 1024, hop 256, 128 mels
        self.sisdr = auraloss.time.SISDRLoss()
        self.min_samples = min_samples  # shorter real regions are padded up to this so every STFT has frames

    @torch.no_grad()
    def forward(
        self, estimate: torch.Tensor, target: torch.Tensor, sample_keep: torch.Tensor | None = None
    ) -> dict[str, float]:
        """estimate, target: (B, channels, S); sample_keep: (B, S) bool, True on real samples."""
        if estimate.shape != target.shape:
            raise ValueError(f"estimate {tuple(estimate.shape)} and target {tuple(target.shape)} differ")
        estimate, target = estimate.float(), target.float()
        lengths = [target.shape[-1]] * len(target) if sample_keep is None else sample_keep.sum(-1).tolist()
        totals = {"stft_distance": 0.0, "mel_distance": 0.0, "si_sdr": 0.0}
        for est, ref, n in zip(estimate, target, lengths, strict=True):
            n = max(int(n), self.min_samples)
            est, ref = est[None, :, :n], ref[None, :, :n]  # (1, channels, n)
            if est.shape[-1] < n:  # the example itself is shorter than min_samples
                est, ref = (torch.nn.functional.pad(x, (0, n - x.shape[-1])) for x in (est, ref))
            totals["stft_distance"] += float(self.stft(est, ref))
            totals["mel_distance"] += float(self.mel(est, ref))
            totals["si_sdr"] += -float(self.sisdr(est, ref))
        return {k: v / len(lengths) for k, v in totals.items()}
