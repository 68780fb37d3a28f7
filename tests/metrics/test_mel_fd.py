import math

import numpy as np
import pytest
import torch

from lafa.audio import save_audio
from lafa.metrics.frechet import frechet_distance, gaussian_stats
from lafa.metrics.mel_fd import FD_MEL_LABEL, SETTINGS, fd_mel, log_mel_frames

SR = 44100


def _tone(freq: float, seconds: float = 1.0, sr: int = SR) -> torch.Tensor:
    t = torch.arange(int(seconds * sr)) / sr
    return (0.5 * torch.sin(2 * math.pi * freq * t))[None].repeat(2, 1)


def _noise(seed: int, seconds: float = 1.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return 0.3 * torch.randn(2, int(seconds * SR), generator=g)


def test_frames_have_the_configured_shape_and_peak_at_the_tone():
    feats = log_mel_frames(_tone(1000.0), SR)
    assert feats.shape == (1 + SR // SETTINGS["hop_length"], SETTINGS["n_mels"])
    # the loudest band holds 1 kHz: its slaney mel centre is the closest one to 1 kHz
    import torchaudio.functional as AF

    fb = AF.melscale_fbanks(
        SETTINGS["n_fft"] // 2 + 1, 0.0, SR / 2, SETTINGS["n_mels"], SR, "slaney", "slaney"
    )
    centres = fb.argmax(dim=0).float() * SR / SETTINGS["n_fft"]
    band = int(np.median(feats.argmax(axis=1)))
    assert abs(float(centres[band]) - 1000.0) < 150.0


def test_value_is_the_frechet_distance_of_pooled_frames():
    gen, ref = [_tone(440.0), _noise(0)], [_noise(1), _noise(2)]
    out = fd_mel(gen, ref, SR)
    fg = np.concatenate([log_mel_frames(c, SR) for c in gen])
    fr = np.concatenate([log_mel_frames(c, SR) for c in ref])
    expected = frechet_distance(*gaussian_stats(fg), *gaussian_stats(fr))
    assert out["value"] == pytest.approx(expected, rel=1e-9)
    assert out["metric"] == "fd_mel" and out["label"] == FD_MEL_LABEL
    assert "not FD_openl3" in out["label"]
    assert out["frames_generated"] == len(fg) and out["frames_reference"] == len(fr)


def test_same_distribution_is_closer_than_a_different_one():
    ref = [_noise(10), _noise(11), _noise(12)]
    same = fd_mel([_noise(20), _noise(21), _noise(22)], ref, SR)["value"]
    tones = fd_mel([_tone(300.0), _tone(2000.0), _tone(5000.0)], ref, SR)["value"]
    assert fd_mel(ref, ref, SR)["value"] == pytest.approx(0.0, abs=1e-6)
    assert 0 < same < tones / 100


def test_folders_and_resampling(tmp_path):
    clips = [_noise(30), _tone(880.0)]
    for i, c in enumerate(clips):
        save_audio(tmp_path / "a" / f"{i}.wav", c, SR, subtype="FLOAT")
        save_audio(tmp_path / "b" / f"{i}.wav", c, SR, subtype="FLOAT")
    from_dirs = fd_mel(tmp_path / "a", tmp_path / "b")
    assert from_dirs["value"] == pytest.approx(0.0, abs=1e-3)
    # a 48 kHz copy of the same audio is resampled to 44.1 kHz first
    import torchaudio.functional as AF

    at48 = [AF.resample(c, SR, 48000) for c in clips]
    assert fd_mel(at48, clips, 48000)["value"] < 0.05 * fd_mel([_tone(3000.0)] * 2, clips, SR)["value"]


def test_a_folder_is_read_one_clip_at_a_time_and_scores_as_its_clips(tmp_path, monkeypatch):
    """fd_mel of folders equals fd_mel of their clips; the folder reader holds one decoded clip at a time."""
    import lafa.metrics.mel_fd as mel_fd

    gen, ref = [_tone(440.0), _noise(0), _noise(3)], [_noise(1), _noise(2)]
    for name, clips in (("gen", gen), ("ref", ref)):
        (tmp_path / name).mkdir()
        for i, clip in enumerate(clips):
            save_audio(tmp_path / name / f"{i}.wav", clip, SR, subtype="FLOAT")
    live, peak = [], []
    real_load, real_frames = mel_fd.load_audio, mel_fd.log_mel_frames

    def load(path):
        live.append(path)
        peak.append(len(live))
        return real_load(path)

    def frames(clip, *args):
        live.pop()  # the clip is done with once its frames are computed
        return real_frames(clip, *args)

    monkeypatch.setattr(mel_fd, "load_audio", load)
    monkeypatch.setattr(mel_fd, "log_mel_frames", frames)
    from_folders = fd_mel(tmp_path / "gen", tmp_path / "ref", SR)
    assert max(peak) == 1 and not live
    monkeypatch.undo()
    gen, ref = ([mel_fd.load_audio(p)[0] for p in sorted((tmp_path / n).iterdir())] for n in ("gen", "ref"))
    assert from_folders["value"] == pytest.approx(fd_mel(gen, ref, SR)["value"], rel=1e-9)
