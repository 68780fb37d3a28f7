"""OpenL3 audio embeddings in PyTorch, for FD_openl3 as Stability's stable-audio-metrics computes it.

All six audio models of openl3 0.4.2 (input representation linear / mel128 / mel256, embedding size 512 /
6144; content type music / env is a property of the weight file) with the kapre 0.3 front ends openl3 builds,
the STFT by default TensorFlow 2.13's own, bit for bit (eigen_fft.py), and the official Keras weights loaded
by position (openl3_weights.py). The front ends, the network, the FFT: docs/metrics.md, "FD_openl3".
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lafa.metrics.eigen_fft import complex_magnitude, eigen_rfft, tensorflow_hann_window
from lafa.metrics.openl3_weights import load_keras_weights, weight_file_config
from lafa.metrics.reference_audio import (
    as_numpy,
    librosa_mono,
    load_native,
    peak_normalize,
    resampy_kaiser_best,
    soxr_hq,
)

OPENL3_SAMPLE_RATE = 48000
WINDOW = 48000  # 1 s analysis window
STFT_HOP = 242
N_FRAMES = math.ceil(WINDOW / STFT_HOP)  # 199: tf.signal.stft(pad_end=True) (mel front ends)
BN_EPS = 1e-3  # Keras BatchNormalization default
WIDTHS = (64, 64, 128, 128, 256, 256, 512, 512)
POOL_AFTER = (1, 3, 5)  # 2x2 max-pool after the second conv of blocks 1-3
INPUT_REPRS = ("linear", "mel128", "mel256")
CONTENT_TYPES = ("music", "env")
EMBEDDING_SIZES = (512, 6144)
# openl3 0.4.2 AUDIO_POOLING_SIZES: the final max-pool ('same' padding) that sets the embedding size
POOL_SIZES = {
    "linear": {6144: (8, 8), 512: (32, 24)},
    "mel128": {6144: (4, 8), 512: (16, 24)},
    "mel256": {6144: (8, 8), 512: (32, 24)},
}
CHANNEL_MODES = ("stereo", "mono")
FFT_MODES = ("reference", "exact")


def slaney_mel_filterbank(sample_rate: int = OPENL3_SAMPLE_RATE, n_fft: int = 2048, n_mels: int = 256
                          ) -> torch.Tensor:
    """(n_fft // 2 + 1, n_mels) slaney-scale, slaney-normalised triangles: librosa.filters.mel(...).T in float32.

    kapre 0.3's filterbank_mel is this very call (librosa's float32 weights, bit for bit; torchaudio's
    melscale_fbanks differs in the last bits of ~1% of them).
    """
    import librosa

    fb = librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels, htk=False, norm="slaney")
    return torch.from_numpy(np.ascontiguousarray(fb.T, dtype=np.float32))


def magnitude_to_db(x: torch.Tensor) -> torch.Tensor:
    """openl3's kapre_v0_1_4_magnitude_to_decibel: 10 log10(max(x, 1e-10)) - per-window max, floored at -80."""
    db = 10.0 * torch.log10(x.clamp_min(1e-10))
    return (db - db.amax(dim=(1, 2), keepdim=True)).clamp_min(-80.0)


