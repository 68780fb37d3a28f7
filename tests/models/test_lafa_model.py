"""LAFA encoder, decoders, flow math, normaliser and LafaAutoencoder (paper Sec. 4.1, 4.3, Tables 6-7)."""

from __future__ import annotations

import pytest
import torch

from lafa.diffusion.objectives import masked_mse_pooled, noisy, target
from lafa.diffusion.samplers import euler, tensor_time_grid
from lafa.models.autoencoder import Autoencoder, LafaAutoencoder, VaeAutoencoder
from lafa.models.flow_decoder import FlowDecoder, VitDecoder
from lafa.models.lafa import Lafa, LatentNormalizer
from lafa.models.lafa_encoder import LafaEncoder
from lafa.models.oobleck import OobleckVAE

TINY = dict(encoder_dim=32, encoder_depth=2, encoder_heads=4, decoder_dim=32, decoder_depth=2, decoder_heads=4)


def _encoder(causal: bool, group: int = 4, channels: int = 16) -> LafaEncoder:
    torch.manual_seed(0)
    return LafaEncoder(channels, channels, group, dim=32, depth=2, heads=4, causal=causal).eval()


@pytest.mark.parametrize("j", [1, 2, 3])
def test_causal_channel_attention_hides_later_groups(j: int) -> None:
    """Changing channel group j leaves the outputs of groups < j unchanged, and changes group j's."""
    enc = _encoder(causal=True)
    z = torch.randn(2, 16, 10)
    z2 = z.clone()
    z2[:, 4 * j : 4 * (j + 1)] += torch.randn(2, 4, 10)
    with torch.no_grad():
        y, y2 = enc(z), enc(z2)
    assert torch.allclose(y[:, : 4 * j], y2[:, : 4 * j], atol=1e-6)
    assert not torch.allclose(y[:, 4 * j :], y2[:, 4 * j :], atol=1e-3)


def test_bidirectional_channel_attention_lets_later_groups_in() -> None:
    enc = _encoder(causal=False)
    z = torch.randn(2, 16, 10)
    z2 = z.clone()
    z2[:, 12:] += torch.randn(2, 4, 10)
    with torch.no_grad():
        assert not torch.allclose(enc(z)[:, :4], enc(z2)[:, :4], atol=1e-3)


def test_masking_a_group_also_respects_causality() -> None:
    """The mask flags of group j, like its values, reach no group < j."""
    enc = _encoder(causal=True)
    z = torch.randn(2, 16, 10)
    mask = torch.zeros(2, 16, dtype=torch.bool)
    mask2 = mask.clone()
    mask2[:, 9:11] = True
    with torch.no_grad():
        y, y2 = enc(z, mask), enc(z, mask2)
    assert torch.allclose(y[:, :8], y2[:, :8], atol=1e-6)
    assert not torch.allclose(y[:, 8:], y2[:, 8:], atol=1e-3)


def test_one_group_is_the_time_token_vit_where_causal_has_no_effect() -> None:
    """channel_group_size = C: one token per frame (Sec. 4.3 literally); no channel attention, causal inert."""
    a, b = _encoder(True, group=16), _encoder(False, group=16)
    assert a.groups == 1 and not a.causal
    assert all(blk.group_attn is None for blk in a.blocks)
    b.load_state_dict(a.state_dict())
    z = torch.randn(2, 16, 7)
    with torch.no_grad():
        assert torch.equal(a(z), b(z))


def test_masked_values_are_invisible_and_padding_is_ignored() -> None:
    enc = _encoder(causal=False)
    z = torch.randn(2, 16, 10)
    mask = torch.zeros(2, 16, dtype=torch.bool)
    mask[:, 3:9] = True
    z2 = z.clone()
    z2[:, 3:9] = 100.0  # a masked channel's content must not matter
    keep = torch.ones(2, 10, dtype=torch.bool)
    keep[:, 7:] = False
    z3 = z.clone()
    z3[..., 7:] = -50.0  # nor the content of padding frames, for the real ones
    with torch.no_grad():
        y = enc(z, mask, keep)
        assert torch.allclose(y, enc(z2, mask, keep), atol=1e-6)
        assert torch.allclose(y[..., :7], enc(z3, mask, keep)[..., :7], atol=1e-5)
        assert not torch.allclose(y, enc(z, None, keep), atol=1e-3)


def test_true_velocity_has_zero_loss() -> None:
    z0, noise, t = torch.randn(3, 8, 5), torch.randn(3, 8, 5), torch.rand(3)
    z_t, u = noisy(z0, noise, t, "rf"), target(z0, noise, t, "rf")
    expected = (1 - t)[:, None, None] * z0 + t[:, None, None] * noise  # Sec. 4.3 by hand
    assert torch.allclose(z_t, expected)
    assert masked_mse_pooled(noise - z0, u).item() == 0.0


