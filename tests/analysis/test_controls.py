"""Locality controls: permutation baselines, order-invariant eigen measures, bootstrap intervals."""

import math

import numpy as np
import pytest
import torch

from lafa.analysis.controls import (
    ALL_MEASURES,
    MEASURES,
    eigen_decay_slope,
    locality_measures,
    participation_ratio,
)
from lafa.analysis.latent_report import AnalysisSettings, analyze_maps
from lafa.analysis.spectrum import fit_slopes, spectral_slope


def ar1_field(clips: int, channels: int, frames: int, phi: float, seed: int) -> list[torch.Tensor]:
    """Clips of z_c = phi z_{c-1} + sqrt(1 - phi^2) e_c along the channel axis (white in time): (C, T) each."""
    rng = np.random.default_rng(seed)
    e = rng.standard_normal((clips, channels, frames))
    z = np.empty_like(e)
    z[:, 0] = e[:, 0]
    for c in range(1, channels):
        z[:, c] = phi * z[:, c - 1] + math.sqrt(1 - phi**2) * e[:, c]
    return list(torch.from_numpy(z))


def ar1_lpi(channels: int, phi: float) -> float:
    """Analytic LPI with r = 1 of the AR(1) chain: interior 2 phi^2 / (1 + phi^2), edges phi^2."""
    return ((channels - 2) * 2 * phi**2 / (1 + phi**2) + 2 * phi**2) / channels


def test_permutation_baseline_separates_local_field_from_its_shuffled_copy():
    local = ar1_field(40, 16, 64, 0.9, seed=0)
    order = torch.from_numpy(np.random.default_rng(1).permutation(16))
    shuffled = [z[order] for z in local]
    a = locality_measures(local, window=32, permutations=30, bootstrap=100, seed=0)
    b = locality_measures(shuffled, window=32, permutations=30, bootstrap=100, seed=0)
    for name in ("lpi", "alpha"):
        spread = a[f"{name}_permuted"]["std"]
        assert a[f"{name}_excess"]["value"] > 5 * spread > 0
        assert a[f"{name}_excess"]["low"] > 0  # the whole interval is above the permutation mean
        assert a[f"{name}_excess"]["p_value"] == pytest.approx(1 / 31)  # no permutation reaches it
        # the shuffled copy is itself one random order: its excess is a draw from the permutation spread
        assert abs(b[f"{name}_excess"]["value"]) < 3 * b[f"{name}_permuted"]["std"]
    assert a["lpi_excess"]["value"] > 0.3
    # same values in another order: the order-invariant measures do not move
    for name in ("participation_ratio", "eigen_decay_slope", "pc_temporal_slope"):
        assert b[name]["value"] == pytest.approx(a[name]["value"], rel=1e-9)
    assert b["lpi_permuted"]["value"] == pytest.approx(a["lpi_permuted"]["value"], abs=3 * a["lpi_permuted"]["std"])


def test_measured_values_equal_the_paper_measures_and_every_measure_is_reported():
    maps = [z.float() for z in ar1_field(6, 8, 40, 0.7, seed=2)]
    maps[2] = maps[2][:, :20]  # clips of different lengths
    maps[3] = maps[3][:, :10]  # one shorter than a window: in LPI and the eigen measures, in no spectrum
    settings = AnalysisSettings(window=16, hop=8)
    direct = analyze_maps(maps, settings)
    m = locality_measures(maps, window=16, hop=8, permutations=5, bootstrap=20, min_clips=2)  # intervals from 2 clips
    assert m["lpi"]["value"] == pytest.approx(direct["lpi"], abs=1e-9)
    assert m["alpha"]["value"] == pytest.approx(direct["alpha"], abs=1e-9)
    assert set(MEASURES) <= set(m)
    for name in MEASURES:
        assert m[name]["low"] <= m[name]["high"]
    assert m["counts"] == {**m["counts"], "clips": 6, "channels": 8, "samples": 4 * 40 + 20 + 10}
    assert len(m["alpha_permuted"]["values"]) == 5


def test_participation_ratio_closed_forms():
    assert participation_ratio(np.ones(12)) == pytest.approx(12.0)
    assert participation_ratio(np.r_[3.0, np.zeros(11)]) == pytest.approx(1.0)
    q, c = 0.7, 16
    expected = (1 - q**c) * (1 + q) / ((1 - q) * (1 + q**c))  # (sum q^k)^2 / sum q^2k
    assert participation_ratio(q ** np.arange(c)) == pytest.approx(expected, rel=1e-12)


def test_participation_ratio_of_data_with_known_rank():
    """Two independent unit-variance sources on 16 channels: eigenvalues (8, 8, 0, ..) -> PR 2; one -> 1."""
    rng = np.random.default_rng(3)
    sources = rng.standard_normal((20, 2, 200))
    mixing = np.linalg.qr(rng.standard_normal((16, 2)))[0] * math.sqrt(8)  # orthogonal columns of norm sqrt 8
    z = [torch.from_numpy(mixing @ s) for s in sources]
    m = locality_measures(z, window=16, permutations=0, bootstrap=0)
    assert m["participation_ratio"]["value"] == pytest.approx(2.0, abs=0.05)
    assert m["eigen_decay_slope"]["ranks"] == 2  # numerical zeros left out
    assert m["pc_temporal_slope"]["components"] == 2
    one = locality_measures([torch.from_numpy(np.outer(np.arange(1.0, 17.0), s[0])) for s in sources],
                            window=16, permutations=0, bootstrap=0)
    assert one["participation_ratio"]["value"] == pytest.approx(1.0, abs=1e-9)


