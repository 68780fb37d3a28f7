"""Ring average against a direct loop; alpha against fields synthesised with a known power law."""

import numpy as np
import pytest
import torch

from lafa.analysis.spectrum import mean_spectrum, rapsd, ring_frequencies, spectral_slope


def loop_rapsd(field: np.ndarray) -> np.ndarray:
    """Independent reference: every ring by a double loop over the cells, as Appendix C defines it."""
    h, w = field.shape
    power = np.abs(np.fft.fftshift(np.fft.fft2(field))) ** 2 / field.size
    n = (max(h, w) + 1) // 2  # pysteps: ceil(l / 2) rings
    sums, counts = np.zeros(n), np.zeros(n)
    for i in range(h):
        for j in range(w):
            kt, kc = i - h // 2, j - w // 2
            r = int(np.floor(np.sqrt(kt * kt + kc * kc) + 0.5))
            if r < n:
                sums[r] += power[i, j]
                counts[r] += 1
    return sums / counts


@pytest.mark.parametrize("shape", [(16, 16), (17, 17), (12, 19), (21, 8), (7, 10)])
def test_rapsd_matches_direct_ring_loop(shape):
    field = np.random.default_rng(0).standard_normal(shape)
    got = rapsd(torch.from_numpy(field)).numpy()
    np.testing.assert_allclose(got, loop_rapsd(field), rtol=1e-10)
    assert len(ring_frequencies(*shape)) == len(got)
    assert ring_frequencies(*shape)[1] == pytest.approx(1 / max(shape))


def test_rapsd_batched_and_transpose_invariant():
    x = torch.randn(3, 10, 14, dtype=torch.float64)
    batched = rapsd(x)
    for i in range(3):
        torch.testing.assert_close(batched[i], rapsd(x[i]))
        torch.testing.assert_close(rapsd(x[i].T), rapsd(x[i]))


def test_rapsd_total_power_parseval():
    """Ring 0 is the DC cell alone: |sum x|^2 / size."""
    x = torch.randn(9, 12, dtype=torch.float64)
    assert rapsd(x)[0].item() == pytest.approx(x.sum().item() ** 2 / x.numel())


def power_law_field(h: int, w: int, alpha: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian field with E|X_hat(k)|^2 proportional to |k|^-alpha (|k| in DFT index units)."""
    kh = np.fft.fftfreq(h) * h
    kw = np.fft.fftfreq(w) * w
    k = np.sqrt(kh[:, None] ** 2 + kw[None, :] ** 2)
    amplitude = np.where(k > 0, k, 1.0) ** (-alpha / 2)
    amplitude[0, 0] = 0.0
    return np.real(np.fft.ifft2(np.fft.fft2(rng.standard_normal((h, w))) * amplitude))


@pytest.mark.parametrize("alpha", [1.0, 2.0, 3.0])
def test_alpha_recovered_from_power_law_field(alpha):
    """Tolerance 0.12: ring rounding biases alpha low by 0.02-0.09 here (8 realisations, 64 x 64)."""
    rng = np.random.default_rng(1)
    maps = [torch.from_numpy(power_law_field(64, 64, alpha, rng)) for _ in range(8)]
    freq, spectrum, n = mean_spectrum(maps, window=64)
    assert n == 8
    got, _ = spectral_slope(freq, spectrum)
    assert got == pytest.approx(alpha, abs=0.12)


def test_alpha_recovered_with_windows_and_rectangular_grid():
    """One long (C=32, T=512) field cut into 32-frame windows (Sec. 3.1's temporal windows)."""
    rng = np.random.default_rng(2)
    maps = [torch.from_numpy(power_law_field(32, 512, 2.0, rng)) for _ in range(2)]
    freq, spectrum, n = mean_spectrum(maps, window=32)
    assert n == 32
    got, _ = spectral_slope(freq, spectrum)
    assert got == pytest.approx(2.0, abs=0.15)


def test_white_noise_alpha_near_zero():
    maps = [torch.randn(64, 640, generator=torch.Generator().manual_seed(i)) for i in range(4)]
    got, _ = spectral_slope(*mean_spectrum(maps, window=64)[:2])
    assert abs(got) < 0.05


def test_slope_of_exact_power_law_is_exact():
    f = np.arange(40) / 80
    s = np.where(f > 0, 3.0 * np.maximum(f, 1e-9) ** -2.5, 123.0)  # DC value must be ignored
    alpha, intercept = spectral_slope(f, s, num_points=17)
    assert alpha == pytest.approx(2.5, abs=1e-9)
    assert intercept == pytest.approx(np.log(3.0), abs=1e-9)


def test_mean_spectrum_rejects_short_clips():
    with pytest.raises(ValueError, match="window"):
        mean_spectrum([torch.randn(8, 10)], window=16)
