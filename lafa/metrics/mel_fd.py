"""fd_mel: an offline, weight-free distribution distance between two sets of audio.

Every log-mel frame of every clip is one sample; the Frechet distance between the two sets' Gaussian frame
statistics is the score. It needs no pretrained network, so the demo and the studies can compare runs
anywhere, but it is NOT FD_openl3 and its values cannot be put next to the paper's (docs/metrics.md).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
import torchaudio

from lafa.audio import load_audio, peak_normalize, resample
from lafa.metrics.batched import prefetch
from lafa.metrics.folders import audio_files
from lafa.metrics.frechet import frechet_distance, gaussian_stats

FD_MEL_LABEL = "offline log-mel Frechet distance, not FD_openl3"
SETTINGS = {"sample_rate": 44100, "n_fft": 2048, "hop_length": 1024, "n_mels": 64, "mel_scale": "slaney",
            "features": "10*log10(max(mel power, 1e-10)) per frame, mono mixdown, peak -1 dBFS"}


def min_samples(sample_rate: int) -> int:
    """The fewest samples at `sample_rate` a clip needs for fd_mel: resampled to SETTINGS' rate (ceil), it must
    outlast the STFT's centre padding of n_fft // 2 on each side (torch pads by reflection, which needs more)."""
    return SETTINGS["n_fft"] // 2 * sample_rate // SETTINGS["sample_rate"] + 1


def too_short(seconds: float) -> bool:
    """The same bound as `min_samples`, for a clip known by its length only (whatever its rate): true for a clip
    fd_mel cannot take, at most n_fft // 2 samples once resampled to SETTINGS' rate."""
    return seconds * SETTINGS["sample_rate"] <= SETTINGS["n_fft"] // 2


def _mel_transform() -> torchaudio.transforms.MelSpectrogram:
    return torchaudio.transforms.MelSpectrogram(
        sample_rate=SETTINGS["sample_rate"], n_fft=SETTINGS["n_fft"], hop_length=SETTINGS["hop_length"],
        n_mels=SETTINGS["n_mels"], norm="slaney", mel_scale="slaney", power=2.0,
    )


def log_mel_frames(audio: torch.Tensor, sample_rate: int, mel: torch.nn.Module | None = None) -> np.ndarray:
    """(channels, samples) audio -> (frames, n_mels) float64 log-mel features of its mono mixdown."""
    if audio.ndim != 2:
        raise ValueError(f"audio must be (channels, samples), got shape {tuple(audio.shape)}")
    mono = peak_normalize(audio.float().mean(dim=0, keepdim=True))
    mono = resample(mono, sample_rate, SETTINGS["sample_rate"])
    mel = _mel_transform() if mel is None else mel
    with torch.no_grad():
        spec = mel(mono)[0]  # (n_mels, frames)
    return (10.0 * torch.log10(spec.clamp_min(1e-10))).T.double().numpy()


def mel_stats(clips: Iterable[torch.Tensor], sample_rate: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Frame statistics of a set of (channels, samples) clips: (mu, sigma, number of frames)."""
    mel = _mel_transform()
    frames = [log_mel_frames(clip, sample_rate, mel) for clip in clips]
    if not frames:
        raise ValueError("fd_mel needs at least one clip per set")
    features = np.concatenate(frames, axis=0)
    mu, sigma = gaussian_stats(features)
    return mu, sigma, int(features.shape[0])


def files_mel_stats(files: dict[str, Path], workers: int = 0) -> tuple[np.ndarray, np.ndarray, int]:
    """mel_stats of audio files (each at its native rate), decoded and resampled ahead by `workers` threads,
    one clip in memory at a time."""

    def load(path: Path) -> torch.Tensor:
        audio, sr = load_audio(path)
        return resample(audio, sr, SETTINGS["sample_rate"])

    return mel_stats(prefetch(files.values(), load, workers), SETTINGS["sample_rate"])


def fd_mel_from_stats(
    generated: tuple[np.ndarray, np.ndarray, int], reference: tuple[np.ndarray, np.ndarray, int]
) -> dict:
    """The labelled fd_mel result from two (mu, sigma, n_frames) statistics."""
    value = frechet_distance(generated[0], generated[1], reference[0], reference[1])
    return {"metric": "fd_mel", "label": FD_MEL_LABEL, "value": value, "frames_generated": generated[2],
            "frames_reference": reference[2], "settings": dict(SETTINGS)}


def fd_mel(generated: Iterable[torch.Tensor] | str | Path, reference: Iterable[torch.Tensor] | str | Path,
           sample_rate: int = 44100) -> dict:
    """fd_mel between two sets of audio, each a folder or clips of (channels, samples) at `sample_rate`."""

    def stats(clips: Iterable[torch.Tensor] | str | Path) -> tuple[np.ndarray, np.ndarray, int]:
        if isinstance(clips, (str, Path)):
            return files_mel_stats(audio_files(clips))
        return mel_stats(clips, sample_rate)

    return fd_mel_from_stats(stats(generated), stats(reference))
