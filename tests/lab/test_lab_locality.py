"""Closed-form alpha, LPI and controls against lafa's own estimator on many draws from the DataModule."""

import numpy as np
import pytest
import torch

from lafa.analysis.controls import MEASURES, locality_measures
from lafa.data.gaussian_latents import GaussianLatentDataModule
from lafa.lab.compare import analysis_vs_closed_form, table
from lafa.lab.locality import population_lpi, population_measures, ring_average
from lafa.lab.spec import GaussianLatentSpec

SETTINGS = {"lam": 0.06, "window": 32, "permutations": 4, "seed": 0}
# tolerances: alpha and the slopes are fits to an averaged spectrum (~1.5k windows); LPI carries the in-sample
# bias ~ 2r / N_eff (N_eff ~ 48k frames / 19 at rho 0.9) and the ridge (1 / N)
TOLERANCE = {"alpha": 0.03, "alpha_permuted": 0.03, "alpha_excess": 0.04, "lpi": 0.015, "lpi_permuted": 0.015,
             "lpi_excess": 0.02, "eigen_decay_slope": 0.05, "pc_temporal_slope": 0.05}


def draw(datamodule: GaussianLatentDataModule, batches: int) -> torch.Tensor:
    loader = datamodule.train_dataloader()
    it = iter(loader)
    return torch.cat([next(it)["latent"] for _ in range(batches)])


@pytest.mark.parametrize("spectrum,basis", [("power_law", "dct"), ("power_law", "rotated"), ("vae_like", "dct")])
def test_closed_forms_equal_the_estimator_on_many_draws(spectrum, basis):
    dm = GaussianLatentDataModule(channels=32, frames=64, spectrum=spectrum, basis=basis, noise_channels=4,
                                  train_examples=768, batch_size=256, seed=5)
    measured = locality_measures(draw(dm, 3), bootstrap=0, **SETTINGS)
    closed = population_measures(dm.spec, **SETTINGS)
    for name, tol in TOLERANCE.items():
        assert measured[name]["value"] == pytest.approx(closed[name], abs=tol), name
    assert measured["participation_ratio"]["value"] == pytest.approx(closed["participation_ratio"], rel=0.03)


def test_dct_is_local_permuted_and_rotated_are_not():
    m = {b: population_measures(GaussianLatentSpec(channels=64, basis=b)) for b in ("dct", "permuted", "rotated")}
    assert m["dct"]["lpi_excess"] > 0.25 and m["dct"]["alpha_excess"] > 0.4
    for b in ("permuted", "rotated"):
        assert abs(m[b]["lpi_excess"]) < 0.06 and abs(m[b]["alpha_excess"]) < 0.1, b
    for name in ("participation_ratio", "eigen_decay_slope", "pc_temporal_slope"):  # order-invariant
        assert m["permuted"][name] == pytest.approx(m["dct"][name]) == pytest.approx(m["rotated"][name])


def test_population_lpi_of_ar1_channels_is_the_analytic_value():
    """Channels an AR(1) along the channel axis: ((C - 2) 2 phi^2 / (1 + phi^2) + 2 phi^2) / C for any r."""
    c, phi = 40, 0.7
    cov = phi ** np.abs(np.subtract.outer(np.arange(c), np.arange(c)))
    expected = ((c - 2) * 2 * phi**2 / (1 + phi**2) + 2 * phi**2) / c
    for lam in (0.02, 0.06):  # r = 1, 3
        assert population_lpi(cov, lam) == pytest.approx(expected, rel=1e-10)
    assert population_lpi(np.eye(c)) == 0.0


def test_white_field_has_a_flat_spectrum():
    spec = GaussianLatentSpec(channels=16, spectrum="flat", rho=0.0)
    m = population_measures(spec, window=16, permutations=2)
    assert m["alpha"] == pytest.approx(0.0, abs=1e-12) and m["pc_temporal_slope"] == pytest.approx(0.0, abs=1e-12)
    assert m["participation_ratio"] == pytest.approx(16)


def test_ring_average_equals_a_double_loop():
    rng = np.random.default_rng(0)
    for h, w in ((6, 9), (8, 8), (7, 4)):
        power = rng.random((h, w))
        n, sums, counts = (max(h, w) + 1) // 2, np.zeros((max(h, w) + 1) // 2), np.zeros((max(h, w) + 1) // 2)
        for i in range(h):
            for j in range(w):
                ki, kj = (i if i < (h + 1) // 2 else i - h), (j if j < (w + 1) // 2 else j - w)
                r = int(round(np.hypot(ki, kj)))
                if r < n:
                    sums[r] += power[i, j]
                    counts[r] += 1
        np.testing.assert_allclose(ring_average(power), sums / counts)


def test_analysis_beside_closed_form_covers_it():
    """The printed comparison: every measure with its bootstrap interval beside the closed form. Nine 95% intervals
    of one seeded draw of 200 clips: each must cover its closed form once widened by half its width (a lone 95%
    interval misses 1 time in 20; the in-sample LPI bias ~2r / N_eff is far below the widths here)."""
    spec = GaussianLatentSpec(channels=16, frames=32, basis="permuted")
    result = analysis_vs_closed_form(spec, clips=200, window=64, permutations=4, bootstrap=100)
    assert set(result) == set(MEASURES)
    for name, row in result.items():
        half = 0.5 * (row["high"] - row["low"])
        assert row["low"] - half <= row["closed_form"] <= row["high"] + half, (name, row)
    lines = table(result)
    assert len(lines) == len(MEASURES) + 1 and "lpi_excess" in lines[6] and "[" in lines[6]
