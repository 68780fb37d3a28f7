"""VAE training losses: zero / minimal on identical inputs, closed forms of hinge and feature matching."""

import torch

from lafa.models.discriminators import MultiScaleSTFTDiscriminator
from lafa.models.vae_losses import (
    SpectralReconstructionLoss,
    feature_matching_loss,
    hinge_discriminator_loss,
    hinge_generator_loss,
)

SMALL = dict(fft_sizes=(256, 64), hop_sizes=(64, 16), win_lengths=(256, 64))


def stereo(seed: int = 0, n: int = 4096) -> torch.Tensor:
    return 0.3 * torch.randn(2, 2, n, generator=torch.Generator().manual_seed(seed))


def test_spectral_terms_vanish_on_identical_inputs():
    loss = SpectralReconstructionLoss(**SMALL)
    x = stereo()
    for name, value in loss(x, x.clone()).items():
        assert abs(float(value)) < 1e-6, name
    assert all(float(v) > 0.1 for v in loss(stereo(1), x).values())


def test_sum_and_difference_ignores_a_channel_swap_per_channel_terms_do_not():
    """Swapping L and R keeps the sum and negates the difference: equal magnitudes, zero sum-and-difference loss."""
    loss = SpectralReconstructionLoss(**SMALL, perceptual_weighting=False)
    x = stereo()
    terms = loss(x.flip(1), x)
    assert abs(float(terms["stft_sum_diff"])) < 1e-5
    assert float(terms["stft_left"]) > 0.1 and float(terms["stft_right"]) > 0.1


def test_hinge_closed_forms():
    ones = [torch.ones(2, 1, 3, 4), torch.ones(2, 1, 5, 2)]
    assert float(hinge_discriminator_loss(ones, [-o for o in ones])) == 0.0  # confident and right: minimal
    zeros = [torch.zeros_like(o) for o in ones]
    assert float(hinge_discriminator_loss(zeros, zeros)) == 4.0  # (1 + 1) per scale, two scales
    fake = [torch.full((1, 1, 2, 2), 0.5), torch.full((1, 1, 2, 2), -2.0)]
    assert float(hinge_generator_loss(fake)) == 1.5  # -(0.5) - (-2)


def test_feature_matching_closed_form():
    real = [[torch.zeros(1, 2, 3, 3), torch.zeros(1, 2, 2, 2)], [torch.zeros(1, 2, 4, 1)]]
    fake = [[torch.full((1, 2, 3, 3), 1.0), torch.full((1, 2, 2, 2), 3.0)], [torch.full((1, 2, 4, 1), -0.5)]]
    assert float(feature_matching_loss(real, real)) == 0.0
    assert float(feature_matching_loss(real, fake)) == (1.0 + 3.0) / 2 + 0.5


def test_discriminator_shapes_and_identical_inputs():
    torch.manual_seed(0)
    disc = MultiScaleSTFTDiscriminator(in_channels=2, filters=4, n_ffts=(256, 64), hop_lengths=(64, 16),
                                       win_lengths=(256, 64))
    x = stereo(n=2048)
    logits, features = disc(x)
    assert len(logits) == 2 and all(len(f) == 5 for f in features)
    frames = (2048 - 256) // 64 + 1
    assert logits[0].shape == (2, 1, frames, 256 // 2 // 8 + 1)  # (B, 1, time, freq / 2^3 strided convs)
    assert features[0][0].shape == (2, 4, frames, 129)
    _, features_again = disc(x.clone())
    assert float(feature_matching_loss(features, features_again).detach()) == 0.0
    (hinge_generator_loss(logits) + feature_matching_loss(features, disc(stereo(2, 2048))[1])).backward()
    assert all(p.grad is not None for p in disc.parameters())