def test_eigen_decay_slope_of_a_power_law():
    beta = 1.5
    lam = np.arange(1, 65, dtype=float) ** -beta
    assert eigen_decay_slope(lam) == (pytest.approx(beta, abs=1e-9), 64)
    assert eigen_decay_slope(np.r_[lam[:20], np.zeros(44)]) == (pytest.approx(beta, abs=1e-9), 20)
    assert math.isnan(eigen_decay_slope(np.r_[1.0, np.zeros(5)])[0])


def test_fit_slopes_equals_spectral_slope():
    rng = np.random.default_rng(4)
    freq = np.arange(17) / 32
    spectra = rng.uniform(0.1, 2.0, size=(3, 17))
    for grid in (None, 40):
        got = fit_slopes(freq, spectra, grid)
        assert got == pytest.approx([spectral_slope(freq, s, grid)[0] for s in spectra], abs=1e-12)


def test_pc_temporal_slope_is_rotation_invariant_and_finds_the_smooth_component():
    """Component 1 (large variance) is a temporal random walk (1/f^2), the others white; any rotation of the
    channels leaves the eigen measures unchanged, while the channel-order-dependent LPI changes."""
    rng = np.random.default_rng(5)
    comps = rng.standard_normal((12, 8, 128))
    comps[:, 0] = 3 * np.cumsum(rng.standard_normal((12, 128)), axis=1) / math.sqrt(128)
    comps[:, 0] -= comps[:, 0].mean(axis=1, keepdims=True)
    rotation = np.linalg.qr(rng.standard_normal((8, 8)))[0]
    plain = locality_measures([torch.from_numpy(c) for c in comps], window=64, permutations=0, bootstrap=0)
    rotated = locality_measures([torch.from_numpy(rotation @ c) for c in comps], window=64, permutations=0, bootstrap=0)
    slopes = plain["pc_temporal_slope"]["per_component"]
    assert slopes[0] > 1.2 and max(abs(s) for s in slopes[1:]) < 0.5
    for name in ("participation_ratio", "eigen_decay_slope", "pc_temporal_slope"):
        assert rotated[name]["value"] == pytest.approx(plain[name]["value"], rel=1e-6)
    assert rotated["eigenvalues"] == pytest.approx(plain["eigenvalues"], rel=1e-9)


def test_bootstrap_interval_coverage_of_the_analytic_lpi():
    """90% intervals over independent data sets cover the analytic LPI about 90% of the time, and their
    width matches the spread of the estimates across data sets (the interval is neither too narrow nor wide)."""
    channels, phi, sets = 8, 0.6, 60
    truth = ar1_lpi(channels, phi)
    hits, widths, estimates = 0, [], []
    for s in range(sets):
        m = locality_measures(ar1_field(16, channels, 64, phi, seed=100 + s), window=32, permutations=0,
                              bootstrap=100, confidence=0.9, seed=s)["lpi"]
        hits += m["low"] <= truth <= m["high"]
        widths.append(m["high"] - m["low"])
        estimates.append(m["value"])
    assert 0.75 <= hits / sets <= 0.99
    expected_width = 2 * 1.645 * np.std(estimates, ddof=1)
    assert 0.67 < np.mean(widths) / expected_width < 1.5


def test_one_clip_has_no_interval_and_short_clips_are_named():
    m = locality_measures(torch.randn(1, 8, 64), window=16, permutations=3, bootstrap=50)
    assert m["lpi"]["value"] is not None and m["lpi"]["low"] is None and m["lpi"]["high"] is None
    with pytest.raises(ValueError, match="full window"):
        locality_measures(torch.randn(3, 8, 10), window=16)
    with pytest.raises(ValueError, match=r"\(N, C, T\)"):
        locality_measures(torch.randn(8, 10), window=16)


def test_sliced_solves_of_wide_latents_give_the_same_numbers(monkeypatch):
    """The memory bound slices the permutations and resamples into several solves: same numbers."""
    import lafa.analysis.controls as controls

    maps = ar1_field(8, 12, 32, 0.5, seed=9)
    whole = locality_measures(maps, window=16, permutations=6, bootstrap=12, min_clips=2, group_size=4)
    monkeypatch.setattr(controls, "ELEMENTS", 1)  # one permutation and one resample per solve
    sliced = locality_measures(maps, window=16, permutations=6, bootstrap=12, min_clips=2, group_size=4)
    for name in ALL_MEASURES:
        assert sliced[name]["value"] == pytest.approx(whole[name]["value"], rel=1e-12)
        assert sliced[name]["low"] == pytest.approx(whole[name]["low"], rel=1e-12)
