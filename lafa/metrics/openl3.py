"""OpenL3 audio embeddings (mel256, 512-d) in PyTorch, for FD_openl3 as Stability's stable-audio-metrics computes it.

The front end reproduces openl3 0.4.2 with kapre 0.3: 1 s windows at 48 kHz, STFT n_fft 2048 / hop 242 with a
periodic Hann window and padding at the end only (199 frames), magnitude through a slaney mel filterbank
(librosa.filters.mel(sr=48000, n_fft=2048, n_mels=256)), 10 log10(max(x, 1e-10)) minus the window's maximum,
floored at -80 dB. The network (BatchNorm first, four conv blocks, max-pool over the last 32 x 24 map) loads the
official Keras `openl3_audio_mel256_{music,env}-v0_4_0.h5` weights by position, as Keras' load_weights does.
"""

from __future__ import annotations

import math
from pathlib import Path

import h5py
import numpy as np
import torch
import torch.nn.functional as F
import torchaudio.functional as AF
from torch import nn

from lafa.audio import peak_normalize, resample, to_channels

OPENL3_SAMPLE_RATE = 48000
WINDOW = 48000  # 1 s analysis window
N_FFT, STFT_HOP, N_MELS = 2048, 242, 256
N_FRAMES = math.ceil(WINDOW / STFT_HOP)  # 199: tf.signal.stft(pad_end=True)
BN_EPS = 1e-3  # Keras BatchNormalization default
WIDTHS = (64, 64, 128, 128, 256, 256, 512, 512)
POOL_AFTER = (1, 3, 5)  # 2x2 max-pool after the second conv of blocks 1-3


def slaney_mel_filterbank(
    sample_rate: int = OPENL3_SAMPLE_RATE, n_fft: int = N_FFT, n_mels: int = N_MELS
) -> torch.Tensor:
    """(n_fft // 2 + 1, n_mels) slaney-scale, slaney-normalised triangles: librosa.filters.mel(...).T."""
    return AF.melscale_fbanks(
        n_fft // 2 + 1, 0.0, sample_rate / 2, n_mels, sample_rate, norm="slaney", mel_scale="slaney"
    )


