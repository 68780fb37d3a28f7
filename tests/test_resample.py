"""lafa.resample against torchaudio.functional.resample (float64: the reference; float32: the error to match),
torchaudio's kernel, and the windowed-sinc formula evaluated directly with numpy."""

import math
from dataclasses import replace

import numpy as np
import pytest
import torch
import torchaudio.functional as AF
import torchaudio.functional.functional as TF

from lafa.resample import BETA, LOWPASS_FILTER_WIDTH, ROLLOFF, TILE, plan, resample, sinc_kernel

SOURCES = [8000, 11025, 16000, 22050, 24000, 32000, 44100, 48000, 88200, 96000]
PAIRS = [(a, b) for b in (44100, 48000) for a in SOURCES if a != b] + [(44100, 16000), (997, 1201), (7919, 441)]


def _torchaudio(x: torch.Tensor, orig_sr: int, target_sr: int) -> torch.Tensor:
    g = math.gcd(orig_sr, target_sr)
    return AF.resample(x, orig_sr // g, target_sr // g, lowpass_filter_width=LOWPASS_FILTER_WIDTH,
                       rolloff=ROLLOFF, resampling_method="sinc_interp_kaiser", beta=BETA)


def _reduced(a: int, b: int) -> tuple[int, int]:
    return a // math.gcd(a, b), b // math.gcd(a, b)


@pytest.mark.parametrize("pair", PAIRS, ids=lambda p: f"{p[0]}-{p[1]}")
def test_error_against_torchaudio_float64_is_no_worse_than_torchaudio_float32(pair) -> None:
    a, b = pair
    x = 0.5 * torch.randn(2, 3001, generator=torch.Generator().manual_seed(a + b))  # white noise: every band
    reference = _torchaudio(x.double(), a, b)
    y, y64 = resample(x, a, b), resample(x.double(), a, b)
    assert y.shape == y64.shape == reference.shape and y.dtype == torch.float32 and y64.dtype == torch.float64
    ours = (y.double() - reference).abs().max().item()
    theirs = (_torchaudio(x, a, b).double() - reference).abs().max().item()
    assert ours <= 1.5 * theirs + 1e-7, (ours, theirs)
    assert ours <= 1e-4 * reference.abs().max().item()
    assert (y64 - reference).abs().max().item() <= 1e-12  # the same float64 filter: rounding only


@pytest.mark.parametrize("shape", [(1,), (2,), (3,), (50,), (101,), (4099,), (2, 1), (2, 137), (3, 2, 1),
                                   (3, 2, 211)])
@pytest.mark.parametrize("pair", [(48000, 44100), (22050, 44100), (16000, 44100), (44100, 48000), (96000, 44100),
                                  (7919, 441)], ids=lambda p: f"{p[0]}-{p[1]}")
def test_lengths_and_batch_shapes_match_torchaudio(shape, pair) -> None:
    a, b = pair
    x = torch.randn(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(shape[-1]))
    reference = _torchaudio(x, a, b)
    y = resample(x, a, b)
    assert y.shape == reference.shape == (*shape[:-1], math.ceil(shape[-1] * b / a))
    assert (y - reference).abs().max().item() <= 1e-12
    flat = resample(x.reshape(-1, shape[-1]), a, b)  # every signal of a batch is resampled on its own
    assert torch.equal(flat.reshape(y.shape), y)


def test_long_input_in_blocks_of_frames(monkeypatch) -> None:
    """The windows are materialized a block of frames at a time (bounded memory): blocks change nothing."""
    import lafa.resample

    x = torch.randn(2, 20011, dtype=torch.float64)
    monkeypatch.setattr(lafa.resample, "WINDOW_ELEMENTS", 5000)  # a few frames per block, a ragged last one
    for pair in [(48000, 44100), (22050, 44100), (7919, 441)]:
        assert (resample(x, *pair) - _torchaudio(x, *pair)).abs().max().item() <= 1e-12


def test_a_strided_view_and_an_empty_signal() -> None:
    decoded = torch.randn(9001, 2)  # the decoder's (samples, channels) buffer; load_audio_complete returns .T
    assert torch.allclose(resample(decoded.T, 48000, 44100), resample(decoded.T.contiguous(), 48000, 44100))
    assert resample(torch.zeros(2, 0), 48000, 44100).shape == (2, 0)