class SpectrogramFrontEnd(nn.Module):
    """(B, 48000) windows at 48 kHz -> (B, 1, bins, frames) dB spectrograms (kapre 0.3 as openl3 0.4.2 uses it).

    mel128 / mel256: n_fft 2048, pad_end (199 frames), slaney mel; linear: n_fft 512, no padding (197 frames).
    fft: "reference" (default), TensorFlow 2.13's CPU STFT bit for bit (eigen_fft.py), as the reference code
    computes it; "exact", torch.hann_window and torch.fft.rfft, not comparable with the reference's numbers at
    44.1 kHz (docs/metrics.md, "The STFT").
    """

    def __init__(self, input_repr: str = "mel256", fft: str = "reference") -> None:
        super().__init__()
        if input_repr not in INPUT_REPRS:
            raise ValueError(f"input_repr must be one of {INPUT_REPRS}, got {input_repr!r}")
        if fft not in FFT_MODES:
            raise ValueError(f"fft must be one of {FFT_MODES}, got {fft!r}")
        self.input_repr, self.fft = input_repr, fft
        self.n_fft = 512 if input_repr == "linear" else 2048
        window = tensorflow_hann_window(self.n_fft) if fft == "reference" else torch.hann_window(self.n_fft)
        self.register_buffer("window", window, persistent=False)  # periodic Hann
        fb = None if input_repr == "linear" else slaney_mel_filterbank(n_mels=int(input_repr[3:]))
        self.register_buffer("filterbank", fb, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.filterbank is not None:  # pad_end: zeros after the window so every hop gets a frame
            x = F.pad(x, (0, (N_FRAMES - 1) * STFT_HOP + self.n_fft - x.shape[-1]))
        frames = x.unfold(-1, self.n_fft, STFT_HOP) * self.window  # (B, frames, n_fft)
        if self.fft == "reference":  # TensorFlow 2.13's CPU FFT, bit for bit (eigen_fft.py)
            spec = complex_magnitude(*eigen_rfft(frames))  # (B, frames, n_fft // 2 + 1)
        else:
            spec = torch.fft.rfft(frames).abs()
        if self.filterbank is not None:
            spec = spec @ self.filterbank  # (B, 199, n_mels)
        return magnitude_to_db(spec).transpose(1, 2).unsqueeze(1)  # (B, 1, bins, frames)


def _max_pool_same(x: torch.Tensor, pool: tuple[int, int]) -> torch.Tensor:
    """Keras MaxPooling2D(pool_size=pool, padding='same'): stride = pool, -inf padding split as TF does."""
    pads = []
    for size, k in zip(reversed(x.shape[-2:]), reversed(pool), strict=True):
        total = max((math.ceil(size / k) - 1) * k + k - size, 0)
        pads += [total // 2, total - total // 2]
    return F.max_pool2d(F.pad(x, pads, value=float("-inf")), pool)


def _conv3x3_inference(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, relu: bool, packed: dict
                       ) -> torch.Tensor:
    """3x3 'same' conv (+ ReLU) at inference. On CPU float32: oneDNN's conv with the ReLU as its post-op and
    the weight packed once per input shape (equal to conv2d then relu within 1e-6); elsewhere, or if that op
    is unavailable (warned once), conv2d then relu."""
    if x.device.type == "cpu" and x.dtype == torch.float32 and not _ONEDNN_FAILED:
        try:
            key = (weight.data_ptr(), tuple(x.shape))
            if key not in packed:
                if len(packed) >= 64:  # a long run of odd batch sizes: start over rather than grow
                    packed.clear()
                packed[key] = torch.ops.mkldnn._reorder_convolution_weight(weight, [1, 1], [1, 1], [1, 1], 1,
                                                                           list(x.shape))
            attr = "relu" if relu else "none"
            return torch.ops.mkldnn._convolution_pointwise(x, packed[key], bias, [1, 1], [1, 1], [1, 1], 1,
                                                           attr, [], "")
        except (AttributeError, RuntimeError) as e:  # op missing in this torch build, or oneDNN refused
            _ONEDNN_FAILED.append(f"{type(e).__name__}: {e}")
            warnings.warn(f"OpenL3: oneDNN's fused conv unavailable ({_ONEDNN_FAILED[0]}); using conv2d then "
                          "relu", stacklevel=3)
    x = F.conv2d(x, weight, bias, padding=1)
    return F.relu(x) if relu else x


_ONEDNN_FAILED: list[str] = []  # why the fused conv was given up, once per process


class OpenL3Audio(nn.Module):
    """openl3 0.4.2 `_construct_<repr>_audio_network` + its embedding max-pool; (B, 48000) -> (B, size)."""

    def __init__(self, input_repr: str = "mel256", embedding_size: int = 512, fft: str = "reference") -> None:
        super().__init__()
        if embedding_size not in EMBEDDING_SIZES:
            raise ValueError(f"embedding_size must be one of {EMBEDDING_SIZES}, got {embedding_size}")
        self.input_repr, self.embedding_size = input_repr, embedding_size
        self.frontend = SpectrogramFrontEnd(input_repr, fft)
        self.input_norm = nn.BatchNorm2d(1, eps=BN_EPS)
        in_widths = (1, *WIDTHS[:-1])
        self.convs = nn.ModuleList(
            nn.Conv2d(i, o, 3, padding=1) for i, o in zip(in_widths, WIDTHS, strict=True)
        )
        self.norms = nn.ModuleList(nn.BatchNorm2d(w, eps=BN_EPS) for w in WIDTHS[:-1])  # none after the last
        for conv in self.convs:  # Keras he_normal kernels, zero biases (only matters for random-weight runs)
            nn.init.kaiming_normal_(conv.weight, nonlinearity="relu")
            nn.init.zeros_(conv.bias)

    def weighted_layers(self) -> list[nn.Module]:
        """The 16 layers with weights in Keras order: [BN, Conv] x 8 (input BN, then each conv's predecessor BN)."""
        return [m for pair in zip([self.input_norm, *self.norms], self.convs, strict=True) for m in pair]

    def folded_convs(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(weight, bias) of each conv with the BatchNorm after it folded in (eval): w g / sqrt(var + eps), ...
        Recomputed when a parameter or buffer changes (docs/benchmarks.md, "Evaluation throughput")."""
        key = tuple((t.data_ptr(), t._version) for t in (*self.parameters(), *self.buffers()))
        if getattr(self, "_folded_key", None) != key:
            folded = []
            for conv, norm in zip(self.convs, self.norms, strict=False):
                scale = (norm.weight / torch.sqrt(norm.running_var + norm.eps)).detach()
                weight = conv.weight.detach() * scale[:, None, None, None]
                folded.append((weight, ((conv.bias - norm.running_mean) * scale + norm.bias).detach()))
            last = self.convs[-1]  # the audio_embedding_layer: no BatchNorm after it
            folded.append((last.weight.detach(), last.bias.detach()))
            self._folded, self._folded_key, self._packed = folded, key, {}
        return self._folded

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        x = self.input_norm(self.frontend(windows))  # (B, 1, bins, frames)
        # inference (eval, no autograd): the BatchNorms folded into the convs; otherwise conv, BatchNorm
        folded = None if self.training or torch.is_grad_enabled() else self.folded_convs()
        for i, conv in enumerate(self.convs):
            relu = i < len(self.norms)
            if folded is not None:
                x = _conv3x3_inference(x, *folded[i], relu, self._packed)
            else:
                x = conv(x) if i == len(self.norms) else F.relu(self.norms[i](conv(x)))
            if i in POOL_AFTER:
                x = F.max_pool2d(x, 2)  # mel256: 256x199 -> 128x99 -> 64x49 -> 32x24 (mel128: 16x24)
        # x: (B, 512, 32 | 16, 24), the audio_embedding_layer's output
        x = _max_pool_same(x, POOL_SIZES[self.input_repr][self.embedding_size])  # (B, 512, h, w)
        return x.permute(0, 2, 3, 1).flatten(1)  # Keras Flatten of (h, w, 512) -> (B, 512 h w)


def window_flops(input_repr: str = "mel256") -> dict[str, int]:
    """Floating-point operations of one 1 s window through OpenL3Audio, a closed form of the layer shapes.

    conv: 2 x 9 c_in c_out h w per 3x3 conv (bias, BatchNorm, ReLU and pools not counted, as
    torch.utils.flop_counter does not); mel: the filterbank matmul; fft: the Eigen FFT's real operations (78
    per 8-point butterfly, 16 per merge butterfly; elementwise, not in the matmul total). Any embedding size.
    """
    n_fft = 512 if input_repr == "linear" else 2048
    # 197 frames (linear: no padding) or 199 (mel: pad_end)
    frames = 1 + (WINDOW - n_fft) // STFT_HOP if input_repr == "linear" else N_FRAMES
    h, w = n_fft // 2 + 1 if input_repr == "linear" else int(input_repr[3:]), frames
    conv = 0
    for i, (c_in, c_out) in enumerate(zip((1, *WIDTHS[:-1]), WIDTHS, strict=True)):
        conv += 2 * 9 * c_in * c_out * h * w
        if i in POOL_AFTER:
            h, w = h // 2, w // 2
    mel = 0 if input_repr == "linear" else 2 * frames * (n_fft // 2 + 1) * int(input_repr[3:])
    merges = n_fft.bit_length() - 1 - 3  # log2(n) - 3 merge stages of n / 2 butterflies
    fft = frames * (78 * n_fft // 8 + 16 * (n_fft // 2) * merges)
    return {"conv": conv, "mel": mel, "matmul": conv + mel, "fft_elementwise": fft}


def num_windows(num_samples_48k: int, hop: int = WINDOW // 2) -> int:
    """Windows openl3 0.4.2 cuts from a clip (center=True: half a window of zeros first, zero-padded end)."""
    length = num_samples_48k + WINDOW // 2
    return 1 if length <= WINDOW else 1 + math.ceil((length - WINDOW) / hop)


def frame_windows(audio_48k: torch.Tensor, hop: int = WINDOW // 2) -> torch.Tensor:
    """(S,) mono at 48 kHz -> (num_windows, 48000), as openl3's _preprocess_audio_batch frames it."""
    n = num_windows(audio_48k.shape[-1], hop)
    total = (n - 1) * hop + WINDOW
    padded = F.pad(audio_48k, (WINDOW // 2, total - WINDOW // 2 - audio_48k.shape[-1]))
    return padded.unfold(-1, WINDOW, hop)


class OpenL3Embedder:
    """Stability's FD_openl3 embedding of a clip: (channels, S) audio -> (frames, 2 x embedding size) [L | R].

    channel_mode, which of stable-audio-metrics' two OpenL3 paths (docs/metrics.md): "stereo" (the default,
    `extract_embeddings`, behind its published statistics), one peak gain for both channels, each embedded
    separately (a mono file for both sides); "mono" (`extract_embeddings_nobatching`), down-mixed first, the
    mono embedding used as both L and R. Resampling: soxr HQ to eval_sample_rate, then resampy kaiser_best to
    48 kHz.
    """

    def __init__(self, model: OpenL3Audio, eval_sample_rate: int = 44100, hop_seconds: float = 0.5,
                 batch_size: int = 16, channel_mode: str = "stereo"):
        if channel_mode not in CHANNEL_MODES:
            raise ValueError(f"channel_mode must be one of {CHANNEL_MODES}, got {channel_mode!r}")
        self.model = model.eval()
        self.eval_sample_rate = eval_sample_rate
        self.hop = int(hop_seconds * OPENL3_SAMPLE_RATE)
        self.batch_size = batch_size
        self.channel_mode = channel_mode

    def channel_windows(self, mono: np.ndarray) -> torch.Tensor:
        """(S,) float32 at the evaluation rate -> (windows, 48000) at 48 kHz (resampy kaiser_best, framing)."""
        at48 = resampy_kaiser_best(mono, self.eval_sample_rate, OPENL3_SAMPLE_RATE)
        return frame_windows(torch.from_numpy(np.ascontiguousarray(at48, dtype=np.float32)), self.hop)

    @torch.no_grad()
    def embed_windows(self, windows: torch.Tensor) -> torch.Tensor:
        """(N, 48000) -> (N, embedding size) in batches of batch_size."""
        device = next(self.model.parameters()).device
        return torch.cat([self.model(w.to(device)).float().cpu() for w in windows.split(self.batch_size)])

    def clip_channels(self, audio: torch.Tensor | np.ndarray, sample_rate: int) -> list[np.ndarray]:
        """The per-channel (S,) signals at the evaluation rate that this path embeds (one for mono)."""
        audio = as_numpy(audio)
        if self.channel_mode == "mono" or audio.ndim == 1 or audio.shape[0] == 1:
            audio = peak_normalize(librosa_mono(audio))[None]
        else:
            audio = peak_normalize(audio)
        return list(soxr_hq(audio, sample_rate, self.eval_sample_rate)[:2])

    def embed(self, audio: torch.Tensor | np.ndarray, sample_rate: int) -> torch.Tensor:
        """(channels, S) at any rate -> (frames, 2 x size): the two sides concatenated per frame."""
        sides = [self.embed_windows(self.channel_windows(c)) for c in self.clip_channels(audio, sample_rate)]
        return torch.cat(sides * 2 if len(sides) == 1 else sides, dim=1)

    def embed_file(self, path_or_clip) -> torch.Tensor:
        """A file path or an (audio, sample rate) pair -> (frames, 2 x size)."""
        return self.embed(*load_native(path_or_clip))


def build_openl3(weights: str | Path | None, seed: int = 0, input_repr: str = "mel256",
                 content_type: str = "music", embedding_size: int = 512, fft: str = "reference"
                 ) -> OpenL3Audio:
    """The network with a weight file's weights, or seeded random weights when `weights` is None.

    A file must hold the model asked for (input_repr, content_type, read by weight_file_config), else
    ValueError: the representations share tensor shapes, so a wrong file would load and give wrong embeddings.
    fft: "reference" (TensorFlow 2.13's STFT, bit for bit) or "exact" (torch's), see SpectrogramFrontEnd.
    """
    if input_repr not in INPUT_REPRS or content_type not in CONTENT_TYPES:
        raise ValueError(f"OpenL3 model {input_repr}/{content_type}: input_repr must be one of "
                         f"{INPUT_REPRS}, content_type one of {CONTENT_TYPES}")
    if weights is None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return OpenL3Audio(input_repr, embedding_size, fft).eval()
    file_repr, file_content = weight_file_config(weights)
    if (file_repr, file_content) != (input_repr, content_type):
        raise ValueError(f"{Path(weights).name} holds the OpenL3 {file_repr}/{file_content} model; "
                         f"{input_repr}/{content_type} was asked for")
    model = OpenL3Audio(input_repr, embedding_size, fft)
    load_keras_weights(model, weights)
    return model.eval()