class Mel256FrontEnd(nn.Module):
    """(B, 48000) windows at 48 kHz -> (B, 1, 256, 199) dB mel spectrograms (kapre 0.3 as openl3 0.4.2 uses it)."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("window", torch.hann_window(N_FFT, periodic=True), persistent=False)
        self.register_buffer("filterbank", slaney_mel_filterbank(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        padded = (
            N_FRAMES - 1
        ) * STFT_HOP + N_FFT  # pad_end: zeros after the window so every hop gets a frame
        x = F.pad(x, (0, padded - x.shape[-1]))
        frames = x.unfold(-1, N_FFT, STFT_HOP)  # (B, 199, 2048)
        magnitude = torch.fft.rfft(frames * self.window).abs()  # (B, 199, 1025)
        mel = magnitude @ self.filterbank  # (B, 199, 256)
        db = 10.0 * torch.log10(mel.clamp_min(1e-10))
        db = (db - db.amax(dim=(1, 2), keepdim=True)).clamp_min(-80.0)
        return db.transpose(1, 2).unsqueeze(1)  # (B, 1, 256 mels, 199 frames)


class OpenL3Audio(nn.Module):
    """openl3 0.4.2 `_construct_mel256_audio_network` + the 512-d max-pool; (B, 48000) -> (B, 512)."""

    def __init__(self) -> None:
        super().__init__()
        self.frontend = Mel256FrontEnd()
        self.input_norm = nn.BatchNorm2d(1, eps=BN_EPS)
        in_widths = (1, *WIDTHS[:-1])
        self.convs = nn.ModuleList(
            nn.Conv2d(i, o, 3, padding=1) for i, o in zip(in_widths, WIDTHS, strict=True)
        )
        self.norms = nn.ModuleList(
            nn.BatchNorm2d(w, eps=BN_EPS) for w in WIDTHS[:-1]
        )  # none after the last conv
        for conv in self.convs:  # Keras he_normal kernels, zero biases (only matters for random-weight runs)
            nn.init.kaiming_normal_(conv.weight, nonlinearity="relu")
            nn.init.zeros_(conv.bias)

    def weighted_layers(self) -> list[nn.Module]:
        """The 16 layers with weights in Keras order: [BN, Conv] x 8 (input BN, then each conv's predecessor BN)."""
        return [m for pair in zip([self.input_norm, *self.norms], self.convs, strict=True) for m in pair]

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        x = self.input_norm(self.frontend(windows))  # (B, 1, 256, 199)
        for i, (conv, norm) in enumerate(zip(self.convs[:-1], self.norms, strict=True)):
            x = F.relu(norm(conv(x)))
            if i in POOL_AFTER:
                x = F.max_pool2d(x, 2)  # 256x199 -> 128x99 -> 64x49 -> 32x24
        x = self.convs[-1](x)  # (B, 512, 32, 24): the audio_embedding_layer
        return x.amax(dim=(2, 3))  # MaxPooling2D((32, 24)) + Flatten -> (B, 512)


def _keras_layers(path: str | Path) -> list[tuple[str, dict[str, np.ndarray]]]:
    """(layer name, {weight kind: array}) of every layer with weights, in the file's layer order."""
    with h5py.File(path, "r") as f:
        group = (
            f["model_weights"] if "model_weights" in f else f
        )  # save_weights file or a full model.save file
        if "layer_names" not in group.attrs:
            raise ValueError(f"{path} is not a Keras HDF5 weight file (no 'layer_names' attribute)")
        layers = []
        for raw in group.attrs["layer_names"]:
            name = raw.decode() if isinstance(raw, bytes) else str(raw)
            weight_names = [
                w.decode() if isinstance(w, bytes) else str(w) for w in group[name].attrs["weight_names"]
            ]
            if weight_names:  # kind = "kernel" from "conv2d_1/kernel:0"
                layers.append(
                    (name, {w.split("/")[-1].split(":")[0]: np.array(group[name][w]) for w in weight_names})
                )
        return layers


def _copy(target: torch.Tensor, value: np.ndarray, where: str) -> None:
    if tuple(value.shape) != tuple(target.shape):
        raise ValueError(f"{where}: shape {tuple(value.shape)} does not fit {tuple(target.shape)}")
    with torch.no_grad():
        target.copy_(torch.from_numpy(np.ascontiguousarray(value)).to(target.dtype))


def load_keras_weights(model: OpenL3Audio, path: str | Path) -> None:
    """Copy an official `openl3_audio_mel256_*-v0_4_0.h5` file into `model` by layer position ([BN, Conv] x 8)."""
    layers = _keras_layers(path)
    modules = model.weighted_layers()
    if len(layers) != len(modules):
        raise ValueError(
            f"{path} holds {len(layers)} layers with weights; the mel256 network has {len(modules)}"
        )
    for (name, weights), module in zip(layers, modules, strict=True):
        where = f"{path}:{name}"
        if isinstance(module, nn.BatchNorm2d):
            if set(weights) != {"gamma", "beta", "moving_mean", "moving_variance"}:
                raise ValueError(f"{where}: expected BatchNormalization weights, found {sorted(weights)}")
            _copy(module.weight, weights["gamma"], where)
            _copy(module.bias, weights["beta"], where)
            _copy(module.running_mean, weights["moving_mean"], where)
            _copy(module.running_var, weights["moving_variance"], where)
        else:
            if set(weights) != {"kernel", "bias"}:
                raise ValueError(f"{where}: expected Conv2D weights, found {sorted(weights)}")
            _copy(
                module.weight, weights["kernel"].transpose(3, 2, 0, 1), where
            )  # (kh, kw, in, out) -> (out, in, kh, kw)
            _copy(module.bias, weights["bias"], where)


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
    """Stability's FD_openl3 embedding of a clip: (channels, S) audio -> (frames, 1024) [left | right]."""

    def __init__(
        self,
        model: OpenL3Audio,
        eval_sample_rate: int = 44100,
        hop_seconds: float = 0.5,
        batch_size: int = 16,
    ):
        self.model = model.eval()
        self.eval_sample_rate = eval_sample_rate
        self.hop = int(hop_seconds * OPENL3_SAMPLE_RATE)
        self.batch_size = batch_size

    @torch.no_grad()
    def embed_channel(self, mono: torch.Tensor) -> torch.Tensor:
        """(S,) mono at the evaluation rate -> (frames, 512)."""
        device = next(self.model.parameters()).device
        n_out = int(mono.shape[-1] * OPENL3_SAMPLE_RATE / self.eval_sample_rate)  # resampy's output length
        at48 = resample(mono[None].float(), self.eval_sample_rate, OPENL3_SAMPLE_RATE)[0, :n_out]
        windows = frame_windows(at48, self.hop)
        out = [
            self.model(windows[i : i + self.batch_size].to(device)).cpu()
            for i in range(0, len(windows), self.batch_size)
        ]
        return torch.cat(out)

    def embed(self, audio: torch.Tensor, sample_rate: int) -> torch.Tensor:
        """(channels, S) at any rate -> (frames, 1024): peak -1 dBFS, resample, L and R embedded separately."""
        audio = resample(peak_normalize(audio.float()), sample_rate, self.eval_sample_rate)
        stereo = to_channels(audio, 2)  # a mono file is used for both sides
        return torch.cat([self.embed_channel(stereo[0]), self.embed_channel(stereo[1])], dim=1)


def build_openl3(weights: str | Path | None, seed: int = 0) -> OpenL3Audio:
    """The network with official weights, or with seeded random weights when `weights` is None."""
    if weights is None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return OpenL3Audio().eval()
    model = OpenL3Audio()
    load_keras_weights(model, weights)
    return model.eval()
