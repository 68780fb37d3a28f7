"""Log-mel: the reference representation of Sec. 3 (`LogMel`) and the same as an autoencoder (`LogMelAutoencoder`),
the base of the locality study's stand-in latent (docs/study.md).

`LogMel`: the paper does not state its mel settings. lafa's defaults put the mel frames at the latent frame
rate (hop = 2048 samples at 44.1 kHz = 21.5 Hz, the SAO-VAE's ratio) with as many mel bins as the VAE-64
latent has channels, so both maps share one shape and one ring grid. `log` "clamp" is the common reading of a
log-mel (e.g. HiFi-GAN/AudioLDM features).

`LogMelAutoencoder`: encode is `LogMel`; decode maps the magnitude mel to a linear-frequency magnitude by the
filterbank's pseudo-inverse, clipped at 0 (torchaudio's InverseMelScale solves the same least squares per
call, ~100x slower on a CPU), then Griffin-Lim, copied to every audio channel: lossy, so that a DiT on this
latent can generate audio that lafa's mel metrics can score.
"""

from __future__ import annotations

from typing import Literal

import torch
import torchaudio
from torch import nn

from lafa.models.autoencoder import zero_padding
from lafa.models.presets import config_class


class LogMel(torch.nn.Module):
    """(B, channels, S) audio -> (B, n_mels, S // hop_length) log mel of the mono mix: log(mel + floor)
    (`log="offset"`) or log(max(mel, floor)) (`log="clamp"`) of the magnitude (`power=1`) or power (2) mel.

    Args:
        sample_rate: audio sample rate in Hz
        n_fft: STFT size in samples
        hop_length: samples between frames (the log-mel frame rate is sample_rate / hop_length)
        n_mels: mel bands
        f_min: lowest mel band edge in Hz
        f_max: highest mel band edge in Hz (null: sample_rate / 2)
        log_floor: the floor of the log (added with log=offset, a lower bound with log=clamp)
        power: 1 for the magnitude mel, 2 for the power mel
        log: offset, log(mel + floor); clamp, log(max(mel, floor))
    """

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

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        if audio.ndim != 3:
            raise ValueError(f"expected audio (B, channels, samples), got shape {tuple(audio.shape)}")
        mono = audio.float().mean(dim=1)  # (B, S)
        mel = self.mel(mono)[..., : audio.shape[-1] // self.hop_length]  # (B, n_mels, S // hop), full hops
        if self.log == "clamp":
            return torch.log(mel.clamp_min(self.log_floor))
        return torch.log(mel + self.log_floor)


class LogMelAutoencoder(nn.Module):
    """(B, io_channels, S) audio <-> (B, n_mels, S // hop_length) log-mel."""

    def __init__(
        self,
        sample_rate: int = 44100,
        io_channels: int = 2,
        n_fft: int = 4096,  # two hops: Griffin-Lim's overlap-add needs overlapping windows
        hop_length: int = 2048,
        n_mels: int = 64,
        f_min: float = 0.0,
        f_max: float | None = None,
        log_floor: float = 1e-5,
        griffin_lim_iters: int = 32,
    ) -> None:
        super().__init__()
        if n_fft < 2 * hop_length:
            raise ValueError(f"n_fft {n_fft} < 2 x hop_length {hop_length}: Griffin-Lim needs overlapping windows")
        self.sample_rate, self.io_channels = sample_rate, io_channels
        self.latent_dim, self.downsampling_ratio = n_mels, hop_length
        self.log_floor = log_floor
        self.mel = LogMel(sample_rate, n_fft, hop_length, n_mels, f_min, f_max, log_floor)
        fb = self.mel.mel.mel_scale.fb  # (n_fft / 2 + 1, n_mels): mel = fb^T |STFT|
        self.register_buffer("inverse_fb", torch.linalg.pinv(fb.T.double()).float(), persistent=False)
        self.griffin_lim = torchaudio.transforms.GriffinLim(
            n_fft=n_fft, n_iter=griffin_lim_iters, hop_length=hop_length, power=1.0
        )

    def encode_mean(self, audio: torch.Tensor) -> torch.Tensor:
        return self.mel(audio)

    def encode(self, audio: torch.Tensor, sample_keep: torch.Tensor | None = None) -> torch.Tensor:
        """Log-mel of the audio with its padding zeroed (a frame sees n_fft samples around its start)."""
        return self.mel(zero_padding(audio, sample_keep))

    @torch.no_grad()
    def decode(
        self, latent: torch.Tensor, steps: int | None = None, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """(B, n_mels, N) log-mel -> (B, io_channels, N * hop_length) audio; `steps` is unused. Griffin-Lim's
        random initial phase comes from `generator` when one is given (else from torch's global RNG)."""
        b, _, n = latent.shape
        magnitude = (latent.float().exp() - self.log_floor).clamp_min(0.0)  # (B, n_mels, N)
        linear = (self.inverse_fb @ magnitude).clamp_min(0.0)  # (B, n_fft / 2 + 1, N)
        if generator is None:
            audio = self.griffin_lim(linear)  # (B, ~N * hop)
        else:  # torchaudio draws the phase from the global RNG: seed a forked one from the generator
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(int(torch.randint(2**62, (1,), generator=generator)))
                audio = self.griffin_lim(linear)
        length = n * self.downsampling_ratio
        audio = nn.functional.pad(audio, (0, max(0, length - audio.shape[-1])))[..., :length]
        return audio[:, None].expand(b, self.io_channels, length).contiguous()


LogMelAutoencoderConfig = config_class(LogMelAutoencoder)
