import numpy as np
import pytest
import torch

from lafa.metrics.passt import (
    NUM_CLASSES,
    PASST_SAMPLE_RATE,
    WINDOW,
    PasstTagger,
    build_passt,
    cut_windows,
    kl_divergence,
    load_passt_checkpoint,
    paired_kl,
    window_starts,
)

SR = PASST_SAMPLE_RATE


@pytest.mark.parametrize(
    "seconds, starts",
    [(10, [0]), (15, [0, 5]), (47, [0, 5, 10, 15, 20, 25, 30, 35, 40]), (3, [0]), (1, [0])],
)
def test_window_starts_follow_stabilitys_loop(seconds, starts):
    assert window_starts(int(seconds * SR)) == [s * SR for s in starts]


def test_windows_are_padded_only_above_one_and_a_half_seconds():
    n = 47 * SR
    audio = np.arange(1, n + 1, dtype=np.float32)
    windows = cut_windows(audio)
    assert [len(w) for w in windows] == [WINDOW] * 9
    assert (
        windows[-1][0] == 40 * SR + 1 and windows[-1][7 * SR - 1] == n and (windows[-1][7 * SR :] == 0).all()
    )
    assert [len(w) for w in cut_windows(np.ones(3 * SR, np.float32))] == [WINDOW]  # 3 s > 1.5 s: padded
    assert [len(w) for w in cut_windows(np.ones(SR, np.float32))] == [SR]  # 1 s: as it is
    assert all(w.dtype == torch.float32 for w in windows)


class RecordingNet(torch.nn.Module):
    """Logits that depend on each window's content, recording the windows it saw."""

    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Parameter(torch.linspace(-1, 1, NUM_CLASSES))
        self.seen = []

    def forward(self, x):
        self.seen.append(x.shape)
        return x.mean(dim=-1, keepdim=True) * 100 * self.proj


def test_tagger_averages_logits_over_windows_then_softmax():
    net = RecordingNet()
    g = torch.Generator().manual_seed(0)
    audio = torch.rand(2, 15 * 44100, generator=g)  # stereo 44.1 kHz, 15 s -> 2 windows at 32 kHz
    p = PasstTagger(net).probabilities(audio, 44100)
    assert net.seen == [(1, WINDOW), (1, WINDOW)]
    assert p.shape == (NUM_CLASSES,) and float(p.sum()) == pytest.approx(1.0)
    import librosa

    # the reference: librosa.load(sr=32000, mono=True) (down-mix, soxr_hq), then pyloudnorm's peak formula
    mono = librosa.resample(audio.mean(0).numpy(), orig_sr=44100, target_sr=SR, res_type="soxr_hq")
    mono = mono * (10 ** (-1 / 20) / np.abs(mono).max())
    means = [float(mono[s : s + WINDOW].mean()) for s in (0, 5 * SR)]
    expected = torch.softmax(torch.tensor(np.mean(means)) * 100 * net.proj.detach().double(), 0)
    torch.testing.assert_close(p, expected, rtol=1e-4, atol=1e-9)


def test_kl_matches_direct_computation():
    rng = np.random.default_rng(0)
    p, q = rng.dirichlet(np.ones(NUM_CLASSES)), rng.dirichlet(np.ones(NUM_CLASSES))
    p[3] = 0.0
    p /= p.sum()
    direct = sum(pi * (np.log(pi) - np.log(qi + 1e-6)) for pi, qi in zip(p, q, strict=True) if pi > 0)
    assert kl_divergence(torch.tensor(p), torch.tensor(q)) == pytest.approx(direct, rel=1e-10)
    torch_kl = torch.nn.functional.kl_div((torch.tensor(q) + 1e-6).log(), torch.tensor(p), reduction="sum")
    assert kl_divergence(torch.tensor(p), torch.tensor(q)) == pytest.approx(float(torch_kl), rel=1e-10)
    assert kl_divergence(torch.tensor(p), torch.tensor(p)) == pytest.approx(0.0, abs=1e-3)  # eps: ~ -527e-6


def test_paired_kl_uses_common_ids_in_both_directions():
    a, b = torch.tensor([0.7, 0.3]), torch.tensor([0.2, 0.8])
    out = paired_kl({"x": a, "y": b, "only_gen": a}, {"x": b, "y": b, "only_ref": a})
    assert out["paired_ids"] == 2
    assert out["value"] == pytest.approx((kl_divergence(a, b) + kl_divergence(b, b)) / 2)
    assert out["reverse_value"] == pytest.approx((kl_divergence(b, a) + kl_divergence(b, b)) / 2)
    assert (
        "generated || reference" in out["direction"] and "reference || generated" in out["reverse_direction"]
    )
    with pytest.raises(ValueError, match="no prompt id"):
        paired_kl({"a": a}, {"b": b})


@pytest.fixture(scope="module")
def passt_model():
    return build_passt(None, seed=0)  # the full ~86 M parameter network, built once


def test_bad_checkpoint_is_rejected(passt_model, tmp_path):
    path = tmp_path / "bad.pt"
    torch.save({"foo": torch.zeros(1)}, path)
    with pytest.raises(ValueError, match="does not fit"):
        load_passt_checkpoint(passt_model.net, path)


def test_passt_from_local_checkpoint_runs_end_to_end(passt_model, tmp_path):
    # a random state dict saved as the official checkpoint file is (plain state_dict), then loaded strictly
    g = torch.Generator().manual_seed(5)
    saved = {k: v + 0.01 * torch.randn(v.shape, generator=g) if v.is_floating_point() else v
             for k, v in passt_model.net.state_dict().items()}  # fmt: skip
    path = tmp_path / "passt-s-f128-p16-s10-ap.476-swa.pt"
    torch.save(saved, path)
    load_passt_checkpoint(passt_model.net, path)
    loaded = passt_model.net.state_dict()
    for key in ("patch_embed.proj.weight", "time_new_pos_embed", "head.1.weight"):
        torch.testing.assert_close(loaded[key], saved[key])
    assert not passt_model.training and not passt_model.mel.training
    tagger = PasstTagger(passt_model)
    clip = 0.1 * torch.randn(1, SR, generator=g)  # 1 s: one short window, as Stability feeds it
    p1, p2 = tagger.probabilities(clip, SR), tagger.probabilities(clip, SR)
    assert p1.shape == (NUM_CLASSES,) and float(p1.sum()) == pytest.approx(1.0)
    torch.testing.assert_close(p1, p2)  # eval mode: no random mel jitter or masking
