"""The audio steps of Stability-AI's stable-audio-metrics, reproduced with the same libraries and dtypes.

Every paper metric resamples with the library the reference uses, not with lafa's own torchaudio resampler
(lafa.audio.resample): the resamplers differ by far more than the metrics' tolerance (docs/metrics.md,
"Parity"). In the reference:
- FD_openl3 loads at the native rate and resamples to the evaluation rate with `soxr.resample` (quality HQ);
  openl3 0.4.2 then resamples to 48 kHz with resampy 0.2.2's `resample(filter="kaiser_best")` (rebuilt below:
  newer resampy releases changed that filter);
- KL_PaSST (32 kHz) and CLAP (48 kHz) load with `librosa.load(sr=...)`, i.e. librosa's default `soxr_hq`,
  whose output length is `ceil(n * float(target) / orig)`: one sample longer than the exact product when
  the float ratio rounds up (5.000 s at 44.1 kHz -> 240001 samples at 48 kHz), which changes CLAP's
  repeat-padding, so the length is librosa's too;
- peak normalisation is pyloudnorm's `normalize.peak(x, -1.0)`: one gain, computed in float64, applied to
  the float32 samples of all channels.
Arrays here are numpy float32, (samples,) or (channels, samples) as librosa returns them.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from lafa.audio import load_audio


def as_numpy(audio: torch.Tensor | np.ndarray) -> np.ndarray:
    """(channels, S) float32 numpy from a torch tensor or an array (librosa.load's layout)."""
    if isinstance(audio, torch.Tensor):
        audio = audio.detach().cpu().numpy()
    return np.ascontiguousarray(audio, dtype=np.float32)


def librosa_mono(audio: np.ndarray) -> np.ndarray:
    """(channels, S) -> (S,): librosa.to_mono, the mean over channels in float32."""
    return audio[0] if audio.ndim == 2 and audio.shape[0] == 1 else np.mean(audio, axis=0)


def peak_normalize(audio: np.ndarray, target_dbfs: float = -1.0) -> np.ndarray:
    """pyloudnorm.normalize.peak: gain 10^(target/20) / max|x| (float64), applied in float32.

    Silence raises: the reference divides by a zero peak and scores NaN; lafa names the problem instead.
    """
    peak = np.max(np.abs(audio))
    if not peak > 0:
        raise ValueError("the clip is silent (peak 0): peak normalisation is undefined, as in the reference")
    gain = np.power(10.0, target_dbfs / 20.0) / peak
    return (audio * np.float32(gain)).astype(np.float32)  # numpy 1.x value-based casting: float32 product


def soxr_hq(audio: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """soxr.resample(x, orig, target) (quality "HQ") along the sample axis of (S,) or (channels, S)."""
    import soxr

    if orig_sr == target_sr:
        return audio
    if audio.ndim == 1:
        return soxr.resample(audio, orig_sr, target_sr)
    return np.ascontiguousarray(soxr.resample(np.ascontiguousarray(audio.T), orig_sr, target_sr).T)


def librosa_soxr_hq(audio: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """librosa.resample(res_type="soxr_hq"), what librosa.load(sr=target) does, with librosa's length rule."""
    import librosa

    return librosa.resample(audio, orig_sr=orig_sr, target_sr=target_sr, res_type="soxr_hq")


# resampy 0.2.2's kaiser_best, the filter openl3 0.4.2 resampled with (stable-audio-metrics pins resampy 0.2.2):
# a Kaiser-windowed sinc with 64 zero crossings, 2^9 table steps per crossing, beta 14.769656459379492, rolloff
# 0.9475937167399596. resampy >= 0.3 ships a different "kaiser_best" (50 crossings, rolloff 0.917), whose output
# differs by ~5% of the peak on broadband audio; lafa rebuilds the 0.2.2 table with resampy's own sinc_window
# (equal to the 0.2.2 file to 2e-16).
RESAMPY_022_KAISER_BEST = {
    "num_zeros": 64,
    "precision": 9,
    "beta": 14.769656459379492,
    "rolloff": 0.9475937167399596,
}


def resampy_kaiser_best(audio: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """resampy 0.2.2's resample(x, orig, target, filter="kaiser_best") of (S,): openl3 0.4.2's step to 48 kHz.

    Output length int(n * (target / orig)) as 0.2.2 computes it (newer resampy rounds differently, #111);
    zeros appended to the input only feed filter taps that multiply zeros, so they change no sample.
    """
    import resampy
    import scipy.signal

    if orig_sr == target_sr:
        return audio
    p = RESAMPY_022_KAISER_BEST
    length = int(audio.shape[-1] * (float(target_sr) / orig_sr))
    padded = np.concatenate([audio, np.zeros(8, audio.dtype)])
    window = functools.partial(scipy.signal.windows.kaiser, beta=p["beta"])
    out = resampy.resample(
        padded, orig_sr, target_sr, filter="sinc_window", num_zeros=p["num_zeros"],
        precision=p["precision"], window=window, rolloff=p["rolloff"],
    )  # fmt: skip
    return out[:length]


def load_native(path_or_clip) -> tuple[np.ndarray, int]:
    """A file path or an (audio, sample rate) pair -> ((channels, S) float32, sample rate), as librosa.load(sr=None)."""
    if isinstance(path_or_clip, tuple):
        audio, sr = path_or_clip
    else:
        audio, sr = load_audio(path_or_clip)
    return as_numpy(audio), int(sr)


def load_mono_at(path_or_clip, target_sr: int) -> np.ndarray:
    """librosa.load(path, sr=target_sr, mono=True): down-mix, then soxr_hq with librosa's length."""
    audio, sr = load_native(path_or_clip)
    return librosa_soxr_hq(librosa_mono(audio), sr, target_sr)
