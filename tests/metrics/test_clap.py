import numpy as np
import pytest
import torch

from lafa.audio import save_audio
from lafa.metrics.clap import (
    CLAP_SAMPLE_RATE,
    ClapScorer,
    clap_score,
    clap_waveform,
    int16_round_trip,
    write_random_clap,
)

SR = CLAP_SAMPLE_RATE


@pytest.fixture(scope="module")
def scorer(tmp_path_factory):
    return ClapScorer(write_random_clap(tmp_path_factory.mktemp("clap"), seed=0))


def test_int16_round_trip_truncates_like_laion_clap():
    x = np.array([0.5, -0.5, 1.5, -2.0, 1e-5], dtype=np.float32)
    expected = np.array([16383, -16383, 32767, -32767, 0]) / 32767.0
    np.testing.assert_allclose(int16_round_trip(x), expected, rtol=1e-6)


def test_waveform_is_mono_48k_peak_normalised():
    tone = torch.sin(2 * torch.pi * 440 * torch.arange(44100) / 44100)
    wav = clap_waveform(torch.stack([0.1 * tone, 0.3 * tone]), 44100)  # mono mix 0.2 tone
    assert (
        wav.shape == (SR + 1,) and wav.dtype == np.float32
    )  # librosa's length: ceil(44100 * 1.088...) = 48001
    # peak -1 dBFS after resampling
    assert float(np.abs(wav).max()) == pytest.approx(10 ** (-1 / 20), abs=1e-4)
    ref = 0.2 * np.sin(2 * np.pi * 440 * np.arange(SR) / SR)
    np.testing.assert_allclose(wav[2000:-2001] / float(np.abs(wav).max()), ref[2000:-2000] / 0.2, atol=2e-3)


def _clip(seed: int, seconds: float) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return 0.2 * torch.randn(1, int(seconds * SR), generator=g)


def test_short_clips_are_not_marked_longer(scorer):
    # transformers marks a random clip "longer" when none is; lafa uses the clip's own length like laion_clap
    wav = clap_waveform(_clip(0, 3.0), SR)
    emb = scorer.audio_embedding(wav, seed=0)
    features = scorer.processor.feature_extractor(wav, sampling_rate=SR, return_tensors="pt")
    assert bool(features["is_longer"].item())  # the transformers quirk
    with torch.no_grad():
        as_short = scorer.model.get_audio_features(
            input_features=features["input_features"], is_longer=torch.tensor([[False]])
        )
    torch.testing.assert_close(emb, as_short.pooler_output[0])


def test_fusion_crops_are_seeded(scorer):
    wav = clap_waveform(_clip(1, 12.0), SR)  # > 10 s: fused random crops
    state = np.random.get_state()
    a, b, c = scorer.audio_embedding(wav, 7), scorer.audio_embedding(wav, 7), scorer.audio_embedding(wav, 8)
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, c)
    assert np.array_equal(np.random.get_state()[1], state[1])  # numpy's global generator is left as it was


def test_clap_score_end_to_end(scorer, tmp_path):
    save_audio(tmp_path / "a.wav", _clip(2, 2.0), SR, subtype="FLOAT")
    clips = {"a": tmp_path / "a.wav", "b": (_clip(3, 11.0), SR), "c": (_clip(4, 1.0), SR)}  # a file or audio
    prompts = {"a": "a dog barks", "b": "rain on a tin roof", "z": "never generated"}
    out = clap_score(scorer, clips, prompts, seed=0)
    assert out["scored_ids"] == 2 and out["clips_without_prompt"] == 1
    # the mean of the unit-vector dot products of each pair, independent of the order clips are given in
    text = scorer.text_embeddings(["a dog barks", "rain on a tin roof"])
    assert torch.allclose(text.norm(dim=1), torch.ones(2), atol=1e-5)
    reordered = clap_score(scorer, dict(reversed(list(clips.items()))), prompts, seed=0)
    assert reordered["value"] == pytest.approx(out["value"], abs=1e-7)
    assert -1.0 <= out["value"] <= 1.0
    # a text's embedding does not depend on the batch it is padded in
    alone = scorer.text_embeddings(["a dog barks"])
    torch.testing.assert_close(alone[0], text[0], atol=1e-5, rtol=1e-5)


def test_missing_directory_is_reported(tmp_path):
    with pytest.raises(FileNotFoundError, match="no config.json"):
        ClapScorer(tmp_path)


def test_waveform_length_is_librosas():
    # 5.000 s at 44.1 kHz: 220500 * float(48000) / 44100 = 240000.00000000003 -> ceil 240001 in librosa,
    # which decides repeat-padding (480000 // 240001 == 1 copy, not 2); lafa keeps librosa's length
    tone = torch.sin(2 * torch.pi * 440 * torch.arange(220500) / 44100)[None]
    assert len(clap_waveform(tone, 44100)) == 240001
    assert len(clap_waveform(tone[:, :44100], 44100)) == 48001  # float ratio rounds up here too
    assert len(clap_waveform(tone[:, :22050], 48000)) == 22050  # no resampling at 48 kHz


def test_silent_clip_is_refused():
    with pytest.raises(ValueError, match="silent"):
        clap_waveform(torch.zeros(1, 48000), 48000)
