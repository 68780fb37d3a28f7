"""lafa.audio: decoding, channel conversion, resampling and levels against known signals."""

import math

import numpy as np
import pytest
import soundfile as sf
import torch

from lafa.audio import (
    AudioDecodeError,
    load_audio,
    peak_dbfs,
    peak_normalize,
    resample,
    save_audio,
    to_channels,
)


def _dominant_hz(x: torch.Tensor, sr: int) -> float:
    spec = torch.fft.rfft(x * torch.hann_window(x.shape[-1], periodic=False))
    return float(spec.abs().argmax()) * sr / x.shape[-1]


def test_resampling_keeps_a_sine_at_its_frequency() -> None:
    sr_in, sr_out, hz = 48000, 44100, 1000.0
    t = torch.arange(sr_in) / sr_in
    y = resample(torch.sin(2 * math.pi * hz * t)[None], sr_in, sr_out)
    assert y.shape[-1] == sr_out
    assert abs(_dominant_hz(y[0], sr_out) - hz) <= 1.0
    # amplitude is preserved away from the edges
    assert abs(float(y[0, 2000:-2000].abs().max()) - 1.0) < 0.01


def test_resampling_removes_content_above_the_new_nyquist() -> None:
    sr_in, sr_out = 96000, 44100
    t = torch.arange(sr_in) / sr_in
    y = resample(torch.sin(2 * math.pi * 30000.0 * t)[None], sr_in, sr_out)
    assert float(y[0, 2000:-2000].abs().max()) < 1e-2


def test_channel_conversion() -> None:
    mono = torch.randn(1, 100)
    assert torch.equal(to_channels(mono, 2), mono.expand(2, -1))
    six = torch.randn(6, 100)
    down = to_channels(six, 2)
    assert torch.allclose(down[0], six.mean(0)) and torch.allclose(down[1], six.mean(0))
    stereo = torch.randn(2, 100)
    assert to_channels(stereo, 2) is stereo
    assert torch.allclose(to_channels(stereo, 1)[0], stereo.mean(0))


@pytest.mark.parametrize("suffix", [".wav", ".flac", ".ogg"])
def test_round_trip_through_files(tmp_path, suffix) -> None:
    sr = 22050
    x = 0.5 * torch.sin(2 * math.pi * 440 * torch.arange(sr) / sr).repeat(2, 1)
    save_audio(tmp_path / f"a{suffix}", x, sr)
    y, sr_read = load_audio(tmp_path / f"a{suffix}")
    assert sr_read == sr and y.shape[0] == 2
    if suffix != ".ogg":  # lossless
        assert torch.allclose(y, x, atol=1e-4)


def test_corrupt_and_empty_files_raise_a_named_error(tmp_path) -> None:
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    with pytest.raises(AudioDecodeError, match="bad.wav"):
        load_audio(bad)
    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros((0, 2), dtype="float32"), 44100)
    with pytest.raises(AudioDecodeError, match="no samples"):
        load_audio(empty)


def test_levels() -> None:
    x = torch.tensor([[0.5, -0.25], [0.1, 0.0]])
    assert peak_dbfs(x) == pytest.approx(20 * math.log10(0.5))
    y = peak_normalize(x, -1.0)
    assert peak_dbfs(y) == pytest.approx(-1.0)
    assert torch.allclose(y[x != 0] / x[x != 0], (y[0, 0] / x[0, 0]).expand(int((x != 0).sum())))  # one gain
    assert peak_dbfs(torch.zeros(2, 4)) == float("-inf")
    assert torch.equal(peak_normalize(torch.zeros(2, 4)), torch.zeros(2, 4))


@pytest.mark.parametrize("fmt", ["WAV", "FLAC", "MP3", "OGG", "AIFF"])
def test_load_audio_complete_refuses_a_cut_off_file(tmp_path, fmt) -> None:
    from lafa.audio import TruncatedAudioError, load_audio_complete

    x = (0.3 * np.sin(np.arange(3 * 44100) * 0.05)).astype(np.float32)
    full = tmp_path / f"full.{fmt.lower()}"
    sf.write(full, x, 44100, format=fmt)
    audio, sr = load_audio_complete(full)
    ref, _ = load_audio(full)
    assert sr == 44100 and torch.equal(audio, ref)  # an intact file decodes exactly as load_audio does
    data = full.read_bytes()
    cut = tmp_path / f"cut.{fmt.lower()}"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(TruncatedAudioError, match="truncated|partly decodable"):
        load_audio_complete(cut)


@pytest.mark.parametrize("fmt", ["FLAC", "MP3", "OGG"])
def test_load_audio_complete_refuses_a_damaged_middle(tmp_path, fmt) -> None:
    from lafa.audio import TruncatedAudioError, load_audio_complete

    path = tmp_path / f"x.{fmt.lower()}"
    sf.write(path, (0.3 * np.sin(np.arange(3 * 44100) * 0.05)).astype(np.float32), 44100, format=fmt)
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 2000] = np.random.default_rng(0).integers(0, 256, 2000, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))
    with pytest.raises(TruncatedAudioError, match=r"of 3\.00 s|declares 3\.00 s"):  # both durations named
        load_audio_complete(path)


@pytest.mark.parametrize("c_in,channels", [(1, 2), (2, 2), (3, 2), (2, 1), (6, 2)])
@pytest.mark.parametrize("rates", [(48000, 44100), (22050, 44100), (44100, 44100), (16000, 48000)])
def test_convert_equals_resampling_the_converted_channels_and_resamples_fewer(c_in, channels, rates, monkeypatch):
    import lafa.audio as audio_module
    from lafa.audio import convert, resample, to_channels

    x = torch.randn(c_in, 4099, generator=torch.Generator().manual_seed(c_in))
    expected = resample(to_channels(x, channels), *rates)  # the order every reader used before
    rows = []
    monkeypatch.setattr(audio_module, "resample", lambda a, *r: rows.append(a.shape[0]) or resample(a, *r))
    got = convert(x, *rates, channels)
    assert got.shape == expected.shape and torch.equal(got, expected)  # bit-identical, not merely close
    assert rows == [min(c_in, channels)]  # mono is resampled once, then duplicated; a mix-down first
