"""KL_PaSST as Stability's stable-audio-metrics computes it, with hear21passt's PaSST from a local checkpoint.

Per clip: mono, 32 kHz (librosa's soxr_hq), peak -1 dBFS; 10 s windows at a 5 s step, logits averaged over
windows, softmax over the 527 AudioSet classes; KL(P_gen || P_ref) averaged over the ids in both sets, and
audiocraft's direction beside it (docs/metrics.md, "KL_PaSST").
"""

from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lafa.metrics.reference_audio import as_numpy, librosa_mono, librosa_soxr_hq, peak_normalize

PASST_SAMPLE_RATE = 32000
WINDOW = 10 * PASST_SAMPLE_RATE
STEP = 5 * PASST_SAMPLE_RATE  # 10 s windows, 5 s overlap
MIN_PADDED = int(0.15 * WINDOW)  # shorter last windows are not padded (audiocraft / Stability)
KL_EPS = 1e-6
ARCH = "passt_s_swa_p16_128_ap476"
NUM_CLASSES = 527


# passt_s_swa_p16_128_ap476's shapes (hear21passt): ViT-B, 16x16 patches at stride 10 over 128 mels, hop 320
WIDTH, DEPTH, PATCH, PATCH_STRIDE, N_MELS, N_FFT, HOP = 768, 12, 16, 10, 128, 1024, 320


