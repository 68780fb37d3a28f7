"""The VAE stage's construction draws from the global RNG only for its parts' own inits (issue 27).

`make demo` seeds once and builds the VAE stage; every number it prints follows the global RNG stream from there.
Before the house refactor the stage also built a second OobleckVAE for its EMA (then overwritten by a copy of the
weights), whose init drew from that stream before the discriminator's init: the discriminator, and so every
number after it, changed when the EMA became a callback (docs/architecture.md, "Outputs before and after the house
refactor"). The reference here is the parts built directly, in the stage's order, under the same seed: the VAE,
the discriminator, and the spectral loss (auraloss's perceptual-weighting FIR filter is an nn.Conv1d: its random
init is drawn, then overwritten by the filter taps).
"""

from __future__ import annotations

import torch
from test_vae_stage import tiny_init_args

from lafa.models.discriminators import MultiScaleSTFTDiscriminator
from lafa.models.oobleck import OobleckVAE
from lafa.models.vae_losses import SpectralReconstructionLoss
from lafa.stages.vae import VaeStage


def _assert_same_weights(built: torch.nn.Module, reference: torch.nn.Module) -> None:
    got, want = built.state_dict(), reference.state_dict()
    assert got.keys() == want.keys()
    for name, tensor in want.items():
        assert torch.equal(got[name], tensor), name


def test_vae_stage_draws_only_its_parts_inits():
    args = tiny_init_args()  # the demo's VAE stage (configs/vae.yaml + configs/tiny/vae.yaml)
    torch.manual_seed(0)
    stage = VaeStage(**args)
    rng_after_stage = torch.random.get_rng_state()

    torch.manual_seed(0)
    vae = OobleckVAE(**stage.vae_kwargs)
    discriminator = MultiScaleSTFTDiscriminator(vae.io_channels, args["disc_filters"], tuple(args["disc_n_ffts"]),
                                                tuple(args["disc_hop_lengths"]), tuple(args["disc_win_lengths"]))
    SpectralReconstructionLoss(vae.sample_rate, tuple(args["stft_fft_sizes"]), tuple(args["stft_hop_sizes"]),
                               tuple(args["stft_win_lengths"]), args["perceptual_weighting"])
    rng_after_models = torch.random.get_rng_state()

    _assert_same_weights(stage.vae, vae)
    _assert_same_weights(stage.discriminator, discriminator)  # an extra draw before it would change these
    assert torch.equal(rng_after_stage, rng_after_models)  # and nothing else (the data order draws next)
