"""Log mel spectrogram (time x mel) of the analysed clips: the reference representation of Sec. 3.

The paper does not state its mel settings. lafa's defaults put the mel frames at the latent frame rate
(hop = 2048 samples at 44.1 kHz = 21.5 Hz, the SAO-VAE's downsampling ratio) with as many mel bins as the
VAE-64 latent has channels, so both maps share one shape and one ring grid. All settings are arguments:
`power` 1 (magnitude, lafa's default) or 2 (power), and `log` "offset" (log(mel + floor), lafa's default)
or "clamp" (log(max(mel, floor)), the common reading of a log-mel, e.g. HiFi-GAN/AudioLDM features).
"""

from __future__ import annotations

from typing import Literal

import torch
import torchaudio


class LogMel(torch.nn.Module):
    """(B, channels, S) audio -> (B, n_mels, S // hop_length) log mel of the mono mix: log(mel + floor)
    (`log="offset"`) or log(max(mel, floor)) (`log="clamp"`) of the magnitude (`power=1`) or power (2) mel."""

    def __init__(
        self,
        sample_rate: int = 44100,
        n_fft: int = 2048,
        hop_length: int = 2048,
        n_mels: int = 64,
        f_min: float = 0.0,
        f_max: float | None = None,
        log_floor: float = 1e-5,
        power: float = 1.0,
        log: Literal["offset", "clamp"] = "offset",
    ) -> None:
        super().__init__()
        if log not in ("offset", "clamp"):
            raise ValueError(f"log must be 'offset' or 'clamp', got {log!r}")
        if power <= 0:
            raise ValueError(f"power must be positive (1: magnitude, 2: power), got {power}")
        self.hop_length = hop_length
        self.log_floor, self.log = log_floor, log
        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=sample_rate,
            n_fft=n_fft,
            hop_length=hop_length,
            n_mels=n_mels,
            f_min=f_min,
            f_max=f_max,
            power=power,  # 1: magnitude (lafa's default), 2: power
            center=True,
        )

    def frames(self, num_samples: int) -> int:
        """Mel frames kept for `num_samples` samples: one per full hop, like a latent frame per ratio."""
        return num_samples // self.hop_length

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        if audio.ndim != 3:
            raise ValueError(f"expected audio (B, channels, samples), got shape {tuple(audio.shape)}")
        mono = audio.float().mean(dim=1)  # (B, S)
        mel = self.mel(mono)[..., : self.frames(audio.shape[-1])]  # (B, n_mels, S // hop)
        if self.log == "clamp":
            return torch.log(mel.clamp_min(self.log_floor))
        return torch.log(mel + self.log_floor)