@pytest.mark.parametrize("steps", [1, 2, 10])
def test_euler_with_exact_velocity_recovers_z0(steps: int) -> None:
    """For one data point the exact field is U(z, t) = (z - Z0) / t; Euler from t = 1 lands on Z0 for any k."""
    z0, noise = torch.randn(2, 8, 6, dtype=torch.float64), torch.randn(2, 8, 6, dtype=torch.float64)
    out = euler(lambda z, t: (z - z0) / t.view(-1, 1, 1), noise, tensor_time_grid(steps))
    assert torch.allclose(out, z0, atol=1e-12)
    # one step with the constant U = eps - Z0 recovers Z0 exactly
    assert torch.equal(euler(lambda z, t: noise - z0, noise, tensor_time_grid(1)), noise - (noise - z0))


def test_lafa_loss_of_an_oracle_decoder_is_zero() -> None:
    """Through Lafa.loss: a decoder that returns the true velocity (z_t - Z0) / t scores zero."""
    torch.manual_seed(0)
    lafa = Lafa(latent_channels=8, lafa_channels=8, channel_group_size=4, **TINY).double()
    z0 = torch.randn(3, 8, 6, dtype=torch.float64)

    class Oracle(torch.nn.Module):
        def forward(self, z_t, t, context, frame_keep=None):
            return (z_t - z0) / t.view(-1, 1, 1)

    lafa.decoder = Oracle()
    mask = lafa.masker(3)
    assert lafa.loss(z0, mask).item() < 1e-20


@pytest.mark.parametrize("site,decoder", [("input", "flow"), ("latent", "flow"), ("input", "vit")])
def test_lafa_trains_every_parameter_and_decodes(site: str, decoder: str) -> None:
    torch.manual_seed(0)
    lafa = Lafa(latent_channels=16, lafa_channels=8, channel_group_size=4, mask_site=site, decoder=decoder, **TINY)
    assert lafa.masker.channels == (16 if site == "input" else 8)
    z0 = torch.randn(2, 16, 9)
    keep = torch.ones(2, 9, dtype=torch.bool)
    keep[1, 6:] = False
    loss = lafa.loss(z0, lafa.masker(2), keep)
    loss.backward()
    assert torch.isfinite(loss)
    unused = [name for name, p in lafa.named_parameters() if p.grad is None]
    assert not unused  # DDP needs every parameter in the graph
    with torch.no_grad():
        y = lafa.encode(z0, keep)
        assert y.shape == (2, 8, 9)
        for steps in (1, 2, 10):
            assert lafa.decode(y, steps, keep).shape == (2, 16, 9)


def test_decoders_cross_attend_to_the_lafa_latent() -> None:
    torch.manual_seed(0)
    flow = FlowDecoder(8, 6, dim=32, depth=2, heads=4)
    torch.nn.init.normal_(flow.proj_out.weight)  # leave the zero init to see the output move
    vit = VitDecoder(8, 6, dim=32, depth=2, heads=4)
    z_t, t, h = torch.randn(2, 8, 5), torch.rand(2), torch.randn(2, 6, 5)
    with torch.no_grad():
        assert not torch.allclose(flow(z_t, t, h), flow(z_t, t, h + 1.0))
        assert not torch.allclose(flow(z_t, t, h), flow(z_t, t.flip(0) * 0.5, h))
        assert not torch.allclose(vit(h), vit(h + 1.0))


@pytest.mark.parametrize("mode", ["scalar", "channel"])
def test_normalizer_matches_direct_statistics(mode: str) -> None:
    torch.manual_seed(0)
    batches = [torch.randn(3, 4, 10) * torch.tensor([1.0, 2.0, 3.0, 4.0])[:, None] + 5.0 for _ in range(3)]
    keeps = [torch.ones(3, 10, dtype=torch.bool) for _ in range(3)]
    keeps[1][:, 6:] = False
    norm = LatentNormalizer(4, mode)
    for y, k in zip(batches, keeps, strict=True):
        norm.accumulate(y, k)
    norm.commit()
    values = torch.cat([y.transpose(1, 2)[k] for y, k in zip(batches, keeps, strict=True)])  # (n, C)
    if mode == "scalar":
        mean, std = values.mean(), values.std(unbiased=False)
        assert torch.allclose(norm.mean, mean.expand(4, 1)) and torch.allclose(norm.std, std.expand(4, 1))
    else:
        assert torch.allclose(norm.mean[:, 0], values.mean(0))
        assert torch.allclose(norm.std[:, 0], values.std(0, unbiased=False))
    assert norm.count.item() == values.numel()
    assert torch.allclose(norm.denormalize(norm.normalize(batches[0])), batches[0], atol=1e-5)
    with pytest.raises(ValueError, match="no latent values"):
        norm.commit()


