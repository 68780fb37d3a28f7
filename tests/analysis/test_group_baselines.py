"""Group-aware baselines (issue 22): block structure without order vs an order along the channel axis.

Constructed latents with a known answer: channels correlated within contiguous groups of 8 and independent
across groups (block-diagonal covariance, no order) beat random channel orders but not a shuffle of the groups'
order, nor a shuffle inside the groups; an AR(1) chain along the channels (Toeplitz covariance: a true order)
beats all three.
"""

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from lafa.analysis.controls import (
    GROUP_MEASURES,
    group_baseline_problem,
    group_permutations,
    locality_measures,
)
from lafa.analysis.latent_report import AnalysisSettings, analyze_maps, group_size_for, output_group_size
from lafa.models.lafa_encoder import LafaEncoder

C, G = 64, 8


def smooth_in_time(rng: np.random.Generator, shape: tuple, rho: float = 0.8) -> np.ndarray:
    """Unit-variance AR(1) along the last axis (so every map has a temporal spectrum to fit)."""
    e = rng.standard_normal(shape)
    x = np.empty_like(e)
    x[..., 0] = e[..., 0]
    for t in range(1, shape[-1]):
        x[..., t] = rho * x[..., t - 1] + math.sqrt(1 - rho**2) * e[..., t]
    return x


