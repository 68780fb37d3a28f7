"""Population values of lafa's locality measures (`lafa.analysis.controls.locality_measures`) for a Gaussian
latent.

Each is what the estimator converges to as clips grow without bound, computed from the covariance alone
(docs/lab.md, "Population locality measures", derives each): alpha from the exact expected |DFT2|^2 of a
window, LPI as the population R^2 of each channel from its +-r neighbours, the permutation baselines over the
orders the estimator draws, participation ratio and eigen decay slope of K_chan, and the lam-weighted PC
temporal slope.
"""

from __future__ import annotations

import numpy as np

from lafa.analysis.controls import EIGEN_FLOOR, eigen_decay_slope, participation_ratio
from lafa.analysis.locality import neighbour_radius
from lafa.analysis.spectrum import fit_slopes, num_rings, ring_frequencies
from lafa.lab.spec import GaussianLatentSpec


def _window_power(spec: GaussianLatentSpec, window: int) -> tuple[np.ndarray, np.ndarray]:
    """E|DFT(s)(kt)|^2 over one window, all kt (window,): (informative, white)."""
    dft = np.exp(-2j * np.pi * np.outer(np.arange(window), np.arange(window)) / window)  # (kt, frame)
    informative = np.einsum("ka,ab,kb->k", dft, spec.temporal_covariance(window), dft.conj()).real
    return informative, np.full(window, float(window))


def expected_power(spec: GaussianLatentSpec, basis: np.ndarray, window: int) -> np.ndarray:
    """E|DFT2(x_window)|^2 / (C w) on the full (C, w) DFT grid, for the channel basis `basis` (C, C)."""
    channel_power = np.abs(np.fft.fft(basis, axis=0)) ** 2 * spec.eigenvalues  # (kc, component) lam_k |DFT u_k|^2
    informative, white = _window_power(spec, window)
    power = (channel_power[:, ~spec.white].sum(1)[:, None] * informative[None, :]
             + channel_power[:, spec.white].sum(1)[:, None] * white[None, :])
    return power / (spec.channels * window)


def ring_average(power: np.ndarray) -> np.ndarray:
    """pysteps' ring average of a full (h, w) DFT-order power grid: rings round(sqrt(kh^2 + kw^2)) < ceil(l / 2)."""
    h, w = power.shape
    kh = np.round(np.fft.fftfreq(h) * h)[:, None]
    kw = np.round(np.fft.fftfreq(w) * w)[None, :]
    rings = np.round(np.sqrt(kh * kh + kw * kw)).astype(int)
    n = num_rings(h, w)
    keep = rings < n
    return np.bincount(rings[keep], power[keep], n) / np.bincount(rings[keep], minlength=n)


def population_alpha(spec: GaussianLatentSpec, basis: np.ndarray, window: int, grid_points: int | None = None) -> float:
    """The spectral slope alpha that lafa's estimator converges to, for channel basis `basis`."""
    freq = ring_frequencies(spec.channels, window)
    return float(fit_slopes(freq, ring_average(expected_power(spec, basis, window)), grid_points))


def population_lpi(covariance: np.ndarray, lam: float = 0.06) -> float:
    """Mean over channels of the population R^2 of each channel from its +-r neighbours (r = ceil(lam C))."""
    std = np.sqrt(np.diag(covariance))
    corr = covariance / np.outer(std, std)
    channels = len(corr)
    r = neighbour_radius(channels, lam)
    r2 = np.empty(channels)
    for c in range(channels):
        nb = [j for j in range(c - r, c + r + 1) if j != c and 0 <= j < channels]
        r2[c] = corr[c, nb] @ np.linalg.solve(corr[np.ix_(nb, nb)], corr[nb, c])
    return float(r2.mean())


def estimator_permutations(channels: int, permutations: int, seed: int) -> list[np.ndarray]:
    """The channel orders `locality_measures(..., permutations, seed)` draws, identity first."""
    rng = np.random.default_rng(seed)
    return [np.arange(channels)] + [rng.permutation(channels) for _ in range(permutations)]


def population_pc_slope(spec: GaussianLatentSpec, window: int, grid_points: int | None = None) -> float:
    """Eigenvalue-weighted mean of each component's temporal periodogram slope (rfft frequencies)."""
    informative, white = _window_power(spec, window)
    half = window // 2 + 1
    t_freq = np.fft.rfftfreq(window)
    slopes = np.where(spec.white, float(fit_slopes(t_freq, white[:half], grid_points)),
                      float(fit_slopes(t_freq, informative[:half], grid_points)))
    lam = spec.eigenvalues
    used = lam > EIGEN_FLOOR * lam.max()
    return float((slopes * lam)[used].sum() / lam[used].sum())


def population_measures(spec: GaussianLatentSpec, lam: float = 0.06, window: int = 64, permutations: int = 20,
                        seed: int = 0, grid_points: int | None = None) -> dict[str, float]:
    """Population value of every measure `locality_measures` reports (same names, same settings)."""
    basis = spec.basis_matrix
    orders = estimator_permutations(spec.channels, permutations, seed)
    alphas = np.array([population_alpha(spec, basis[p], window, grid_points) for p in orders])
    cov = spec.channel_covariance
    lpis = np.array([population_lpi(cov[np.ix_(p, p)], lam) for p in orders])
    eig = np.sort(spec.eigenvalues)[::-1]
    out = {"alpha": float(alphas[0]), "lpi": float(lpis[0])}
    if permutations:
        out |= {"alpha_permuted": float(alphas[1:].mean()), "alpha_excess": float(alphas[0] - alphas[1:].mean()),
                "lpi_permuted": float(lpis[1:].mean()), "lpi_excess": float(lpis[0] - lpis[1:].mean())}
    return out | {"participation_ratio": participation_ratio(eig), "eigen_decay_slope": eigen_decay_slope(eig)[0],
                  "pc_temporal_slope": population_pc_slope(spec, window, grid_points)}