def test_autoencoders_follow_the_interface() -> None:
    torch.manual_seed(0)
    vae = OobleckVAE(channels=4, c_mults=(1, 2), strides=(2, 4), latent_dim=8).eval()
    lafa = Lafa(latent_channels=8, lafa_channels=8, channel_group_size=4, **TINY).eval()
    lafa.normalizer.mean.fill_(0.5)
    lafa.normalizer.std.fill_(2.0)
    audio = torch.randn(2, 2, 8 * 12)
    plain, bottleneck = VaeAutoencoder(vae), LafaAutoencoder(vae, lafa)
    for ae in (plain, bottleneck):
        assert isinstance(ae, Autoencoder)
        assert (ae.sample_rate, ae.io_channels, ae.latent_dim, ae.downsampling_ratio) == (44100, 2, 8, 8)
    with torch.no_grad():
        assert torch.equal(plain.encode(audio), plain.engine.encode_mean(audio))  # CPU: the engine
        y = bottleneck.encode(audio)
        assert torch.allclose(y, (lafa.encode(vae.encode_mean(audio)) - 0.5) / 2.0, atol=1e-6)
        gen = torch.Generator().manual_seed(1)
        out = bottleneck.decode(y, steps=3, generator=gen)
        assert out.shape == audio.shape
        z0 = lafa.decode(y * 2.0 + 0.5, 3, generator=torch.Generator().manual_seed(1))
        assert torch.allclose(out, vae.decode(z0), atol=1e-6)


# ---- the LAFA latent as a latent: no absolute frame position, no shared-head periodicity, standardised input ----
LITERAL = dict(positions="absolute", output_heads="shared")  # the paper-literal reading (docs/lafa.md)


def _wide_encoder(seed: int = 0, **variant) -> LafaEncoder:
    torch.manual_seed(seed)
    return LafaEncoder(64, 64, 8, dim=64, depth=2, heads=4, **variant).eval()


@pytest.mark.parametrize("variant,equivariant", [({}, True), (LITERAL, False)])
def test_shifting_the_input_by_k_frames_shifts_y_by_k(variant: dict, equivariant: bool) -> None:
    """The same 12 real frames placed at frames 0..11 or k..k+11 of a 20-frame input (the rest padding): with
    rotary positions Y of the real frames is the same, shifted by k; with the added sinusoidal embedding it
    is not (so the test can fail)."""
    enc = _wide_encoder(**variant)
    z = torch.randn(2, 64, 12)
    for k in (1, 5, 8):
        a, b = torch.randn(2, 64, 20), torch.randn(2, 64, 20)  # padding content differs too
        a[..., :12], b[..., k : k + 12] = z, z
        keep_a, keep_b = torch.zeros(2, 20, dtype=torch.bool), torch.zeros(2, 20, dtype=torch.bool)
        keep_a[:, :12], keep_b[:, k : k + 12] = True, True
        with torch.no_grad():
            ya, yb = enc(a, None, keep_a)[..., :12], enc(b, None, keep_b)[..., k : k + 12]
        assert torch.allclose(ya, yb, atol=1e-4) == equivariant, (k, (ya - yb).abs().max())


@pytest.mark.parametrize("variant,constant", [({}, True), (LITERAL, False)])
def test_a_time_constant_input_gives_a_time_constant_latent(variant: dict, constant: bool) -> None:
    """No part of Y may depend on the absolute frame index: a latent that is the same at every frame encodes to
    a Y that is the same at every frame (with the literal frame embedding it varies along time)."""
    enc = _wide_encoder(**variant)
    z = torch.randn(3, 64, 1).expand(3, 64, 30)
    with torch.no_grad():
        y = enc(z)
    spread = (y - y[..., :1]).abs().max().item()
    assert (spread < 1e-4) == constant, spread


def _lag_correlation(y: torch.Tensor) -> dict[int, float]:
    """Mean |Pearson correlation| between channels c and c + lag over all (batch, frame) samples."""
    x = y.transpose(0, 1).reshape(y.shape[1], -1)
    x = (x - x.mean(1, keepdim=True)) / x.std(1, keepdim=True)
    r = x @ x.T / x.shape[1]
    return {lag: r.diagonal(lag).abs().mean().item() for lag in range(1, 17)}


