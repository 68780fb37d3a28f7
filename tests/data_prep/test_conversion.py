"""Decode -> 44.1 kHz stereo -> chunks, on signals whose answer is known in closed form."""

import math

import numpy as np
import soundfile as sf
import torch

from data_prep.process import ChunkSettings, SkipFile, chunk_bounds, chunk_metadata, decode, split_chunks


def _peak_frequency(x: np.ndarray, sr: int) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spec) * sr / len(x))


def test_sine_keeps_frequency_after_48k_to_44k1(tmp_path):
    sr, f0 = 48000, 1234.5
    t = np.arange(sr) / sr
    sf.write(tmp_path / "sine.wav", (0.5 * np.sin(2 * np.pi * f0 * t)).astype(np.float32), sr, subtype="FLOAT")
    audio = decode(tmp_path / "sine.wav", ChunkSettings())
    assert audio.shape == (2, 44100)  # one second at the new rate, mono duplicated
    assert torch.equal(audio[0], audio[1])
    assert abs(_peak_frequency(audio[0, 2000:-2000].numpy(), 44100) - f0) < 2.0
    ref = 0.5 * np.sin(2 * np.pi * f0 * np.arange(44100) / 44100)
    assert np.abs(audio[0, 2000:-2000].numpy() - ref[2000:-2000]).max() < 2e-3  # band-limited, same phase


def test_surround_is_downmixed_to_the_channel_mean(tmp_path):
    sr = 44100
    rng = np.random.default_rng(0)
    x = (0.1 * rng.standard_normal((sr // 2, 6))).astype(np.float32)  # 5.1
    sf.write(tmp_path / "surround.wav", x, sr, subtype="FLOAT")
    audio = decode(tmp_path / "surround.wav", ChunkSettings())
    assert audio.shape == (2, sr // 2)
    np.testing.assert_allclose(audio[0].numpy(), x.mean(1), atol=1e-6)
    np.testing.assert_allclose(audio[1].numpy(), x.mean(1), atol=1e-6)


def test_silent_and_corrupt_files_raise_skip(tmp_path):
    sf.write(tmp_path / "quiet.wav", np.full(4410, 10 ** (-70 / 20), np.float32), 44100, subtype="FLOAT")
    (tmp_path / "bad.wav").write_bytes(b"RIFF....WAVEfmt garbage")
    (tmp_path / "empty.flac").write_bytes(b"")
    for name, word in (("quiet.wav", "silent"), ("bad.wav", "unreadable"), ("empty.flac", "unreadable")):
        try:
            decode(tmp_path / name, ChunkSettings())
        except SkipFile as exc:
            assert word in str(exc)
        else:
            raise AssertionError(f"{name} was not skipped")


def test_chunk_boundaries_cover_the_file_and_keep_short_tails():
    assert chunk_bounds(100, 30, 5) == [(0, 30), (30, 60), (60, 90), (90, 100)]
    assert chunk_bounds(92, 30, 5) == [(0, 30), (30, 60), (60, 90)]  # a 2-sample tail is dropped
    assert chunk_bounds(3, 30, 5) == [(0, 3)]  # a short file is kept whole at its true length
    settings = ChunkSettings(chunk_seconds=1.0, min_tail_seconds=0.25)
    audio = torch.zeros(2, int(2.5 * 44100))
    audio[:, :44100] = 0.5  # first second loud, the rest silent
    audio[:, 2 * 44100:] = 0.5
    chunks, dropped = split_chunks(audio, settings)
    assert [a for a, _ in chunks] == [0, 2 * 44100] and [c.shape[-1] for _, c in chunks] == [44100, 22050]
    assert len(dropped) == 1 and "chunk 1" in dropped[0]


def test_timing_fields_follow_stable_audio():
    meta = chunk_metadata(offset=3 * 44100 + 7, length=44100, total=10 * 44100 + 1, sr=44100)
    assert meta["seconds_start"] == 3 and meta["seconds_total"] == 11
    assert meta["seconds_total"] == math.ceil((10 * 44100 + 1) / 44100)


def test_flac_encoding_through_int16_gives_libsndfiles_own_bytes():
    import io

    from data_prep.process import encode_flac

    rng = np.random.default_rng(0)
    x = np.concatenate([rng.uniform(-1.2, 1.2, (2, 20000)), np.array([[1.0, -1.0, 0.5 / 32768, 1.5 / 32768]] * 2)], 1)
    audio = torch.from_numpy(x.astype(np.float32))
    ref = io.BytesIO()
    sf.write(ref, audio.clamp(-1, 1).numpy().T, 44100, format="FLAC", subtype="PCM_16")  # libsndfile converts
    assert encode_flac(audio, ChunkSettings()) == ref.getvalue()
    assert encode_flac(audio.T.contiguous().T, ChunkSettings()) == ref.getvalue()  # a (S, C) buffer's view
    small = encode_flac(audio, ChunkSettings(flac_level=8))
    decoded, _ = sf.read(io.BytesIO(small), dtype="int16")
    assert np.array_equal(decoded, sf.read(io.BytesIO(ref.getvalue()), dtype="int16")[0])  # lossless at any level
