"""`lafa analyze` of plain audio folders (no checkpoint: log-mel only) and of transformers codecs saved here."""

import json

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio

from lafa.analysis.latent_report import AnalysisSettings, analyze_maps
from lafa.analysis.locality import lpi
from lafa.audio import resample, to_channels
from lafa.commands.analyze import main
from lafa.errors import LafaUserError

FAST = ["--analysis.window", "8", "--analysis.hop", "8", "--analysis.permutations", "5", "--analysis.bootstrap", "20",
        "--mel.n_fft", "256", "--mel.hop_length", "64", "--mel.n_mels", "16", "--device", "cpu"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Nested folder: mono/stereo files at two rates, a corrupt FLAC, a fake WavPack, a text file."""
    root = tmp_path_factory.mktemp("music")
    (root / "album b").mkdir()
    rng = np.random.default_rng(0)
    for name, sr, ch, seconds in (("a.wav", 8000, 1, 1.0), ("album b/c d.flac", 16000, 2, 0.8),
                                  ("album b/e.ogg", 8000, 2, 1.2)):
        t = np.arange(int(sr * seconds)) / sr
        mono = 0.3 * np.sin(2 * np.pi * 440 * t * (1 + t)) + 0.02 * rng.standard_normal(len(t))
        sf.write(root / name, np.stack([mono * (0.5 + 0.5 * k) for k in range(ch)], 1).astype(np.float32), sr)
    (root / "album b" / "broken.flac").write_bytes(b"fLaC" + bytes(100))
    (root / "tune.wv").write_bytes(b"wvpk" + bytes(64))
    (root / "notes.txt").write_text("liner notes")
    return root


def direct_clips(root, sample_rate, channels, seconds):
    """Independent read: soundfile, lafa.audio conversion, crop."""
    clips = []
    for name in ("a.wav", "album b/c d.flac", "album b/e.ogg"):
        data, sr = sf.read(root / name, dtype="float32", always_2d=True)
        audio = resample(to_channels(torch.from_numpy(data.T.copy()), channels), sr, sample_rate)
        clips.append(audio[:, : round(seconds * sample_rate)])
    return clips


@pytest.mark.parametrize("mel_args", [[], ["--mel.power", "2", "--mel.log", "clamp"]])
def test_mel_only_analysis_of_a_folder(folder, tmp_path, mel_args, capsys):
    out = tmp_path / "out"
    assert main(["--audio", str(folder), "--out", str(out), "--sample_rate", "8000", "--seconds", "1.0",
                 *FAST, *mel_args]) == 0
    report = json.loads((out / "report.json").read_text())
    assert set(report["summary"]) == {"mel"}
    assert report["clips"] == ["a.wav", "album b/c d.flac", "album b/e.ogg"]
    reasons = {s["path"].rsplit("/", 1)[-1]: s["reason"] for s in report["skipped"]}
    assert set(reasons) == {"broken.flac", "tune.wv", "notes.txt"}
    assert reasons["broken.flac"].startswith("cannot decode") and reasons["tune.wv"].startswith("cannot decode")
    assert reasons["notes.txt"] == "not an audio file (.txt)"
    assert "skipped" in capsys.readouterr().out
    # the mel maps computed here with torchaudio directly: magnitude + log(x + 1e-5), or power + log(max(x, 1e-5))
    power, clamp = (2.0, True) if mel_args else (1.0, False)
    spec = torchaudio.transforms.MelSpectrogram(8000, n_fft=256, hop_length=64, n_mels=16, power=power)
    maps = []
    for clip in direct_clips(folder, 8000, 2, 1.0):
        m = spec(clip.mean(0))[:, : clip.shape[-1] // 64]
        maps.append(torch.log(m.clamp_min(1e-5)) if clamp else torch.log(m + 1e-5))
    direct = analyze_maps(maps, AnalysisSettings(window=8, hop=8, permutations=0, bootstrap=0))
    assert report["summary"]["mel"]["lpi"] == pytest.approx(direct["lpi"], abs=1e-6)
    assert report["summary"]["mel"]["alpha"] == pytest.approx(direct["alpha"], abs=1e-6)
    assert report["settings"]["mel"]["power"] == power


def test_folder_of_audio_given_as_shards_is_named(folder, tmp_path):
    with pytest.raises(LafaUserError, match="--audio"):
        main(["--data", str(folder), "--out", str(tmp_path)])


def save_codecs(root):
    from transformers import DacConfig, DacModel, EncodecConfig, EncodecModel

    torch.manual_seed(0)
    encodec = EncodecModel(EncodecConfig(sampling_rate=8000, audio_channels=2, num_filters=4, upsampling_ratios=[4, 4],
                                         hidden_size=16, codebook_size=32, num_lstm_layers=1, target_bandwidths=[5.0],
                                         codebook_dim=16))
    encodec.save_pretrained(root / "encodec_zero_codebooks")  # transformers initialises the codebooks to 0
    for layer in encodec.quantizer.layers:
        layer.codebook.embed.normal_()
    encodec.save_pretrained(root / "encodec_tiny")
    DacModel(DacConfig(encoder_hidden_size=4, downsampling_ratios=[2, 4], decoder_hidden_size=8, n_codebooks=3,
                       codebook_size=16, codebook_dim=4, hidden_size=12, sampling_rate=8000)).save_pretrained(root / "dac_tiny")


def test_random_weight_transformers_codecs_next_to_mel(folder, tmp_path):
    from transformers import DacModel, EncodecModel

    save_codecs(tmp_path)
    out = tmp_path / "out"
    # clips read at 16 kHz; each codec gets them resampled to its 8 kHz (and DAC down-mixed to mono)
    assert main(["--audio", str(folder), "--ckpt_path", str(tmp_path / "encodec_tiny"),
                 "--ckpt_path", str(tmp_path / "dac_tiny"), "--out", str(out), "--sample_rate", "16000",
                 "--seconds", "1.0", "--ablation_clips", "1", "--ablation_seconds", "0.25", *FAST]) == 0
    report = json.loads((out / "report.json").read_text())
    assert set(report["summary"]) == {"mel", "encodec_tiny", "dac_tiny"}
    assert report["settings"]["autoencoders"]["encodec_tiny"] == {
        "class": "TransformersCodec", "sample_rate": 8000, "io_channels": 2, "latent_dim": 16, "downsampling_ratio": 16}
    clips = direct_clips(folder, 16000, 2, 1.0)
    for name, cls, hop, channels in (("encodec_tiny", EncodecModel, 16, 2), ("dac_tiny", DacModel, 8, 1)):
        model = cls.from_pretrained(tmp_path / name).eval()
        latents = []
        with torch.no_grad():
            for clip in clips:
                x = resample(to_channels(clip, channels), 16000, 8000)
                latents.append(model.encoder(x[None, :, : x.shape[-1] // hop * hop])[0])
        rep = report["representations"][name]
        assert rep["samples"] == sum(z.shape[-1] for z in latents)
        assert rep["channels"] == latents[0].shape[0]
        assert report["summary"][name]["lpi"] == pytest.approx(lpi(latents), abs=1e-4)  # float32 latents
        assert len(report["ablation"][name][0]["energy"]) == rep["channels"]


def test_quantized_codec_latent(folder, tmp_path):
    from transformers import EncodecModel

    save_codecs(tmp_path)
    out = tmp_path / "out"
    assert main(["--audio", str(folder / "a.wav"), "--ckpt_path", str(tmp_path / "encodec_tiny"), "--label", "enc",
                 "--codec_latent", "quantized", "--out", str(out), "--ablation_clips", "0", *FAST]) == 0
    report = json.loads((out / "report.json").read_text())
    model = EncodecModel.from_pretrained(tmp_path / "encodec_tiny").eval()
    data, _ = sf.read(folder / "a.wav", dtype="float32", always_2d=True)
    x = to_channels(torch.from_numpy(data.T.copy()), 2)[None, :, :8000 // 16 * 16]
    with torch.no_grad():
        z = model.encoder(x)
        q = model.quantizer.decode(model.quantizer.encode(z, 5.0))[0]
    assert report["summary"]["enc"]["lpi"] == pytest.approx(lpi([q]), abs=1e-6)
    assert report["summary"]["enc"]["lpi"] != pytest.approx(lpi([z[0]]), abs=1e-6)


def test_a_constant_latent_is_named_not_analysed(folder, tmp_path):
    """Zero codebooks quantise every frame to 0: the user is told which representation, nothing is written."""
    save_codecs(tmp_path)
    with pytest.raises(LafaUserError, match="cannot analyse 'encodec_zero_codebooks': every channel is constant"):
        main(["--audio", str(folder / "a.wav"), "--ckpt_path", str(tmp_path / "encodec_zero_codebooks"),
              "--codec_latent", "quantized", "--out", str(tmp_path / "out"), *FAST])
    assert not (tmp_path / "out" / "report.json").exists()


def test_stable_audio_open_vae_file_next_to_mel(folder, tmp_path):
    """A VAE file in the official Stable Audio Open layout (a tiny Oobleck, random weights): read by path."""
    from lafa.checkpoints import save_vae_safetensors
    from lafa.models.oobleck import OobleckVAE

    torch.manual_seed(0)
    vae = OobleckVAE(channels=2, c_mults=(1, 2), strides=(2, 4), latent_dim=64).eval()
    save_vae_safetensors(vae, tmp_path / "model.safetensors")
    out = tmp_path / "out"
    assert main(["--audio", str(folder), "--ckpt_path", str(tmp_path / "model.safetensors"), "--label", "sao",
                 "--out", str(out), "--seconds", "0.3", "--ablation_clips", "0", "--listen_clips", "1", *FAST]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["settings"]["sample_rate"] == 44100  # the VAE's rate: the 8/16 kHz files are resampled
    with torch.no_grad():
        latents = [vae.encode_mean(c[None, :, : c.shape[-1] // 8 * 8])[0] for c in direct_clips(folder, 44100, 2, 0.3)]
    assert report["representations"]["sao"]["channels"] == 64
    assert report["summary"]["sao"]["lpi"] == pytest.approx(lpi(latents), abs=1e-4)
    assert len(report["audio"]["sao"]) == 1  # its reconstruction is on the page


def test_a_model_directory_that_is_no_audio_codec_is_named(folder, tmp_path):
    (tmp_path / "bert").mkdir()
    (tmp_path / "bert" / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(LafaUserError, match="model_type 'bert' is not an audio autoencoder"):
        main(["--audio", str(folder), "--ckpt_path", str(tmp_path / "bert"), "--out", str(tmp_path / "out")])
    with pytest.raises(LafaUserError, match="neither a checkpoint file nor a transformers model directory"):
        main(["--audio", str(folder), "--ckpt_path", str(tmp_path / "missing"), "--out", str(tmp_path / "out")])