@pytest.mark.parametrize("seed", [0, 1])
def test_no_shared_head_periodicity_at_init(seed: int) -> None:
    """White input, untrained encoder, 8 groups of 8 channels: with a head per group the lag-8 channel correlation
    of Y is no larger than the lag 1..7 ones; the shared head of the literal variant ties c to c + 8 (measured:
    |corr| 0.68 at lag 8 vs 0.14-0.31 at lags 1..7)."""
    z = torch.randn(8, 64, 64, generator=torch.Generator().manual_seed(seed + 10))
    with torch.no_grad():
        ours = _lag_correlation(_wide_encoder(seed)(z))
        literal = _lag_correlation(_wide_encoder(seed, **LITERAL)(z))
    near = lambda lags: sum(lags[k] for k in range(1, 8)) / 7  # noqa: E731
    assert ours[8] < 1.2 * near(ours), ours
    assert literal[8] > 2.0 * near(literal), literal  # the defect the default removes


def test_input_standardisation_makes_y_blind_to_the_vae_latent_scale() -> None:
    """With input_norm "channel", LAFA measures the VAE latent's per-channel mean/std once and sees the
    standardised latent: a per-channel affine change of the VAE latent (its statistics re-measured) leaves Y
    and the loss unchanged, and decode returns the VAE's own scale."""
    torch.manual_seed(0)
    lafa = Lafa(latent_channels=8, lafa_channels=8, channel_group_size=4, **TINY).double().eval()
    z = torch.randn(4, 8, 12, dtype=torch.float64)
    scale, shift = torch.linspace(0.1, 30.0, 8, dtype=torch.float64)[:, None], torch.arange(8.0).double()[:, None]
    assert lafa.needs_input_stats
    outputs = []
    for zz in (z, z * scale + shift):
        lafa.input_normalizer.reset()
        lafa.input_normalizer.accumulate(zz)
        lafa.input_normalizer.commit()
        gen = torch.Generator().manual_seed(3)
        with torch.no_grad():
            mask = lafa.masker(4, gen)
            outputs.append((lafa.encode(zz), lafa.loss(zz, mask, None, gen), zz))
    assert not lafa.needs_input_stats
    (y1, l1, _), (y2, l2, z2) = outputs
    assert torch.allclose(y1, y2, atol=1e-8) and torch.allclose(l1, l2, atol=1e-10)
    with torch.no_grad():  # an oracle-free check of the scale: the ViT path is deterministic
        vit = Lafa(latent_channels=8, lafa_channels=8, channel_group_size=4, decoder="vit", **TINY).double()
        vit.input_normalizer.load_state_dict(lafa.input_normalizer.state_dict())
        standard = vit.decoder(vit.context(vit.encode(z2)))
        assert torch.allclose(vit.decode(vit.encode(z2)), standard * z2.std(dim=(0, 2), unbiased=False)[:, None]
                              + z2.mean(dim=(0, 2))[:, None], atol=1e-8)
    literal = Lafa(latent_channels=8, lafa_channels=8, channel_group_size=4, input_norm="none", **TINY)
    assert not literal.needs_input_stats


# ---- padding masks (issue 13): a padded clip's real frames do not depend on its padding ---------------------------
def test_padded_clip_real_frames_are_unchanged_by_the_padding() -> None:
    """VaeAutoencoder and LafaAutoencoder.encode(audio, sample_keep): whatever the padding holds, the real frames
    are the same; and LAFA's part alone gives the real frames of the unpadded latent exactly."""
    torch.manual_seed(0)
    vae = OobleckVAE(channels=4, c_mults=(1, 2), strides=(2, 4), latent_dim=8).eval()
    lafa = Lafa(latent_channels=8, lafa_channels=8, channel_group_size=4, **TINY).eval()
    lafa.input_normalizer.accumulate(torch.randn(2, 8, 10) * 3 + 1)
    lafa.input_normalizer.commit()
    audio = torch.randn(2, 2, 8 * 20)
    mask = torch.ones(2, 8 * 20, dtype=torch.bool)
    mask[1, 8 * 13 :] = False  # clip 1: 13 real frames, 7 padding frames
    loud = audio.clone()
    loud[1, :, 8 * 13 :] = 50.0 * torch.randn(2, 8 * 7)  # other padding content
    plain, bottleneck = VaeAutoencoder(vae), LafaAutoencoder(vae, lafa)
    with torch.no_grad():
        for ae in (plain, bottleneck):
            a, b = ae.encode(audio, mask), ae.encode(loud, mask)
            assert torch.allclose(a, b, atol=1e-6)
        unmasked = bottleneck.encode(loud)  # without the mask the padding leaks into every real frame
        assert not torch.allclose(unmasked[1, :, :13], bottleneck.encode(loud, mask)[1, :, :13], atol=1e-3)
        z = vae.encode_mean(audio * mask[:, None])
        keep = mask[:, ::8]
        y_padded = lafa.encode(z, keep)[1, :, :13]
        y_alone = lafa.encode(z[1:, :, :13])[0]  # the same 13 frames with no padding at all
        assert torch.allclose(y_padded, y_alone, atol=1e-5)