def test_identity_errors_and_cache() -> None:
    x = torch.randn(2, 100)
    assert resample(x, 44100, 44100) is x
    with pytest.raises(TypeError, match="floating"):
        resample(torch.ones(2, 100, dtype=torch.int16), 48000, 44100)
    with pytest.raises(ValueError, match="positive integers"):
        resample(x, 0, 44100)
    with pytest.raises(ValueError, match="positive integers"):
        resample(x, 44100.5, 48000)
    for dtype in (torch.float16, torch.bfloat16):  # the float32 kernel in the input's dtype
        low = resample(x.to(dtype), 48000, 44100)
        assert low.dtype == dtype and (low.float() - resample(x, 48000, 44100)).abs().max() < 0.05
    cpu = torch.device("cpu")
    assert plan(160, 147, torch.float32, cpu) is plan(160, 147, torch.float32, cpu)  # built once
    assert plan(160, 147, torch.float64, cpu).groups[0].weight.dtype == torch.float64


@pytest.mark.parametrize("pair", [(48000, 44100), (22050, 44100)], ids=lambda p: f"{p[0]}-{p[1]}")
def test_gradient_is_torchaudios(pair) -> None:
    """Differentiable like torchaudio's: the same linear map, so the same gradient of any weighted sum."""
    x = torch.randn(2, 1501, dtype=torch.float64, requires_grad=True)
    weights = torch.randn(2, math.ceil(1501 * pair[1] / pair[0]), dtype=torch.float64)
    (ours,) = torch.autograd.grad((resample(x, *pair) * weights).sum(), x)
    (theirs,) = torch.autograd.grad((_torchaudio(x, *pair) * weights).sum(), x)
    assert (ours - theirs).abs().max().item() <= 1e-12


@pytest.mark.parametrize("pair", [(160, 147), (147, 160), (1, 2), (2, 1), (160, 441), (320, 147), (7919, 441)])
@pytest.mark.parametrize("double", [False, True])
def test_kernel_is_torchaudios(pair, double) -> None:
    orig, new = pair
    kernel, width = sinc_kernel(orig, new, double)
    theirs, their_width = TF._get_sinc_resample_kernel(orig, new, 1, LOWPASS_FILTER_WIDTH, ROLLOFF,
                                                        "sinc_interp_kaiser", BETA,
                                                        dtype=torch.float64 if double else None)
    assert width == their_width and kernel.dtype == theirs.dtype and kernel.shape == theirs[:, 0].shape
    eps = torch.finfo(kernel.dtype).eps
    assert (kernel - theirs[:, 0]).abs().max().item() <= eps * theirs.abs().max().item()


def _frame_kernel(orig: int, new: int, periods: int, double: bool) -> torch.Tensor:
    """The full kernel written for one frame of `periods` periods: row r*new + j is phase j, r*orig taps later."""
    kernel, _ = sinc_kernel(orig, new, double)
    frame = kernel.new_zeros(new * periods, kernel.shape[1] + (periods - 1) * orig)
    for r in range(periods):
        frame[r * new : (r + 1) * new, r * orig : r * orig + kernel.shape[1]] = kernel
    return frame


def _rebuilt(groups, rows: int, length: int, dtype: torch.dtype) -> torch.Tensor:
    """The frame kernel the groups apply (zero outside their supports); every row in exactly one group."""
    rebuilt, covered = torch.zeros(rows, length, dtype=dtype), torch.zeros(rows, dtype=torch.int64)
    for g in groups:
        assert g.weight.shape[1] % TILE == 0 and not g.weight[:, g.rows :].any()  # padding columns are zero
        rebuilt[g.row : g.row + g.rows, g.tap : g.tap + g.weight.shape[0]] = g.weight[:, : g.rows].T
        covered[g.row : g.row + g.rows] += 1
    assert (covered == 1).all()
    return rebuilt


@pytest.mark.parametrize("pair", [(160, 147), (147, 160), (1, 2), (2, 1), (160, 441), (320, 441), (320, 147),
                                  (7919, 441)])
