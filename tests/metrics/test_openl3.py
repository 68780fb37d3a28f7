import h5py
import numpy as np
import pytest
import torch

from lafa.metrics import openl3
from lafa.metrics.openl3 import (
    N_FRAMES,
    OPENL3_SAMPLE_RATE,
    OpenL3Audio,
    OpenL3Embedder,
    SpectrogramFrontEnd,
    _max_pool_same,
    build_openl3,
    frame_windows,
    num_windows,
    slaney_mel_filterbank,
    weight_file_config,
)


def librosa_slaney_mel(sr: int, n_fft: int, n_mels: int) -> np.ndarray:
    """librosa.filters.mel(sr, n_fft, n_mels, htk=False, norm='slaney') written out directly: (n_mels, n_freq)."""
    f_sp, min_log_hz, min_log_mel, logstep = 200.0 / 3, 1000.0, 15.0, np.log(6.4) / 27.0

    def hz_to_mel(f):
        f = np.asarray(f, float)
        return np.where(
            f >= min_log_hz, min_log_mel + np.log(np.maximum(f, 1e-10) / min_log_hz) / logstep, f / f_sp
        )

    def mel_to_hz(m):
        return np.where(m >= min_log_mel, min_log_hz * np.exp(logstep * (m - min_log_mel)), f_sp * m)

    fftfreqs = np.linspace(0, sr / 2, 1 + n_fft // 2)
    mel_f = mel_to_hz(np.linspace(hz_to_mel(0.0), hz_to_mel(sr / 2), n_mels + 2))
    fdiff = np.diff(mel_f)
    ramps = mel_f[:, None] - fftfreqs[None, :]
    weights = np.zeros((n_mels, len(fftfreqs)))
    for i in range(n_mels):
        lower, upper = -ramps[i] / fdiff[i], ramps[i + 2] / fdiff[i + 1]
        weights[i] = np.maximum(0, np.minimum(lower, upper))
    return weights * (2.0 / (mel_f[2 : n_mels + 2] - mel_f[:n_mels]))[:, None]


def test_filterbank_matches_librosa_formula():
    ours = slaney_mel_filterbank().double().numpy().T
    ref = librosa_slaney_mel(48000, 2048, 256)
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-6)  # float32 at triangle edges


@pytest.mark.parametrize("fft", ["reference", "exact"])
def test_front_end_matches_direct_computation(fft):
    # both FFT modes compute the same procedure; they differ only in the rounding (visible in empty bands)
    rng = np.random.default_rng(1)
    x = rng.uniform(-0.5, 0.5, OPENL3_SAMPLE_RATE)
    x[:1000] = 0
    got = SpectrogramFrontEnd("mel256", fft)(torch.tensor(x, dtype=torch.float32)[None])[0, 0].double().numpy()
    assert got.shape == (256, N_FRAMES) == (256, 199)
    # pad_end, periodic Hann, |rfft|, slaney mel, dB minus the window maximum floored at -80
    padded = np.concatenate([x, np.zeros(198 * 242 + 2048 - len(x))])
    frames = np.stack([padded[i * 242 : i * 242 + 2048] for i in range(199)])
    hann = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(2048) / 2048)
    mag = np.abs(np.fft.rfft(frames * hann, axis=1))
    mel = mag @ librosa_slaney_mel(48000, 2048, 256).T  # (199, 256)
    db = 10 * np.log10(np.maximum(mel, 1e-10))
    ref = np.maximum(db - db.max(), -80.0).T
    np.testing.assert_allclose(got, ref, atol=2e-3)
    assert got.max() == 0.0 and got.min() >= -80.0


@pytest.mark.parametrize("fft", ["reference", "exact"])
def test_linear_front_end_matches_direct_computation(fft):
    # openl3's linear network: kapre STFT n_fft 512, hop 242, no padding -> 257 bins x 197 frames
    rng = np.random.default_rng(2)
    x = rng.uniform(-0.5, 0.5, OPENL3_SAMPLE_RATE)
    got = SpectrogramFrontEnd("linear", fft)(torch.tensor(x, dtype=torch.float32)[None])[0, 0].double().numpy()
    assert got.shape == (257, 197)
    frames = np.stack([x[i * 242 : i * 242 + 512] for i in range(197)])
    hann = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(512) / 512)
    db = 10 * np.log10(np.maximum(np.abs(np.fft.rfft(frames * hann, axis=1)), 1e-10))
    np.testing.assert_allclose(got, np.maximum(db - db.max(), -80.0).T, atol=2e-3)


