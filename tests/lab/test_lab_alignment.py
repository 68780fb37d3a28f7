"""The alignment of a channel covariance with the ideal ordered latent (lafa.lab.alignment) against its closed
forms and against sampled latents."""

import numpy as np
import pytest
import torch

from lafa.lab.alignment import alignment, alignment_permuted, alignment_white, channel_covariance, correlation
from lafa.lab.spec import GaussianLatentSpec


def ideal(channels=16):
    return GaussianLatentSpec(channels=channels, frames=16, basis="dct").channel_covariance


def test_identity_scale_and_reversal_invariance():
    k = ideal()
    assert alignment(k, k) == pytest.approx(1.0, abs=1e-12)
    scale = np.diag(np.linspace(0.2, 5.0, 16))  # each channel rescaled: correlations unchanged
    assert alignment(scale @ k @ scale, k) == pytest.approx(1.0, abs=1e-12)
    assert alignment(k[::-1, ::-1], k) == pytest.approx(1.0, abs=1e-12)  # the DCT axis read backwards


def test_white_reference_closed_form():
    k = ideal()
    assert alignment(np.eye(16), k) == pytest.approx(alignment_white(k), abs=1e-12)
    assert alignment_white(k) == pytest.approx(np.trace(correlation(k)) / (4.0 * np.linalg.norm(correlation(k))))


def test_permuted_expectation_equals_the_mean_over_many_random_orders():
    k = ideal()
    rng = np.random.default_rng(0)
    draws = [alignment(k[np.ix_(p, p)], k) for p in (rng.permutation(16) for _ in range(20000))]
    se = np.std(draws) / np.sqrt(len(draws))
    assert abs(np.mean(draws) - alignment_permuted(k)) < 4 * se
    # an exhaustive check on 4 channels: every one of the 24 orders
    from itertools import permutations

    small = ideal(4)
    exact = np.mean([alignment(small[np.ix_(p, p)], small) for p in map(list, permutations(range(4)))])
    assert alignment_permuted(small) == pytest.approx(exact, abs=1e-12)


@pytest.mark.parametrize("basis", ["dct", "rotated", "permuted"])
def test_sampled_latents_align_as_their_covariance_does(basis):
    spec = GaussianLatentSpec(channels=16, frames=16, basis=basis)
    z = spec.sample(4000, torch.Generator().manual_seed(0))
    cov = channel_covariance(z)
    assert alignment(cov, ideal()) == pytest.approx(alignment(spec.channel_covariance, ideal()), abs=0.01)