@pytest.mark.parametrize("double", [False, True])
def test_groups_cut_only_the_negligible_taps(pair, double) -> None:
    orig, new = pair
    p = plan(orig, new, torch.float64 if double else torch.float32, torch.device("cpu"))
    full = _frame_kernel(orig, new, p.periods, double)
    assert p.rows == full.shape[0] and p.span <= full.shape[1]
    rebuilt = _rebuilt(p.groups, p.rows, full.shape[1], full.dtype)
    # what the groups leave out is the clamped ~1e-22 tail, 15 orders below the kernel's peak
    assert (rebuilt - full).abs().max().item() <= 1e-15 * full.abs().max().item()
    assert (rebuilt - full).abs().sum(1).max().item() <= 1e-15 * full.abs().max().item()
    # control: a group one tap narrower on either side drops a tap of the window, and the check above sees it
    g = p.groups[len(p.groups) // 2]
    for narrower in (replace(g, tap=g.tap + 1, weight=g.weight[1:]), replace(g, weight=g.weight[:-1])):
        cut = [narrower if h is g else h for h in p.groups]
        missed = (_rebuilt(cut, p.rows, full.shape[1], full.dtype) - full).abs().max().item()
        assert missed > 1e-15 * full.abs().max().item()


def _formula(x: np.ndarray, orig_sr: int, target_sr: int, outputs: np.ndarray) -> np.ndarray:
    """y[m] = sum_i x[i] h((i / orig - m / new) * base) * base / orig, h = sinc * Kaiser(64 zero crossings),
    the definition of the filter evaluated directly in float64 (numpy), at the output indices `outputs`; with
    torchaudio's float32 beta and window normalizer i0(beta), which lafa keeps (a 1e-7 relative change)."""
    orig, new = _reduced(orig_sr, target_sr)
    base = min(orig, new) * ROLLOFF
    t = (np.arange(len(x))[None] / orig - outputs[:, None] / new) * base  # (outputs, S)
    inside = np.abs(t) < LOWPASS_FILTER_WIDTH
    beta, norm = float(np.float32(BETA)), torch.i0(torch.tensor(BETA)).item()
    window = np.i0(beta * np.sqrt(np.clip(1 - (t / LOWPASS_FILTER_WIDTH) ** 2, 0, None))) / norm
    return (np.where(inside, np.sinc(t) * window, 0.0) * (base / orig)) @ x


# float32 tolerance: torchaudio's default kernel (which lafa's float32 kernel equals) rounds the phase j / new to
# float32, an error in t of up to 6e-8 * min(orig, new) zero crossings: 5e-6 of the peak at 48 -> 44.1 kHz, 2e-4
# at the coprime 7919 -> 44100 Hz (with j / new in float64 both would be ~3e-7)
@pytest.mark.parametrize("pair, tol32", [((48000, 44100), 2e-5), ((22050, 44100), 2e-6), ((44100, 48000), 2e-5),
                                         ((997, 1201), 1e-4), ((7919, 44100), 4e-4)], ids=lambda p: str(p))
def test_output_is_the_windowed_sinc_formula(pair, tol32) -> None:
    """Independent of torchaudio; 7919 -> 44100 Hz (coprime) is too large for torchaudio's full kernel
    (44100 x 8057 taps in float64 and its temporaries), lafa builds only the groups' supports."""
    a, b = pair
    x = np.random.default_rng(1).standard_normal(a + 17)  # over a second: every phase of the period
    y = resample(torch.from_numpy(x), a, b).numpy()
    y32 = resample(torch.from_numpy(x).float(), a, b).numpy()
    assert len(y) == len(y32) == math.ceil(len(x) * b / a)
    outputs = np.unique(np.linspace(0, len(y) - 1, 60).round().astype(int))  # both ends: the zero padding
    expected = _formula(x, a, b, outputs)
    scale = np.abs(expected).max()
    # float64: rounding only (the formula's own t = i / orig - m / new loses ~1e-11 at i ~ 5e4)
    assert np.abs(y[outputs] - expected).max() <= 1e-10 * scale
    assert np.abs(y32[outputs] - expected).max() <= tol32 * scale


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu() -> None:
    x = torch.randn(2, 3, 20011, dtype=torch.float64)
    for a, b in [(48000, 44100), (22050, 44100), (16000, 48000)]:
        on_gpu = resample(x.cuda(), a, b)
        assert on_gpu.device.type == "cuda" and on_gpu.dtype == torch.float64
        assert (on_gpu.cpu() - resample(x, a, b)).abs().max().item() <= 1e-12
        y32 = resample(x.float().cuda(), a, b)
        assert (y32.double().cpu() - resample(x, a, b)).abs().max().item() <= 1e-4
