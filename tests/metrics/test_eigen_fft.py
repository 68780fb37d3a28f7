"""lafa.metrics.eigen_fft without TensorFlow: an FFT, with Eigen's float32 twiddle drift and TF's window.

Bit-for-bit equality with TensorFlow's own outputs is checked in test_parity.py against recorded fixtures;
these tests check what must hold independently of them.
"""

import numpy as np
import pytest
import torch

from lafa.metrics.eigen_fft import bit_reversal, eigen_rfft, tensorflow_hann_window


def _spectrum(x: torch.Tensor) -> np.ndarray:
    re, im = eigen_rfft(x)
    return re.double().numpy() + 1j * im.double().numpy()


@pytest.mark.parametrize("n", [8, 16, 64, 512, 2048])
def test_eigen_rfft_is_an_fft_with_twiddle_drift(n):
    x = torch.from_numpy(np.random.default_rng(n).standard_normal((4, n)).astype(np.float32))
    exact = np.fft.rfft(x.double().numpy())
    ours = _spectrum(x)
    assert ours.shape == exact.shape == (4, n // 2 + 1)
    err = np.abs(ours - exact).max() / np.abs(exact).max()
    torch_err = np.abs(torch.fft.rfft(x).numpy() - exact).max() / np.abs(exact).max()
    assert err < 2e-5  # an FFT, to float32-recurrence accuracy
    if n >= 512:  # the w <- w (1 + wp)^4 recurrence drifts over m / 8 steps: far above torch's error
        assert err > 5 * torch_err


def test_eigen_rfft_closed_forms_and_linearity():
    n = 2048
    impulse = torch.zeros(n)
    impulse[0] = 1.0
    re, im = eigen_rfft(impulse)
    assert torch.equal(re, torch.ones(n // 2 + 1)) and torch.all(im == 0)  # every twiddle multiplies zeros
    # cos at bin 5: energy n/2 in bin 5 and (to float32-recurrence accuracy) nowhere else
    t = torch.arange(n, dtype=torch.float64)
    spec = np.abs(_spectrum(torch.cos(2 * np.pi * 5 * t / n).float()))
    assert abs(spec[5] - n / 2) < 1e-2 and np.delete(spec, 5).max() < 1e-2
    # deterministic and batch-independent: a frame's spectrum does not depend on its neighbours
    x = torch.randn(3, n)
    batched = _spectrum(x)
    assert np.array_equal(batched[1], _spectrum(x[1:2])[0])


def test_bit_reversal_and_errors():
    assert bit_reversal(8).tolist() == [0, 4, 2, 6, 1, 5, 3, 7]
    with pytest.raises(ValueError, match="power-of-two"):
        eigen_rfft(torch.zeros(1000))
    with pytest.raises(TypeError, match="float32"):
        eigen_rfft(torch.zeros(512, dtype=torch.float64))


@pytest.mark.parametrize("n", [512, 2048])
def test_tensorflow_hann_window_is_a_periodic_hann_to_float32_rounding(n):
    ours = tensorflow_hann_window(n).numpy()
    exact = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n) / n)
    # the float32 argument 2 pi k / n carries most of the error (up to ~2e-7), as in torch's window
    assert ours.dtype == np.float32 and np.abs(ours - exact).max() < 2.5e-7
    differs = np.mean(ours != torch.hann_window(n).numpy())
    assert 0 < differs < 0.2  # Eigen's cos and torch's round differently on a few samples
