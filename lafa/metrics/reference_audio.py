"""The audio steps of Stability-AI's stable-audio-metrics, reproduced with the same libraries and dtypes.

Every paper metric resamples with the library the reference uses, not with lafa's own resampler
(lafa.audio.resample): they differ by far more than the metrics' tolerance (docs/metrics.md, "Parity").
FD_openl3: `soxr.resample` (HQ) to the evaluation rate, then resampy 0.2.2's kaiser_best to 48 kHz (rebuilt
below, bit for bit); KL_PaSST and CLAP: `librosa.load(sr=...)`, i.e. soxr_hq with librosa's output length;
peak normalisation: pyloudnorm's. Arrays are numpy float32, (samples,) or (channels, samples) as librosa
returns them.
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
    """(channels, S) or (S,) -> (S,): librosa.to_mono, the mean over channels in float32."""
    if audio.ndim == 1:
        return audio
    return audio[0] if audio.shape[0] == 1 else np.mean(audio, axis=0)


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


# resampy 0.2.2's kaiser_best, the filter openl3 0.4.2 resampled with (resampy >= 0.3 ships another one),
# rebuilt with resampy's own sinc_window (docs/metrics.md, "FD_openl3")
RESAMPY_022_KAISER_BEST = {"num_zeros": 64, "precision": 9, "beta": 14.769656459379492,
                           "rolloff": 0.9475937167399596}


@functools.cache
def _resampy_022_table() -> np.ndarray:
    """resampy 0.2.2's kaiser_best interpolation table (float64, 64 x 2^9 + 1 taps), rebuilt with resampy."""
    import resampy.filters
    import scipy.signal

    p = RESAMPY_022_KAISER_BEST
    window = functools.partial(scipy.signal.windows.kaiser, beta=p["beta"])
    table, _, _ = resampy.filters.get_filter(
        "sinc_window", num_zeros=p["num_zeros"], precision=p["precision"], window=window, rolloff=p["rolloff"]
    )
    return table


@functools.cache
def _resampy_022_kernel():
    """resampy 0.2.2's interpolation loop (interpn.resample_f), compiled with numba on first use: a float64
    time register advanced by 1 / ratio per output sample (resampy >= 0.3 moves the last bit of ~half of
    the samples), the two wings tap by tap, each product added to the float32 output sample."""
    import numba

    @numba.jit(nopython=True, nogil=True, cache=False)
    def resample_f(x, y, sample_ratio, interp_win, interp_delta, num_table):  # (S,), (S_out,) float32
        scale = min(1.0, sample_ratio)
        time_increment = 1.0 / sample_ratio
        index_step = int(scale * num_table)
        time_register = 0.0
        nwin = interp_win.shape[0]
        n_orig = x.shape[0]
        for t in range(y.shape[0]):
            n = int(time_register)
            frac = scale * (time_register - n)  # left wing
            index_frac = frac * num_table
            offset = int(index_frac)
            eta = index_frac - offset
            for i in range(min(n + 1, (nwin - offset) // index_step)):
                weight = interp_win[offset + i * index_step] + eta * interp_delta[offset + i * index_step]
                y[t] += weight * x[n - i]
            frac = scale - frac  # right wing
            index_frac = frac * num_table
            offset = int(index_frac)
            eta = index_frac - offset
            for k in range(min(n_orig - n - 1, (nwin - offset) // index_step)):
                weight = interp_win[offset + k * index_step] + eta * interp_delta[offset + k * index_step]
                y[t] += weight * x[n + k + 1]
            time_register += time_increment

    return resample_f


def resampy_kaiser_best(audio: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """resampy 0.2.2's resample(x, orig, target, filter="kaiser_best") of (S,) float32: openl3 0.4.2's step to 48 kHz.

    The same samples, bit for bit (tests/metrics/test_parity.py): 0.2.2's table, loop, output length
    int(n * (target / orig)) (newer resampy rounds differently, #111) and output dtype (the input's).
    """
    if orig_sr == target_sr:
        return audio
    audio = np.ascontiguousarray(audio)
    ratio = float(target_sr) / orig_sr
    out = np.zeros(int(audio.shape[-1] * ratio), dtype=audio.dtype)
    table = _resampy_022_table()
    if ratio < 1:
        table = table * ratio
    delta = np.zeros_like(table)
    delta[:-1] = np.diff(table)
    _resampy_022_kernel()(audio, out, ratio, table, delta, 2 ** RESAMPY_022_KAISER_BEST["precision"])
    return out


def load_native(path_or_clip) -> tuple[np.ndarray, int]:
    """A file path or an (audio, sample rate) pair -> ((channels, S) float32, sample rate), as librosa.load(sr=None)."""
    if isinstance(path_or_clip, tuple):
        audio, sr = path_or_clip
    else:
        audio, sr = load_audio(path_or_clip)
    return as_numpy(audio), int(sr)
