"""The locality study's controls: random rotations, the linear latent map, log-mel as an autoencoder."""

from __future__ import annotations

import math

import torch

from lafa.models.autoencoder import LinearLatentAutoencoder, VaeAutoencoder, random_rotation
from lafa.models.log_mel import LogMelAutoencoder
from lafa.models.oobleck import OobleckVAE


def test_random_rotation_is_orthogonal_seeded_and_haar_like() -> None:
    r = random_rotation(16, 3)
    assert torch.allclose(r @ r.T, torch.eye(16, dtype=torch.float64), atol=1e-12)
    assert torch.equal(r, random_rotation(16, 3)) and not torch.equal(r, random_rotation(16, 4))
    # Haar: every entry has mean 0 and variance 1/C; over 400 draws of 8x8 the mean of r_ij^2 is 1/8
    entries = torch.stack([random_rotation(8, s) for s in range(400)])
    assert abs(entries.square().mean().item() - 1 / 8) < 1e-12  # rows are unit vectors: exact
    assert abs(entries[:, 0, 0].mean().item()) < 4 * math.sqrt(1 / 8 / 400)  # no sign bias from QR


def test_linear_latent_autoencoder_maps_and_inverts() -> None:
    torch.manual_seed(0)
    vae = OobleckVAE(channels=4, c_mults=(1, 2), strides=(2, 4), latent_dim=8).eval()
    base = VaeAutoencoder(vae)
    a = random_rotation(8, 0) @ torch.diag(torch.linspace(0.5, 2.0, 8, dtype=torch.float64))
    mu = torch.randn(8, 1)
    ae = LinearLatentAutoencoder(base, a.float(), mu)
    audio = torch.randn(2, 2, 8 * 10)
    with torch.no_grad():
        z = base.encode(audio)
        latent = ae.encode(audio)
        expected = torch.einsum("ij,bjn->bin", a.float(), z - mu)
        assert torch.allclose(latent, expected, atol=1e-5)
        assert torch.allclose(ae.decode(latent), vae.decode(z), atol=1e-4)  # decode undoes the map exactly
        assert torch.equal(ae.encode_mean(audio), latent)
    assert (ae.latent_dim, ae.downsampling_ratio, ae.sample_rate) == (8, 8, 44100)


def test_log_mel_autoencoder_is_the_analysis_log_mel_and_decodes_to_audio() -> None:
    ae = LogMelAutoencoder(n_fft=512, hop_length=256, n_mels=16, griffin_lim_iters=4)
    t = torch.arange(256 * 40) / 44100
    audio = (0.3 * torch.sin(2 * torch.pi * 1000.0 * t))[None, None].expand(2, 2, -1).clone()
    z = ae.encode(audio)
    assert z.shape == (2, 16, 40)
    out = ae.decode(z)
    assert out.shape == (2, 2, 256 * 40) and torch.isfinite(out).all()
    # the pseudo-inverse of the filterbank reproduces the mel magnitudes it came from (up to the clip at 0)
    magnitude = z.exp() - ae.log_floor
    fb = ae.mel.mel.mel_scale.fb
    assert torch.allclose(fb.T @ (ae.inverse_fb @ magnitude), magnitude, rtol=1e-3, atol=1e-4)
    # Griffin-Lim's audio has the same mel energy where the tone is (the bin of 1 kHz)
    peak = z[0, :, 5:-5].mean(-1).argmax()
    assert ae.encode(out)[0, :, 5:-5].mean(-1).argmax() == peak