@pytest.mark.parametrize(
    "input_repr, size, bins",
    [("mel256", 512, 256), ("mel256", 6144, 256), ("mel128", 512, 128), ("mel128", 6144, 128),
     ("linear", 512, 257), ("linear", 6144, 257)],
)  # fmt: skip
def test_every_openl3_configuration_has_its_shape(input_repr, size, bins):
    model = build_openl3(None, input_repr=input_repr, embedding_size=size)
    x = torch.randn(2, OPENL3_SAMPLE_RATE) * 0.1
    with torch.no_grad():
        assert model.frontend(x).shape[2] == bins
        assert model(x).shape == (2, size)


def test_embedding_pool_flattens_in_keras_order(monkeypatch):
    # 6144 = 512 channels x (4 x 3) pooled cells; Keras flattens (h, w, c): index (h * 3 + w) * 512 + c
    model = OpenL3Audio("mel256", 6144).eval()
    feature = {}
    pool = openl3._max_pool_same  # the last conv's output, as the inference path (folded convs) passes it on
    monkeypatch.setattr(openl3, "_max_pool_same", lambda x, size: pool(feature.setdefault("map", x), size))
    with torch.no_grad():
        emb = model(torch.randn(1, OPENL3_SAMPLE_RATE) * 0.1)[0]
    fmap = feature["map"][0]  # (512, 32, 24)
    for c, h, w in [(0, 0, 0), (5, 1, 2), (511, 3, 1)]:
        cell = fmap[c, 8 * h : 8 * h + 8, 8 * w : 8 * w + 8].max()
        assert emb[(h * 3 + w) * 512 + c] == cell


def test_same_padding_pool_matches_tensorflow_rule():
    # TF 'same': out = ceil(n / k), padding split with the extra cell after; -inf never wins
    x = torch.arange(1.0, 6.0).reshape(1, 1, 1, 5)  # width 5, pool 2 -> 3 outputs, pad 1 at the end
    assert _max_pool_same(x, (1, 2)).flatten().tolist() == [2.0, 4.0, 5.0]
    y = torch.arange(7.0).reshape(1, 1, 7, 1)  # height 7, pool 4 -> 2 outputs, pad 0 before / 1 after
    assert _max_pool_same(y, (4, 1)).flatten().tolist() == [3.0, 6.0]


@pytest.mark.parametrize(
    "name, config",
    [("openl3_audio_mel256_music-v0_4_0.h5", ("mel256", "music")), ("openl3_audio_mel256_env.h5", ("mel256", "env")),
     ("my_openl3_audio_mel128_env-v0_4_0.h5", ("mel128", "env"))],
)  # fmt: skip
def test_weight_file_config_reads_openl3_names(tmp_path, keras_file, name, config):
    path = tmp_path / name
    path.write_bytes(keras_file[0].read_bytes())
    assert weight_file_config(path) == config


def test_keras_file_maps_by_position(keras_file):
    path, weights = keras_file
    model = build_openl3(path)
    # a BN's moving statistics land in the torch module at the same position
    np.testing.assert_allclose(
        model.input_norm.running_mean.numpy(), weights["batch_normalization_1"]["moving_mean"], rtol=1e-6
    )
    np.testing.assert_allclose(
        model.norms[2].running_var.numpy(), weights["batch_normalization_4"]["moving_variance"], rtol=1e-6
    )
    np.testing.assert_allclose(
        model.norms[6].weight.detach().numpy(), weights["batch_normalization_8"]["gamma"], rtol=1e-6
    )
    np.testing.assert_allclose(
        model.convs[7].bias.detach().numpy(), weights["audio_embedding_layer"]["bias"], rtol=1e-6
    )
    # Keras (kh, kw, in, out) correlation equals the torch conv: check one output element directly
    kernel, bias = weights["conv2d_2"]["kernel"], weights["conv2d_2"]["bias"]
    x = torch.randn(1, 64, 5, 5)
    y = model.convs[1](x)[0].detach().numpy()
    o, h, w = 7, 2, 3
    direct = bias[o] + sum(
        float(x[0, i, h + a - 1, w + b - 1]) * kernel[a, b, i, o]
        for a in range(3)
        for b in range(3)
        for i in range(64)
    )
    assert y[o, h, w] == pytest.approx(direct, rel=1e-4, abs=1e-5)


