"""The spectrum-matching loss (ESM-style, lafa.models.spectrum_loss): zero on a latent whose windowed spectrum is
exactly the target power law, its slope equal to the one `lafa.analysis` fits, and a gradient that moves the
measured alpha towards the target."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lafa.analysis.spectrum import mean_spectrum, spectral_slope
from lafa.models.lafa import Lafa
from lafa.models.spectrum_loss import log_spectrum_on_grid, power_law_loss


def fitted_slope(y: torch.Tensor, window: int = 64, frame_keep: torch.Tensor | None = None) -> torch.Tensor:
    """alpha of Y's windowed spectrum, the slope `lafa.analysis.spectrum.spectral_slope` fits."""
    x, g = log_spectrum_on_grid(y, window, frame_keep)
    xc = x - x.mean()
    return -(xc * (g - g.mean())).sum() / xc.square().sum()


def _power_law_field(c: int, n: int, alpha: float, seed: int = 0) -> torch.Tensor:
    """A real (C, N) map whose 2-D DFT power is exactly r^-alpha on every cell of integer ring r (DC 1):
    white noise's phases, with the magnitude of each cell set to sqrt(C N) r^(-alpha / 2) (built with numpy)."""
    rng = np.random.default_rng(seed)
    spectrum = np.fft.fft2(rng.standard_normal((c, n)))
    kc = np.fft.fftfreq(c, 1.0 / c)[:, None]
    kn = np.fft.fftfreq(n, 1.0 / n)[None, :]
    ring = np.rint(np.sqrt(kc**2 + kn**2))
    magnitude = np.where(ring > 0, np.sqrt(c * n) * np.maximum(ring, 1) ** (-alpha / 2), 1.0)
    field = np.fft.ifft2(spectrum / np.abs(spectrum) * magnitude)
    assert np.abs(field.imag).max() < 1e-9  # Hermitian: the phases of a real map, a symmetric magnitude
    return torch.from_numpy(field.real.copy())


@pytest.mark.parametrize("alpha", [1.0, 2.0, 2.7])
def test_zero_on_the_exact_target_spectrum(alpha: float) -> None:
    y = _power_law_field(64, 64, alpha)[None]  # (1, C, N): one window of 64 frames
    freq, spectrum, _ = mean_spectrum([y[0]], 64)  # the analysis's own spectrum and fit (numpy)
    assert spectral_slope(freq, spectrum)[0] == pytest.approx(alpha, abs=1e-9)
    assert float(fitted_slope(y, 64)) == pytest.approx(alpha, abs=1e-9)
    assert float(power_law_loss(y, alpha, 64)) < 1e-16
    assert float(power_law_loss(y, alpha + 0.5, 64)) > 1e-3  # another target is not met


def test_loss_is_smallest_at_the_analysis_slope() -> None:
    """For any latent, L_spec(target) is a parabola in the target whose minimum is the alpha `lafa.analysis` fits
    on the same windows (several clips, windows of 32 frames, a padded tail left out)."""
    g = torch.Generator().manual_seed(1)
    y = torch.randn(3, 32, 100, generator=g, dtype=torch.float64).cumsum(dim=1)  # red along the channels
    keep = torch.ones(3, 100, dtype=torch.bool)
    keep[2, 70:] = False  # clip 2 is 70 frames long: 2 full windows
    maps = [y[0], y[1], y[2, :, :70]]
    freq, spectrum, windows = mean_spectrum(maps, 32)
    assert windows == 8
    alpha = spectral_slope(freq, spectrum)[0]
    targets = np.linspace(alpha - 1, alpha + 1, 201)
    losses = [float(power_law_loss(y, t, 32, keep)) for t in targets]
    assert targets[int(np.argmin(losses))] == pytest.approx(alpha, abs=0.011)
    assert float(fitted_slope(y, 32, keep)) == pytest.approx(alpha, abs=1e-9)


@pytest.mark.parametrize("start,target", [(0.0, 2.0), (3.0, 1.5)])
def test_gradient_moves_the_slope_towards_the_target(start: float, target: float) -> None:
    y = _power_law_field(32, 64, start, seed=3)[None].clone().requires_grad_(True)
    before = float(fitted_slope(y.detach(), 32))
    opt = torch.optim.SGD([y], lr=0.5)
    for _ in range(20):
        opt.zero_grad()
        power_law_loss(y, target, 32).backward()
        opt.step()
    after = float(fitted_slope(y.detach(), 32))
    assert abs(after - target) < abs(before - target) - 0.1, (before, after)


def test_lafa_objective_adds_the_weighted_spectrum_term() -> None:
    """Lafa(spectrum_weight = w).objective: loss = reconstruction + w L_spec(Y), Y the encoder's output; w = 0
    computes no spectrum term; every parameter still gets a gradient."""
    torch.manual_seed(0)
    args = dict(latent_channels=16, lafa_channels=16, channel_group_size=4, encoder_dim=32, encoder_depth=1,
                encoder_heads=4, decoder_dim=32, decoder_depth=1, decoder_heads=4, mask_ratio=0.0, p_all=0.0)
    model = Lafa(**args, spectrum_weight=0.3, spectrum_slope=2.0, spectrum_window=16)
    z = torch.randn(2, 16, 40)
    masked = model.masker(2)
    parts = model.objective(z, masked, generator=torch.Generator().manual_seed(0))
    y = model.encode(z)
    assert float(parts["spectrum"]) == pytest.approx(float(power_law_loss(y, 2.0, 16)), rel=1e-5)
    assert float(parts["loss"]) == pytest.approx(float(parts["reconstruction"] + 0.3 * parts["spectrum"]), rel=1e-6)
    parts["loss"].backward()
    assert all(p.grad is not None for p in model.parameters())
    plain = Lafa(**args)
    assert "spectrum" not in plain.objective(z, plain.masker(2))
    with pytest.raises(ValueError):
        Lafa(**args, spectrum_weight=-1.0)
