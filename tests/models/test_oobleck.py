"""The Oobleck VAE: shapes, the SAO configuration's size and key layout, SnakeBeta/KL closed forms, chunking."""

import math

import pytest
import torch

from lafa.models.oobleck import OobleckVAE, SnakeBeta, WNConv1d, vae_sample


def tiny(latent_dim: int = 8, **kw) -> OobleckVAE:
    torch.manual_seed(0)
    return OobleckVAE(channels=4, latent_dim=latent_dim, **kw).eval()


@pytest.mark.parametrize("latent_dim", [32, 64, 128])
def test_shapes_and_2048x_ratio(latent_dim):
    vae = tiny(latent_dim)
    assert vae.downsampling_ratio == 2048 and vae.io_channels == 2 and vae.sample_rate == 44100
    audio = torch.randn(2, 2, 3 * 2048)
    z, kl = vae.encode(audio)
    assert z.shape == (2, latent_dim, 3) and kl.ndim == 0
    assert vae.encode_mean(audio).shape == (2, latent_dim, 3)
    assert vae.decode(z).shape == (2, 2, 3 * 2048)


def test_sao_configuration_size_and_official_names():
    with torch.device("meta"):
        vae = OobleckVAE()
    n_enc = sum(p.numel() for p in vae.encoder.parameters())
    n_dec = sum(p.numel() for p in vae.decoder.parameters())
    assert abs((n_enc + n_dec) / 1e6 - 156.1) < 0.05  # stable_audio.md: about 156.1 M
    shapes = {k: tuple(v.shape) for k, v in vae.state_dict().items()}
    assert len(shapes) == 365  # sao_vae_keys.txt lists 365 VAE tensors
    # a sample of sao_vae_keys.txt (official names and shapes, prefix stripped)
    assert shapes["encoder.layers.0.weight_v"] == (128, 2, 7)
    assert shapes["encoder.layers.5.layers.4.weight_v"] == (2048, 1024, 16)
    assert shapes["encoder.layers.6.alpha"] == (2048,)
    assert shapes["encoder.layers.7.weight_v"] == (128, 2048, 3)
    assert shapes["decoder.layers.0.weight_v"] == (2048, 64, 7)
    assert shapes["decoder.layers.1.layers.1.weight_g"] == (2048, 1, 1)  # transposed conv: g is (in, 1, 1)
    assert shapes["decoder.layers.1.layers.1.bias"] == (1024,)
    assert shapes["decoder.layers.5.layers.1.weight_v"] == (128, 128, 4)
    assert shapes["decoder.layers.7.weight_g"] == (2, 1, 1)
    assert "decoder.layers.7.bias" not in shapes  # final conv has no bias


def test_snake_beta_closed_form():
    act = SnakeBeta(3)
    with torch.no_grad():
        act.alpha.fill_(math.log(2.0))
        act.beta.fill_(math.log(0.5))
    x = torch.linspace(-3, 3, 30).reshape(1, 3, 10)
    torch.testing.assert_close(act(x), x + 2.0 * torch.sin(2.0 * x) ** 2, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("transposed", [False, True])
def test_weight_norm_matches_torch_conv(transposed):
    torch.manual_seed(0)
    conv = WNConv1d(3, 5, 4, stride=2, padding=1, transposed=transposed)
    with torch.no_grad():
        conv.weight_g.mul_(1.7)
    w = conv.weight()
    torch.testing.assert_close(torch.linalg.vector_norm(w, dim=(1, 2)), conv.weight_g.flatten())
    x = torch.randn(2, 3, 16)
    ref_op = torch.nn.functional.conv_transpose1d if transposed else torch.nn.functional.conv1d
    torch.testing.assert_close(conv(x), ref_op(x, w, conv.bias, 2, 1))


def test_kl_closed_form():
    scale_for_unit_std = torch.full((2, 4, 5), math.log(math.expm1(1 - 1e-4)))  # softplus(s) + 1e-4 = 1
    _, kl = vae_sample(torch.zeros(2, 4, 5), scale_for_unit_std)
    assert abs(float(kl)) < 1e-5
    _, kl = vae_sample(torch.ones(2, 4, 5), scale_for_unit_std)
    torch.testing.assert_close(kl, torch.tensor(4.0))  # sum over 4 channels of mean^2, no 1/2


def test_sampling_encode_vs_mean():
    vae = tiny()
    audio = torch.randn(1, 2, 2 * 2048)
    mean = vae.encode_mean(audio)
    torch.testing.assert_close(vae.encode(audio, sample=False)[0], mean)
    z, _ = vae.encode(audio, sample=True)
    assert not torch.allclose(z, mean)  # the reference samples, even in eval mode


def test_chunked_matches_whole_clip():
    """With overlap wider than the receptive field, chunked output equals the whole-clip one (float tolerance)."""
    vae = tiny()
    torch.manual_seed(1)
    audio = torch.randn(1, 2, 60 * 2048)
    with torch.no_grad():
        whole = vae.encode_mean(audio)
        chunked = vae.encode_chunked(audio, chunk_size=40, overlap=20)
        torch.testing.assert_close(chunked, whole, rtol=1e-4, atol=1e-4)
        z = torch.randn(1, 8, 60)
        torch.testing.assert_close(vae.decode_chunked(z, chunk_size=40, overlap=20), vae.decode(z),
                                   rtol=1e-4, atol=1e-4)


def test_activation_checkpointing_same_gradients():
    audio = torch.randn(1, 2, 2048)
    grads = []
    for enabled in (False, True):
        vae = tiny().train()
        vae.set_checkpointing(enabled)
        loss = vae.decode(vae.encode_mean(audio)).square().mean()
        loss.backward()
        grads.append(vae.encoder.layers[0].weight_v.grad.clone())
    torch.testing.assert_close(grads[0], grads[1])
