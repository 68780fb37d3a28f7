"""lafa's FD_openl3, KL_PaSST and CLAP score against outputs of the reference code (tests/metrics/parity).

The fixtures were produced once by parity/make_fixtures.py running stable-audio-metrics' own modules on
openl3 0.4.2 / kapre 0.3.7 / TensorFlow 2.13.1 and hear21passt (README.md there); these tests need no TensorFlow.
Targets: per-file embeddings and probabilities within 1e-4 relative, end-to-end scores within 1e-3, at the
published 44.1 kHz evaluation rate too. There the 22.05-24 kHz band that OpenL3's 48 kHz STFT sees is empty and
what it holds is the rounding of TensorFlow's FFT (Eigen's, with a drifting float32 twiddle recurrence) on the
exact bits of the network input; lafa reproduces both bit for bit (eigen_fft.py, resampy 0.2.2's loop), and the
tests below check each piece against TensorFlow's recorded outputs before checking the embeddings.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

PARITY = Path(__file__).parent / "parity"
sys.path.insert(0, str(PARITY))
import clips  # noqa: E402
import make_fixtures  # noqa: E402

from lafa.metrics.caches import sha256_file  # noqa: E402
from lafa.metrics.clap import ClapScorer, clap_score, clap_waveform, write_random_clap  # noqa: E402
from lafa.metrics.eigen_fft import eigen_rfft, tensorflow_hann_window  # noqa: E402
from lafa.metrics.frechet import frechet_distance, gaussian_stats  # noqa: E402
from lafa.metrics.generation import evaluate_folders  # noqa: E402
from lafa.metrics.openl3 import (  # noqa: E402
    OpenL3Embedder,
    SpectrogramFrontEnd,
    build_openl3,
    slaney_mel_filterbank,
    weight_file_config,
)
from lafa.metrics.passt import PasstTagger, build_passt, paired_kl  # noqa: E402
from lafa.metrics.reference_audio import load_native  # noqa: E402

FIX = dict(np.load(PARITY / "fixtures.npz", allow_pickle=False))
EMBEDDING_RTOL, SCORE_RTOL = 1e-4, 1e-3


def report(name: str, value) -> None:
    """Print a parity figure (pytest -s shows them; docs/metrics.md quotes them)."""
    print(f"PARITY {name}: {value}")


def rel(ours: np.ndarray, ref: np.ndarray) -> float:
    """||ours - ref|| / ||ref|| (Frobenius), the relative difference the parity table reports."""
    ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    assert ours.shape == ref.shape, (ours.shape, ref.shape)
    return float(np.linalg.norm(ours - ref) / np.linalg.norm(ref))


def _write_and_check(folder: Path, specs, recorded: str) -> Path:
    hashes = clips.write_clips(folder, specs)
    expected = json.loads(recorded)
    assert {k: expected[k] for k in hashes} == hashes, "the seeded clips differ from those the reference saw"
    return folder


@pytest.fixture(scope="module")
def sets(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("parity")
    recorded = str(FIX["clip_sha256"])
    return (
        _write_and_check(root / "generated", clips.GENERATED, recorded),
        _write_and_check(root / "reference", clips.REFERENCE, recorded),
    )


def openl3_file(folder: Path, input_repr: str = "mel256") -> Path:
    """The random-weight file as Keras wrote it, named as openl3 names model files (front-end layer to match)."""
    layers = clips.openl3_weights()
    assert clips.weights_sha256(layers) == str(FIX["openl3_weights_sha256"])
    layout = json.loads(str(FIX["openl3_keras_layout"]))
    if input_repr == "linear":  # openl3's linear network saves its kapre front end as stft_magnitude
        layout["layers"] = [
            [("stft_magnitude" if n == "melspectrogram" else n), w] for n, w in layout["layers"]
        ]
    folder.mkdir(parents=True, exist_ok=True)
    return clips.write_openl3_file(folder / f"openl3_audio_{input_repr}_music.h5", layout, layers)


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    return openl3_file(tmp_path_factory.mktemp("openl3"))


@pytest.fixture(scope="module")
def stereo_run(sets, weights, tmp_path_factory) -> tuple[dict, dict[str, np.ndarray]]:
    """`evaluate_folders` on the 44.1 kHz sets (stereo path, defaults) and the per-file embeddings it cached."""
    cache = tmp_path_factory.mktemp("l3_cache")
    result = evaluate_folders(
        sets[0], sets[1], openl3_weights=str(weights), content_type="music", device="cpu",
        embedding_cache=str(cache),
    )  # fmt: skip
    embeddings = {}
    for p in sorted(p for s in sets for p in s.glob("*.wav")):
        (entry,) = cache.glob(f"*-{sha256_file(p)}.npy")
        embeddings[p.stem] = np.load(entry)
    return result, embeddings


@pytest.fixture(scope="module")
def stereo_embeddings(stereo_run) -> dict[str, np.ndarray]:
    return stereo_run[1]


@pytest.fixture(scope="module")
def mono_embeddings(sets, weights) -> dict[str, np.ndarray]:
    embedder = OpenL3Embedder(build_openl3(weights), channel_mode="mono")
    return {p.stem: embedder.embed_file(p).numpy() for s in sets for p in sorted(s.glob("*.wav"))}


def test_openl3_broadband_48k_embeddings_and_fd(tmp_path, weights):
    recorded = str(FIX["clip_sha256_48k"])
    gen = _write_and_check(tmp_path / "g", clips.GENERATED_48K, recorded)
    ref = _write_and_check(tmp_path / "r", clips.REFERENCE_48K, recorded)
    embedder = OpenL3Embedder(build_openl3(weights), eval_sample_rate=48000)
    emb = {p.stem: embedder.embed_file(p).numpy() for s in (gen, ref) for p in sorted(s.glob("*.wav"))}
    diffs = {n: rel(e, FIX[f"l3_48k_{n}"]) for n, e in emb.items()}
    report("openl3 48k per-file max", max(diffs.values()))
    assert max(diffs.values()) < EMBEDDING_RTOL, diffs
    stats = [
        gaussian_stats(np.concatenate([emb[n] for n, *_ in specs]))
        for specs in (clips.GENERATED_48K, clips.REFERENCE_48K)
    ]
    fd = frechet_distance(*stats[0], *stats[1])
    report("fd_openl3 48k (lafa, ref, rel)", (fd, float(FIX["fd_openl3_48k"]), rel(fd, FIX["fd_openl3_48k"])))
    assert rel(fd, FIX["fd_openl3_48k"]) < SCORE_RTOL, (fd, float(FIX["fd_openl3_48k"]))


def _reference_windows(embedder: OpenL3Embedder, folder: Path) -> dict[str, np.ndarray]:
    """{"<clip>_<side>": (N, 48000)} the 48 kHz windows lafa feeds the network, for every clip in folder."""
    out = {}
    for p in sorted(folder.glob("*.wav")):
        for side, signal in zip("LR", embedder.clip_channels(*load_native(p)), strict=False):
            out[f"{p.stem}_{side}"] = embedder.channel_windows(signal).numpy()
    return out


@pytest.fixture(scope="module")
def windows(sets) -> dict[str, np.ndarray]:
    embedder = OpenL3Embedder(build_openl3(None))
    return {k: v for folder in sets for k, v in _reference_windows(embedder, folder).items()}


def test_openl3_inputs_equal_reference_bit_for_bit_at_44k(windows):
    # what openl3 0.4.2 feeds its network (soxr to 44.1 kHz, resampy 0.2.2 kaiser_best to 48 kHz, centring,
    # framing), per clip and side: the same bits, not only close ones (the empty band's FFT rounding follows
    # the last bits of the input; resampy >= 0.3's loop differs there in about half of the samples)
    recorded = json.loads(str(FIX["l3_input_sha256"]))
    assert sorted(recorded) == sorted(windows)
    for key, x in windows.items():
        np.testing.assert_array_equal(x[:, ::97], FIX[f"l3_input_{key}"], err_msg=key)
        assert hashlib.sha256(np.ascontiguousarray(x).tobytes()).hexdigest() == recorded[key], key
    report("openl3 44.1k network inputs", f"{len(windows)} clip sides bit-identical")


def test_tensorflow_stft_pieces_bit_for_bit():
    # tf.signal.hann_window (Eigen's float32 cos), tf.signal.rfft (Eigen's TensorFFT) and kapre's filterbank
    for n in (512, 2048):
        np.testing.assert_array_equal(tensorflow_hann_window(n).numpy(), FIX[f"tf_hann_{n}"])
        assert not np.array_equal(torch.hann_window(n).numpy(), FIX[f"tf_hann_{n}"])  # they do differ
        frames = torch.from_numpy(make_fixtures.rfft_frames(n))
        re, im = eigen_rfft(frames)
        np.testing.assert_array_equal(re.numpy(), FIX[f"tf_rfft_{n}_re"])
        np.testing.assert_array_equal(im.numpy(), FIX[f"tf_rfft_{n}_im"])
        # TensorFlow's FFT is the less accurate one: against float64, ~40x torch's error on white noise
        tf_spec = FIX[f"tf_rfft_{n}_re"] + 1j * FIX[f"tf_rfft_{n}_im"]
        exact = np.fft.rfft(frames.double().numpy())
        ours = torch.fft.rfft(frames).numpy()
        tf_err, torch_err = (np.abs(v[0] - exact[0]).max() / np.abs(exact[0]).max() for v in (tf_spec, ours))
        report(f"white-noise FFT error, n={n} (tensorflow, torch)", (tf_err, torch_err))
        assert tf_err > 5 * torch_err
    for n_mels in (128, 256):
        fb = slaney_mel_filterbank(n_mels=n_mels).numpy()
        assert hashlib.sha256(fb.tobytes()).hexdigest() == str(FIX[f"kapre_filterbank_{n_mels}_sha256"])


@pytest.mark.parametrize("input_repr, name, side, index", make_fixtures.FRONT_END_WINDOWS)
def test_front_end_matches_kapre_layer_by_layer(tmp_path, windows, input_repr, name, side, index):
    key = f"front_end_{input_repr}_{name}{side}{index}"
    x = torch.from_numpy(windows[f"{name}_{side}"][index : index + 1])
    with torch.no_grad():
        db = {fft: SpectrogramFrontEnd(input_repr, fft)(x)[0, 0].numpy() for fft in ("reference", "exact")}
    assert db["reference"].shape == tuple(FIX[f"{key}_shape"])
    ref = FIX[f"{key}_db"]
    diff = {fft: np.abs(v.reshape(-1)[::6] - ref).max() for fft, v in db.items()}
    report(f"openl3 front end {key} max |dB diff| (reference, exact fft)", (diff["reference"], diff["exact"]))
    assert diff["reference"] < 2e-3  # float32 log and matmul order; the FFT, window and filterbank are exact
    assert diff["exact"] > 1.0  # an accurate FFT misses the reference's rounding in the empty band by dBs
    model = build_openl3(openl3_file(tmp_path, input_repr), input_repr=input_repr)
    with torch.no_grad():
        emb = model(x)[0].numpy()
    report(f"openl3 {key} embedding", rel(emb, FIX[f"{key}_embedding"]))
    assert rel(emb, FIX[f"{key}_embedding"]) < 1e-5


def test_openl3_per_file_embeddings_stereo_path(stereo_embeddings):
    diffs = {n: rel(e, FIX[f"l3_stereo_{n}"]) for n, e in stereo_embeddings.items()}
    report("openl3 44.1k stereo per-file", diffs)
    assert max(diffs.values()) < EMBEDDING_RTOL, diffs


def test_openl3_per_file_embeddings_mono_path(mono_embeddings):
    diffs = {n: rel(e, FIX[f"l3_mono_{n}"]) for n, e in mono_embeddings.items()}
    report("openl3 44.1k mono per-file", diffs)
    assert max(diffs.values()) < EMBEDDING_RTOL, diffs
    # the two paths really differ on stereo files (the reason the path is named), and agree on mono ones
    assert rel(FIX["l3_mono_g0"], FIX["l3_stereo_g0"]) > 1e-2
    np.testing.assert_allclose(FIX["l3_mono_g2"], FIX["l3_stereo_g2"], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("input_repr, size", make_fixtures.OTHER_CONFIGS)
def test_openl3_other_configurations(tmp_path, sets, input_repr, size):
    path = openl3_file(tmp_path, input_repr)
    assert weight_file_config(path) == (input_repr, "music")
    embedder = OpenL3Embedder(build_openl3(path, input_repr=input_repr, embedding_size=size))
    ours = embedder.embed_file(sets[0] / f"{make_fixtures.OTHER_CLIP}.wav").numpy()
    ref = FIX[f"l3_{input_repr}_{size}_{make_fixtures.OTHER_CLIP}"]
    assert ours.shape == ref.shape == (3, 2 * size)
    report(f"openl3 {input_repr}/{size} 44.1k", rel(ours, ref))
    assert rel(ours, ref) < EMBEDDING_RTOL


def test_fd_openl3_end_to_end_stereo(stereo_run):
    fd = stereo_run[0]["metrics"]["fd_openl3"]
    assert fd["settings"]["channel_mode"] == "stereo" and "stereo" in fd["label"]
    report(
        "fd_openl3 44.1k stereo (lafa, ref, rel)",
        (fd["value"], float(FIX["fd_openl3_stereo"]), rel(fd["value"], FIX["fd_openl3_stereo"])),
    )
    assert fd["settings"]["fft"].startswith("reference")
    assert rel(fd["value"], FIX["fd_openl3_stereo"]) < SCORE_RTOL, (
        fd["value"],
        float(FIX["fd_openl3_stereo"]),
    )


def test_fd_openl3_mono_path(mono_embeddings):
    stats = [
        gaussian_stats(np.concatenate([mono_embeddings[n] for n, *_ in specs]))
        for specs in (clips.GENERATED, clips.REFERENCE)
    ]
    fd = frechet_distance(*stats[0], *stats[1])
    report(
        "fd_openl3 44.1k mono (lafa, ref, rel)",
        (fd, float(FIX["fd_openl3_mono"]), rel(fd, FIX["fd_openl3_mono"])),
    )
    assert rel(fd, FIX["fd_openl3_mono"]) < SCORE_RTOL, (fd, float(FIX["fd_openl3_mono"]))


def test_wrong_openl3_file_is_refused(tmp_path, weights):
    # the mel256 file renamed to mel128 still says "melspectrogram" but loads into a 128-mel network only if
    # asked for mel128; asked for the paper's mel256 it is refused, as is a mel file named linear
    renamed = tmp_path / "openl3_audio_mel128_music.h5"
    shutil.copy(weights, renamed)
    with pytest.raises(ValueError, match="mel128/music model; mel256/music was asked for"):
        build_openl3(renamed)
    shutil.copy(weights, tmp_path / "openl3_audio_linear_music.h5")
    with pytest.raises(ValueError, match="front-end layer is"):
        build_openl3(tmp_path / "openl3_audio_linear_music.h5", input_repr="linear")
    shutil.copy(weights, tmp_path / "weights.h5")
    with pytest.raises(ValueError, match="cannot tell which OpenL3 model"):
        build_openl3(tmp_path / "weights.h5")
    with pytest.raises(ValueError, match="mel256/music model; mel256/env was asked for"):
        build_openl3(weights, content_type="env")


@pytest.fixture(scope="module")
def passt_sets(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("passt")
    gen, ref = clips.passt_specs()
    clips.write_clips(root / "generated", gen)  # same ids as the reference: only its hashes were recorded,
    # the per-clip probabilities below check the generated inputs
    return root / "generated", _write_and_check(root / "reference", ref, str(FIX["passt_clip_sha256"]))


def test_kl_passt_matches_reference(passt_sets):
    model = build_passt(None)
    state = make_fixtures.passt_random_state(model.net)
    assert make_fixtures.state_sha256(state) == str(FIX["passt_weights_sha256"])
    model.net.load_state_dict(state)
    tagger = PasstTagger(model)
    probs = {}
    for side, folder in zip(("generated", "reference"), passt_sets, strict=True):
        probs[side] = {}
        for p in sorted(folder.glob("*.wav")):
            audio, sr = sf.read(p, dtype="float32", always_2d=True)
            probs[side][p.stem] = tagger.probabilities(audio.T, sr)
            ref = FIX[f"passt_probs_{side}_{p.stem}"]
            report(f"passt probs {side} {p.stem}", rel(probs[side][p.stem].numpy(), ref))
            assert rel(probs[side][p.stem].numpy(), ref) < EMBEDDING_RTOL, (side, p.stem)
    kl = paired_kl(probs["generated"], probs["reference"])["value"]
    report("kl_passt (lafa, ref, rel)", (kl, float(FIX["passt_kl"]), rel(kl, FIX["passt_kl"])))
    assert rel(kl, FIX["passt_kl"]) < SCORE_RTOL, (kl, float(FIX["passt_kl"]))


def test_clap_waveforms_and_score_match_reference(tmp_path, sets):
    folder = tmp_path / "clap_set"
    shutil.copytree(sets[0], folder)
    _write_and_check(folder, clips.CLAP_EXTRA, str(FIX["clip_sha256"]))
    for name, *_ in clips.GENERATED + clips.CLAP_EXTRA:
        audio, sr = sf.read(folder / f"{name}.wav", dtype="float32", always_2d=True)
        wave = clap_waveform(audio.T, sr)
        assert len(wave) == int(FIX[f"clap_len_{name}"]), name  # librosa's length, e.g. 240001 for g5
        report(f"clap waveform {name}", rel(wave[::97], FIX[f"clap_wave_{name}"]))
        assert rel(wave[::97], FIX[f"clap_wave_{name}"]) < EMBEDDING_RTOL, name
    assert int(FIX["clap_len_g5"]) == 240001
    scorer = ClapScorer(write_random_clap(tmp_path / "clap", seed=0))
    files = {p.stem: p for p in folder.glob("*.wav")}
    assert sorted(files) == sorted(clips.PROMPTS)
    score = clap_score(scorer, files, clips.PROMPTS, seed=0)["value"]
    report("clap score (lafa, ref, rel)", (score, float(FIX["clap_score"]), rel(score, FIX["clap_score"])))
    assert rel(score, FIX["clap_score"]) < SCORE_RTOL, (score, float(FIX["clap_score"]))


def test_clap_audio_embedding_matches_laion_clap(tmp_path, sets):
    # laion_clap 1.1.4's HTSAT-tiny (fusion) audio embedding, run once with seeded random weights
    # (make_fixtures.py part clap_laion), against transformers' ClapModel with the same weights through lafa
    from transformers import ClapModel

    from lafa.metrics.clap import clip_seed

    directory = write_random_clap(tmp_path / "clap", seed=0)  # its processor: laion/clap-htsat-fused's settings
    model = ClapModel(make_fixtures.laion_clap_config()).eval()
    state = make_fixtures.clap_seeded_state(model)
    assert make_fixtures.state_sha256(state) == str(FIX["clap_laion_weights_sha256"])
    model.load_state_dict(state, strict=False)
    model.save_pretrained(directory)
    scorer = ClapScorer(directory)
    folder = tmp_path / "clips"
    specs = clips.GENERATED + clips.CLAP_EXTRA + clips.CLAP_LONG
    _write_and_check(folder, specs, str(FIX["clap_laion_clip_sha256"]))
    diffs = {}
    for name, *_ in specs:
        audio, sr = sf.read(folder / f"{name}.wav", dtype="float32", always_2d=True)
        ours = scorer.audio_embedding(clap_waveform(audio.T, sr), clip_seed(0, name)).numpy()
        diffs[name] = rel(ours / np.linalg.norm(ours), FIX[f"clap_laion_emb_{name}"])
    report("clap audio embedding vs laion_clap", diffs)
    assert bool(FIX["clap_laion_longer_g7"]) and not bool(FIX["clap_laion_longer_g5"])  # fusion taken for g7
    assert max(diffs.values()) < EMBEDDING_RTOL, diffs