def test_runs_end_to_end_with_512_per_window(keras_file):
    path, _ = keras_file
    model = build_openl3(path)
    windows = torch.randn(2, OPENL3_SAMPLE_RATE) * 0.1
    with torch.no_grad():
        emb = model(windows)
    assert emb.shape == (2, 512) and torch.isfinite(emb).all()
    # 0.4 s stereo at 44.1 kHz -> 1 window (centre padding), L and R concatenated
    embedder = OpenL3Embedder(model)
    left = torch.randn(17640) * 0.1
    out = embedder.embed(torch.stack([left, 0.3 * left]), 44100)
    assert out.shape == (1, 1024)
    # one gain for both channels: the right side is quieter, so its embedding differs from the left one
    assert not torch.allclose(out[:, :512], out[:, 512:])
    mono = embedder.embed(left[None], 44100)
    torch.testing.assert_close(mono[:, :512], mono[:, 512:])
    # the non-batched (mono) path embeds the down-mix and uses it for both sides
    mono_path = OpenL3Embedder(model, channel_mode="mono")
    down = mono_path.embed(torch.stack([left, 0.3 * left]), 44100)
    torch.testing.assert_close(down[:, :512], down[:, 512:])
    (signal,) = mono_path.clip_channels(torch.stack([left, 0.3 * left]), 44100)
    (direct,) = embedder.clip_channels((0.65 * left)[None], 44100)
    np.testing.assert_allclose(signal, direct, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="channel_mode"):
        OpenL3Embedder(model, channel_mode="left")


def test_wrong_file_layout_is_rejected(tmp_path):
    path = tmp_path / "bad.h5"
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = [b"conv2d_1"]
        g = f.create_group("conv2d_1")
        g.attrs["weight_names"] = [b"conv2d_1/kernel:0", b"conv2d_1/bias:0"]
        g.create_dataset("conv2d_1/kernel:0", data=np.zeros((3, 3, 1, 64), np.float32))
        g.create_dataset("conv2d_1/bias:0", data=np.zeros(64, np.float32))
    with pytest.raises(ValueError, match="cannot tell which OpenL3 model"):
        build_openl3(path)
    named = tmp_path / "openl3_audio_mel256_music.h5"
    named.write_bytes(path.read_bytes())
    with pytest.raises(ValueError, match="1 layers with weights"):
        build_openl3(named)


@pytest.mark.parametrize("seconds, expected", [(10, 20), (15, 30), (47, 94), (0.5, 1)])
def test_window_counts_as_openl3_frames_them(seconds, expected):
    # openl3 0.4.2 at hop 0.5 s: 1 + ceil((n + 24000 - 48000) / 24000) windows (Stability's settings)
    n = int(seconds * OPENL3_SAMPLE_RATE)
    assert num_windows(n) == expected
    audio = torch.arange(1, n + 1, dtype=torch.float64)
    windows = frame_windows(audio)
    assert windows.shape == (expected, OPENL3_SAMPLE_RATE)
    assert (windows[0, :24000] == 0).all() and windows[0, 24000] == 1  # centre padding
    if expected > 1:
        assert windows[1, 0] == 1 and windows[-1].max() == n  # the end is covered


def test_random_weights_are_deterministic_under_a_seed():
    a, b, c = build_openl3(None, seed=3), build_openl3(None, seed=3), build_openl3(None, seed=4)
    x = torch.randn(1, OPENL3_SAMPLE_RATE) * 0.1
    with torch.no_grad():
        assert torch.equal(a(x), b(x))
        assert not torch.equal(a(x), c(x))


def test_fft_mode_is_checked_and_recorded():
    with pytest.raises(ValueError, match="fft must be one of"):
        build_openl3(None, fft="tensorflow")
    assert build_openl3(None).frontend.fft == "reference"  # the reference's numbers by default
    assert build_openl3(None, fft="exact").frontend.fft == "exact"
