"""Ablation residuals against a decoder with known unused channels; figures decode and are not blank."""

import json

import numpy as np
import pytest
import torch
from analysis_doubles import FrameProjectionAutoencoder
from matplotlib.image import imread

from lafa.analysis.ablation import channel_ablation
from lafa.analysis.figures import ablation_figure, correlation_figure, psd_figure, save_figure
from lafa.analysis.latent_report import AnalysisSettings, analyze_maps, build_report, write_report
from lafa.models.log_mel import LogMel


def test_log_mel_shape_and_frame_rate():
    mel = LogMel(sample_rate=8000, n_fft=256, hop_length=64, n_mels=16)
    t = torch.arange(8000) / 8000
    tone = torch.sin(2 * torch.pi * 1000 * t).expand(1, 2, -1)
    out = mel(tone)
    assert out.shape == (1, 16, 8000 // 64)
    # a 1 kHz tone peaks in the mel bin whose centre is nearest 1 kHz
    centres = mel.mel.mel_scale.fb.argmax(dim=0) * 8000 / 256  # (n_mels,) peak frequency of each filter
    assert abs(centres[out[0, :, 10].argmax()] - 1000) < 200


def test_ablation_residual_zero_exactly_for_unused_channels():
    ae = FrameProjectionAutoencoder(latent_dim=8, ratio=16, used_channels=5)
    audio = torch.randn(2, 16 * 64, generator=torch.Generator().manual_seed(0))
    mel = LogMel(sample_rate=8000, n_fft=128, hop_length=16, n_mels=12)
    out = channel_ablation(ae, audio, mel, noise_std=0.1, reference="reconstruction", batch_size=3)
    assert out["residuals"].shape == (8, 12, 64)
    assert torch.all(out["energy"][5:] < 1e-5)  # the decoder ignores channels 5..7
    assert torch.all(out["energy"][:5] > 1e-2)
    gt = channel_ablation(ae, audio, mel, noise_std=0.1, reference="ground_truth", batch_size=8)
    # against the ground truth, an ignored channel's residual is the reconstruction's own residual
    torch.testing.assert_close(gt["residuals"][6], gt["baseline"], atol=1e-4, rtol=0)


class NoisyDecoder(FrameProjectionAutoencoder):
    """A stochastic decoder (as LAFA's flow decoder is): its output carries noise from the generator it is given,
    else from torch's global RNG."""

    def decode(self, latent, steps=None, generator=None):
        clean = super().decode(latent)
        return clean + 0.05 * torch.randn(clean.shape, generator=generator)


def test_ablation_of_a_stochastic_decoder_repeats_exactly_under_its_seed():
    """`lafa analyze` twice on the same checkpoint gave channel energies ~1e-3 apart: the flow decoder drew its noise
    from the global RNG. Every draw now comes from `seed`: the same seed repeats bit for bit whatever the global RNG,
    another seed differs."""
    ae = NoisyDecoder(latent_dim=6, ratio=16, used_channels=6)
    audio = torch.randn(2, 16 * 32, generator=torch.Generator().manual_seed(0))
    mel = LogMel(sample_rate=8000, n_fft=128, hop_length=16, n_mels=12)
    torch.manual_seed(1)
    first = channel_ablation(ae, audio, mel, batch_size=4, seed=3)
    torch.manual_seed(2)
    again = channel_ablation(ae, audio, mel, batch_size=4, seed=3)
    other = channel_ablation(ae, audio, mel, batch_size=4, seed=4)
    assert torch.equal(first["energy"], again["energy"]) and torch.equal(first["baseline"], again["baseline"])
    assert not torch.equal(first["energy"], other["energy"])


def png_is_drawn(path) -> bool:
    image = imread(path)
    return path.stat().st_size > 0 and image.ndim == 3 and float(image[..., :3].std()) > 0.01


def test_figures_written_and_not_blank(tmp_path):
    settings = AnalysisSettings(window=16, hop=16)
    g = torch.Generator().manual_seed(1)
    reps = {
        "smooth": analyze_maps([torch.randn(16, 64, generator=g).cumsum(0) for _ in range(3)], settings),
        "white": analyze_maps([torch.randn(16, 64, generator=g) for _ in range(3)], settings),
    }
    assert reps["smooth"]["lpi"] > reps["white"]["lpi"]
    assert reps["smooth"]["alpha"] > reps["white"]["alpha"]
    paths = [
        save_figure(psd_figure(reps), tmp_path / "psd.png"),
        save_figure(correlation_figure({k: {**r, "lam": settings.lam} for k, r in reps.items()}),
                    tmp_path / "corr.png"),
        save_figure(ablation_figure(np.random.default_rng(0).standard_normal((10, 8, 20)), "x"),
                    tmp_path / "ablation.png"),
    ]
    for p in paths:
        assert png_is_drawn(p), p
    report = write_report(build_report(reps, settings, {"note": "test"}), tmp_path / "report.json")


    loaded = json.loads(report.read_text())
    assert loaded["summary"]["white"]["lpi"] == pytest.approx(reps["white"]["lpi"])
    assert loaded["settings"]["lam"] == 0.06 and "torch" in loaded["versions"]