def window_flops(num_samples: int = WINDOW) -> dict[str, int]:
    """Floating-point operations of one window of `num_samples` at 32 kHz through PaSST, a closed form.

    N tokens (patches + class + distillation): per block 24 N d^2 (qkv, projection, 4d MLP) + 4 N^2 d (scores,
    weighted sum); the patch embedding, pre-emphasis conv, mel matmul and head. The STFT's FFT is not included
    (0.02% of the total).
    """
    frames = num_samples // HOP
    patches = ((N_MELS - PATCH) // PATCH_STRIDE + 1) * ((frames - PATCH) // PATCH_STRIDE + 1)
    tokens = patches + 2
    blocks = DEPTH * (24 * tokens * WIDTH**2 + 4 * tokens**2 * WIDTH)
    front = 4 * (num_samples - 1) + 2 * (N_FFT // 2 + 1) * N_MELS * frames + 2 * WIDTH * PATCH**2 * patches
    return {"blocks": blocks, "front_end_and_head": front + 2 * WIDTH * NUM_CLASSES, "tokens": tokens,
            "matmul": blocks + front + 2 * WIDTH * NUM_CLASSES}  # fmt: skip


def window_starts(num_samples: int, step: int = STEP) -> list[int]:
    """Start samples of the analysis windows of a clip, exactly Stability's loop."""
    return list(range(0, max(step, num_samples - step), step))


def cut_windows(audio: np.ndarray) -> list[torch.Tensor]:
    """(S,) float32 mono at 32 kHz -> the float32 windows PaSST sees (10 s, or a short last one <= 1.5 s)."""
    windows = []
    for start in window_starts(audio.shape[-1]):
        w = audio[start : start + WINDOW]
        if MIN_PADDED < w.shape[-1] < WINDOW:
            w = np.concatenate([w, np.zeros(WINDOW - w.shape[-1], w.dtype)])
        windows.append(torch.from_numpy(np.ascontiguousarray(w, dtype=np.float32)))
    return windows


@contextlib.contextmanager
def _quiet():
    """hear21passt prints shapes on every call and torch warns about its old stft call."""
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def load_passt_checkpoint(net: nn.Module, weights: str | Path) -> None:
    """Load a local PaSST checkpoint (plain state_dict) through hear21passt's checkpoint filter, strictly."""
    from hear21passt.models.passt import checkpoint_filter_fn

    state = torch.load(weights, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(f"{weights} is not a PaSST state dict (top level is {type(state).__name__})")
    try:
        with _quiet():
            net.load_state_dict(checkpoint_filter_fn(state, net), strict=True)
    except (RuntimeError, KeyError) as exc:
        raise ValueError(f"{weights} does not fit {ARCH}: {exc}") from exc


def build_passt(weights: str | Path | None, seed: int = 0) -> nn.Module:
    """hear21passt's get_basic_model(mode="logits") network built offline; official checkpoint or seeded random."""
    from hear21passt.models.passt import get_model
    from hear21passt.models.preprocess import AugmentMelSTFT
    from hear21passt.wrapper import PasstBasicWrapper

    with _quiet(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        mel = AugmentMelSTFT(  # hear21passt.base.get_basic_model's settings
            n_mels=128, sr=32000, win_length=800, hopsize=320, n_fft=1024, freqm=48, timem=192,
            htk=False, fmin=0.0, fmax=None, norm=1, fmin_aug_range=10, fmax_aug_range=2000,
        )  # fmt: skip
        net = get_model(arch=ARCH, pretrained=False, n_classes=NUM_CLASSES)
    if weights is not None:
        load_passt_checkpoint(net, weights)
    for block in net.blocks:  # same weights and state_dict keys; only how attention is evaluated changes
        block.attn = FusedAttention(block.attn)
    return PasstBasicWrapper(mel=mel, net=net, mode="logits").eval()  # eval: no mel jitter, no masking


class FusedAttention(nn.Module):
    """hear21passt's Attention (its submodules, so the same state_dict keys) through F.scaled_dot_product_attention:
    scale, softmax and weighted sum in one kernel, no (heads, N, N) score tensor. 1.6x less CPU per 10 s window
    here, equal to the explicit q k^T / softmax / v form within 1e-6 relative (docs/benchmarks.md)."""

    def __init__(self, attn: nn.Module) -> None:
        super().__init__()
        self.num_heads, self.scale = attn.num_heads, attn.scale
        self.qkv, self.attn_drop = attn.qkv, attn.attn_drop
        self.proj, self.proj_drop = attn.proj, attn.proj_drop

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        dropout = self.attn_drop.p if self.training else 0.0
        # (b, heads, n, head dim)
        x = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, scale=self.scale)
        return self.proj_drop(self.proj(x.transpose(1, 2).reshape(b, n, c)))


class PasstTagger:
    """AudioSet class probabilities of a clip: mean of window logits, softmax over 527 classes."""

    def __init__(self, model: nn.Module):
        self.model = model.eval()

    def windows(self, audio: torch.Tensor | np.ndarray, sample_rate: int) -> list[torch.Tensor]:
        """(channels, S) at any rate -> the clip's analysis windows (mono, 32 kHz, peak -1 dBFS)."""
        mono = librosa_mono(as_numpy(audio))  # librosa.load: down-mix first
        return cut_windows(peak_normalize(librosa_soxr_hq(mono, sample_rate, PASST_SAMPLE_RATE)))

    @torch.no_grad()
    def window_logits(self, windows: list[torch.Tensor], batch: int = 1) -> list[torch.Tensor]:
        """(527,) float64 logits of each window; windows of equal length go through the net `batch` at a time."""
        device = next(self.model.parameters()).device
        out: list[torch.Tensor | None] = [None] * len(windows)
        by_length: dict[int, list[int]] = {}
        for i, w in enumerate(windows):  # a short last window (<= 1.5 s) is not padded: its own length
            by_length.setdefault(w.shape[-1], []).append(i)
        with _quiet():
            for idx in by_length.values():
                for k in range(0, len(idx), max(batch, 1)):
                    part = idx[k : k + max(batch, 1)]
                    logits = self.model(torch.stack([windows[i] for i in part]).to(device))  # (b, 527)
                    for i, row in zip(part, logits.double().cpu(), strict=True):
                        out[i] = row
        return out

    @staticmethod
    def collect(logits: list[torch.Tensor]) -> torch.Tensor:
        """A clip's window logits -> (527,) probabilities: mean over windows, softmax."""
        return torch.softmax(torch.stack(logits).mean(dim=0), dim=0)

    def probabilities(self, audio: torch.Tensor | np.ndarray, sample_rate: int) -> torch.Tensor:
        """(channels, S) at any rate -> (527,) float64 probabilities (one window per forward)."""
        return self.collect(self.window_logits(self.windows(audio, sample_rate)))

    def probabilities_batch(self, clips: list[list[torch.Tensor]], batch: int) -> list[torch.Tensor]:
        """The probabilities of several clips (each its list of windows), windows of all clips batched."""
        logits = iter(self.window_logits([w for windows in clips for w in windows], batch))
        return [self.collect([next(logits) for _ in windows]) for windows in clips]


def kl_divergence(p: torch.Tensor, q: torch.Tensor, eps: float = KL_EPS) -> float:
    """KL(p || q) = sum p (log p - log(q + eps)), 0 log 0 = 0: F.kl_div((q + eps).log(), p, reduction="sum")."""
    p, q = p.double(), q.double()
    return float(torch.where(p > 0, p * (p.clamp_min(1e-300).log() - (q + eps).log()), 0.0).sum())


def paired_kl(generated: dict[str, torch.Tensor], reference: dict[str, torch.Tensor]) -> dict:
    """Mean KL over prompt ids present in both sets, in both directions (labelled)."""
    ids = sorted(set(generated) & set(reference))
    if not ids:
        raise ValueError("no prompt id is present in both the generated and the reference set")
    forward = [kl_divergence(generated[i], reference[i]) for i in ids]
    backward = [kl_divergence(reference[i], generated[i]) for i in ids]
    return {"value": sum(forward) / len(ids),
            "direction": "KL(generated || reference), as stable-audio-metrics reports it",
            "reverse_value": sum(backward) / len(ids),
            "reverse_direction": "KL(reference || generated), as audiocraft reports it",
            "paired_ids": len(ids)}
