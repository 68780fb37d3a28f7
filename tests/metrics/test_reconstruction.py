import math

import pytest
import torch

from lafa.metrics.reconstruction import ReconstructionMetrics

SR = 44100


@pytest.fixture(scope="module")
def metrics():
    return ReconstructionMetrics(SR)


def _signal(seed: int, n: int = 8192) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(n) / SR
    tone = torch.sin(2 * math.pi * 440 * t) + 0.1 * torch.randn(n, generator=g)
    return torch.stack([tone, 0.5 * tone])[None]  # (1, 2, n)


def test_identical_inputs_give_zero_distances(metrics):
    x = _signal(0)
    out = metrics(x, x.clone())
    assert out["stft_distance"] == pytest.approx(0.0, abs=1e-5)
    assert out["mel_distance"] == pytest.approx(0.0, abs=1e-5)
    assert out["si_sdr"] > 60


def test_si_sdr_is_scale_invariant_and_matches_its_definition(metrics):
    x = _signal(1)
    assert metrics(0.3 * x, x)["si_sdr"] > 60  # a scaled copy is a perfect estimate up to scale
    g = torch.Generator().manual_seed(2)
    noisy = x + 0.1 * torch.randn(x.shape, generator=g)
    # SI-SDR = 10 log10(|a s|^2 / |a s - e|^2), a = <e, s> / |s|^2, per channel (auraloss zero-means), averaged
    s, e = x[0] - x[0].mean(-1, keepdim=True), noisy[0] - noisy[0].mean(-1, keepdim=True)
    a = (e * s).sum(-1, keepdim=True) / (s * s).sum(-1, keepdim=True)
    direct = (10 * torch.log10((a * s).pow(2).sum(-1) / (a * s - e).pow(2).sum(-1))).mean()
    assert metrics(noisy, x)["si_sdr"] == pytest.approx(float(direct), abs=0.01)
    assert metrics(noisy, x)["stft_distance"] > 0.1


def test_padding_is_ignored(metrics):
    x, y = _signal(3), _signal(4)
    pad = 4096
    xp = torch.nn.functional.pad(x, (0, pad), value=0.0)
    yp = torch.nn.functional.pad(y, (0, pad), value=0.7)  # garbage in the padded region
    mask = torch.zeros(1, x.shape[-1] + pad, dtype=torch.bool)
    mask[:, : x.shape[-1]] = True
    unpadded = metrics(y, x)
    padded = metrics(yp, xp, sample_keep=mask)
    for key in unpadded:
        assert padded[key] == pytest.approx(unpadded[key], rel=1e-5, abs=1e-6)
    assert metrics(yp, xp)["si_sdr"] != pytest.approx(
        unpadded["si_sdr"], abs=0.1
    )  # without the mask it differs


def test_batch_average_and_shape_check(metrics):
    x, y = _signal(5), _signal(6)
    both = metrics(torch.cat([y, x]), torch.cat([x, x]))
    assert both["si_sdr"] == pytest.approx((metrics(y, x)["si_sdr"] + metrics(x, x)["si_sdr"]) / 2, rel=1e-5)
    with pytest.raises(ValueError, match="differ"):
        metrics(x, x[..., :-1])