def block_latent(clips: int = 24, frames: int = 64, within: float = 0.7, seed: int = 0) -> list[torch.Tensor]:
    """Each group of G contiguous channels = one shared factor + own noise (correlation `within` inside a
    group, 0 across): covariance block-diagonal, and no channel closer to one member of its group than another."""
    rng = np.random.default_rng(seed)
    factors = smooth_in_time(rng, (clips, C // G, frames))
    noise = smooth_in_time(rng, (clips, C, frames))
    z = math.sqrt(within) * np.repeat(factors, G, axis=1) + math.sqrt(1 - within) * noise
    return list(torch.from_numpy(z))


def chain_latent(clips: int = 24, frames: int = 64, phi: float = 0.9, seed: int = 0) -> list[torch.Tensor]:
    """AR(1) along the channel axis: corr(c, c + k) = phi^k (Toeplitz), an order that crosses group edges."""
    rng = np.random.default_rng(seed)
    e = smooth_in_time(rng, (clips, C, frames))
    z = np.empty_like(e)
    z[:, 0] = e[:, 0]
    for c in range(1, C):
        z[:, c] = phi * z[:, c - 1] + math.sqrt(1 - phi**2) * e[:, c]
    return list(torch.from_numpy(z))


def measures(maps):
    return locality_measures(maps, window=64, permutations=20, bootstrap=0, group_size=G, seed=3)


def test_block_latent_beats_random_orders_but_not_the_group_baselines():
    m = measures(block_latent())
    for name in ("lpi", "alpha"):
        random_excess, random_std = m[f"{name}_excess"]["value"], m[f"{name}_permuted"]["std"]
        assert random_excess > 5 * random_std > 0  # the blocks look "local" against random orders
        assert m[f"{name}_excess"]["p_value"] == pytest.approx(1 / 21)
        for kind in ("group_order", "within_group"):
            excess, spread = m[f"{name}_{kind}_excess"]["value"], m[f"{name}_{kind}"]["std"]
            # ~0: within the baseline's own spread, and a small fraction of the random-order excess
            assert abs(excess) <= 3 * spread + 1e-12
            assert abs(excess) < 0.1 * random_excess
    assert m["lpi_excess"]["value"] > 0.2


def test_chain_latent_beats_all_three_baselines():
    m = measures(chain_latent())
    for name in ("lpi", "alpha"):
        for kind, excess_key in (("permuted", f"{name}_excess"), ("group_order", f"{name}_group_order_excess"),
                                 ("within_group", f"{name}_within_group_excess")):
            excess, spread = m[excess_key]["value"], m[f"{name}_{kind}"]["std"]
            assert excess > 5 * spread > 0, (name, kind, excess, spread)
            assert m[excess_key]["p_value"] == pytest.approx(1 / 21)
    # crossing a group boundary costs a chain less than losing the order inside the groups
    assert m["lpi_group_order_excess"]["value"] < m["lpi_within_group_excess"]["value"] < m["lpi_excess"]["value"]


def test_group_permutations_keep_the_groups():
    rng = np.random.default_rng(0)
    order = group_permutations(24, 4, 50, "group_order", rng)
    within = group_permutations(24, 4, 50, "within_group", rng)
    for p in order:
        blocks = p.reshape(6, 4)
        assert (np.diff(blocks, axis=1) == 1).all() and (blocks[:, 0] % 4 == 0).all()  # whole groups, own order
        assert sorted(blocks[:, 0] // 4) == list(range(6))
    assert any((p != np.arange(24)).any() for p in order)
    for p in within:
        blocks = p.reshape(6, 4)
        assert all(sorted(b) == list(range(4 * g, 4 * g + 4)) for g, b in enumerate(blocks))  # groups in place
    assert any((p != np.arange(24)).any() for p in within)


def test_group_baselines_are_left_out_where_they_do_not_apply():
    assert group_baseline_problem(64, 8) is None
    assert "does not divide" in group_baseline_problem(60, 8)
    assert "nothing to shuffle" in group_baseline_problem(8, 8)
    m = locality_measures(block_latent(clips=3)[:3], window=64, permutations=4, bootstrap=0, group_size=7)
    for name in GROUP_MEASURES:
        assert m[name]["value"] is None and "does not divide" in m[name]["note"]
    assert m["groups"] == {"size": 7, "source": "given", "count": None, "applies": False,
                           "note": "group size 7 does not divide 64 channels"}
    assert m["lpi_excess"]["value"] is not None  # the random baseline is still there


def test_group_size_comes_from_the_option_the_encoder_or_the_stated_default():
    assert group_size_for(AnalysisSettings()) == (8, "default (8: the LAFA encoder's output group at its defaults)")
    assert group_size_for(AnalysisSettings(), 16) == (16, "the encoder's output groups")
    assert group_size_for(AnalysisSettings(group_size=4), 16) == (4, "--analysis.group_size")
    assert group_size_for(AnalysisSettings(group_size=0), 16) == (None, "off")
    result = analyze_maps(block_latent(clips=3), AnalysisSettings(permutations=3, bootstrap=0), group_size=16)
    assert result["controls"]["groups"]["size"] == 16 and result["controls"]["groups"]["count"] == 4


def test_lafa_encoder_output_group_is_read_from_the_model_and_is_contiguous():
    """The size read from the encoder is the block its output heads write: zeroing head j's weights and setting
    its bias changes exactly output channels j*k .. (j+1)*k - 1."""
    torch.manual_seed(0)
    encoder = LafaEncoder(in_channels=16, out_channels=32, channel_group_size=4, dim=32, depth=1, heads=2).eval()
    k = output_group_size(SimpleNamespace(lafa=SimpleNamespace(encoder=encoder)))
    assert k == 8  # 16 input channels in groups of 4 -> 4 groups -> 32 / 4 output channels each
    z = torch.randn(1, 16, 5)
    with torch.no_grad():
        encoder.proj_out.weight[2].zero_()
        encoder.proj_out.bias[2].fill_(7.0)
        y = encoder(z)
    hit = torch.isclose(y, torch.tensor(7.0)).all(-1)[0]  # (32,) channels that are exactly the bias
    assert hit.nonzero().flatten().tolist() == list(range(2 * k, 3 * k))
    assert output_group_size(SimpleNamespace(latent_dim=64)) is None  # not a LAFA: the stated default applies


def test_a_lafa_autoencoder_reports_its_output_group_and_other_autoencoders_none():
    """The attribute path `lafa analyze` reads, on the real classes: LafaAutoencoder.lafa.encoder."""
    from lafa.models.autoencoder import LafaAutoencoder, LinearLatentAutoencoder
    from lafa.models.lafa import Lafa

    vae = SimpleNamespace(sample_rate=8000, io_channels=1, latent_dim=16, downsampling_ratio=16)
    lafa = Lafa(latent_channels=16, lafa_channels=16, channel_group_size=4, encoder_dim=16, encoder_depth=1,
                encoder_heads=2, decoder_dim=16, decoder_depth=1, decoder_heads=2)
    ae = LafaAutoencoder(vae, lafa)
    assert output_group_size(ae) == 4  # 16 -> 16 channels in groups of 4
    # a rotated LAFA latent mixes every channel: no grouping to keep, the stated default applies
    rotated = LinearLatentAutoencoder(ae, torch.eye(16))
    assert output_group_size(rotated) is None
