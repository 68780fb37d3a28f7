"""LAFA encoder, decoders, flow math, normaliser and LafaAutoencoder (paper Sec. 4.1, 4.3, Tables 6-7)."""

from __future__ import annotations

import pytest
import torch

from lafa.models.autoencoder import Autoencoder, LafaAutoencoder, VaeAutoencoder
from lafa.models.flow_decoder import FlowDecoder, VitDecoder, euler_sample, flow_pair, masked_mse
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
    z_t, target = flow_pair(z0, noise, t)
    expected = (1 - t)[:, None, None] * z0 + t[:, None, None] * noise  # Sec. 4.3 by hand
    assert torch.allclose(z_t, expected)
    assert masked_mse(noise - z0, target).item() == 0.0


@pytest.mark.parametrize("steps", [1, 2, 10])
def test_euler_with_exact_velocity_recovers_z0(steps: int) -> None:
    """For one data point the exact field is U(z, t) = (z - Z0) / t; Euler from t = 1 lands on Z0 for any k."""
    z0, noise = torch.randn(2, 8, 6, dtype=torch.float64), torch.randn(2, 8, 6, dtype=torch.float64)
    out = euler_sample(lambda z, t: (z - z0) / t.view(-1, 1, 1), noise, steps)
    assert torch.allclose(out, z0, atol=1e-12)
    # one step with the constant U = eps - Z0 recovers Z0 exactly
    assert torch.equal(euler_sample(lambda z, t: noise - z0, noise, 1), noise - (noise - z0))


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
        assert torch.equal(plain.encode(audio), vae.encode_mean(audio))
        y = bottleneck.encode(audio)
        assert torch.allclose(y, (lafa.encode(vae.encode_mean(audio)) - 0.5) / 2.0, atol=1e-6)
        gen = torch.Generator().manual_seed(1)
        out = bottleneck.decode(y, steps=3, generator=gen)
        assert out.shape == audio.shape
        z0 = lafa.decode(y * 2.0 + 0.5, 3, generator=torch.Generator().manual_seed(1))
        assert torch.allclose(out, vae.decode(z0), atol=1e-6)
