"""Log-mel as an autoencoder: the base of the locality study's stand-in latent (docs/study.md).

encode: the mono mix's log-magnitude mel spectrogram, with the analysis's own `LogMel` (one frame per
`hop_length` samples, `n_mels` channels; lafa.analysis.mel). decode: magnitude mel -> linear-frequency
magnitude by the filterbank's pseudo-inverse, clipped at 0 (torchaudio's InverseMelScale solves the same least
squares per call, ~100x slower on a CPU) -> Griffin-Lim phase reconstruction
(torchaudio's GriffinLim), copied to every audio channel. Decoding is lossy (no phase is stored); it exists so
that a DiT on this latent can generate audio that lafa's mel metrics can score, like any other latent space.

Whitened and rotated by `lafa.models.autoencoder.LinearLatentAutoencoder`, this is an information-preserving,
decorrelated latent with no channel locality at all: the control a VAE latent stands in for.
"""

from __future__ import annotations

import torch
import torchaudio
from torch import nn

from lafa.analysis.mel import LogMel
from lafa.models.autoencoder import zero_padding


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
    def decode(self, latent: torch.Tensor, steps: int | None = None) -> torch.Tensor:
        """(B, n_mels, N) log-mel -> (B, io_channels, N * hop_length) audio; `steps` is unused."""
        b, _, n = latent.shape
        magnitude = (latent.float().exp() - self.log_floor).clamp_min(0.0)  # (B, n_mels, N)
        linear = (self.inverse_fb @ magnitude).clamp_min(0.0)  # (B, n_fft / 2 + 1, N)
        audio = self.griffin_lim(linear)  # (B, ~N * hop)
        length = n * self.downsampling_ratio
        audio = nn.functional.pad(audio, (0, max(0, length - audio.shape[-1])))[..., :length]
        return audio[:, None].expand(b, self.io_channels, length).contiguous()
