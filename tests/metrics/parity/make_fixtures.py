"""Produce the parity fixtures once, with the reference code (run by hand; see README.md in this folder).

Part "openl3" runs stable-audio-metrics' own src/openl3_fd.py on openl3 0.4.2 + kapre 0.3.7 + TensorFlow, and
the reference CLAP waveform steps with librosa 0.10.1; it needs the reference environment (README.md).
Part "passt" runs stable-audio-metrics' own src/passt_kld.py (hear21passt, librosa, pyloudnorm) on the CPU,
and scores the part-one CLAP waveforms with the random CLAP model; it runs in lafa's environment.

    python make_fixtures.py openl3 --sam_src SAM/src --openl3_src OPENL3 --kapre_src KAPRE --work DIR
    python make_fixtures.py passt --sam_src SAM/src --work DIR
Both parts write into this folder's fixtures.npz (the audio and the random weights are rebuilt from seeds, clips.py).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import sys
import zlib
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import clips  # noqa: E402

OTHER_CONFIGS = [("mel256", 6144), ("mel128", 512), ("mel128", 6144), ("linear", 512), ("linear", 6144)]
OTHER_CLIP = "g2"  # 1.2 s mono at 44.1 kHz: 3 frames


def _versions(names: list[str]) -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": sys.version.split()[0]}
    for n in names:
        try:
            out[n] = version(n)
        except PackageNotFoundError:
            out[n] = "source"
    return out


def _merge(update: dict) -> None:
    path = HERE / "fixtures.npz"
    old = dict(np.load(path, allow_pickle=False)) if path.exists() else {}
    old.update({k: np.asarray(v) for k, v in update.items()})
    with open(path, "wb") as f:
        np.savez_compressed(f, **old)


def keras_layout(path: Path) -> dict:
    """The structure of a Keras weight file (root attributes, layer names, weight names): no values."""
    import h5py

    def text(v):
        return [x.decode() if isinstance(x, bytes) else str(x) for x in v]

    with h5py.File(path, "r") as f:
        return {
            "attrs": {k: str(f.attrs[k]) for k in ("backend", "keras_version") if k in f.attrs},
            "layers": [[n, text(f[n].attrs["weight_names"])] for n in text(f.attrs["layer_names"])],
            "extra_groups": sorted(
                set(f) - set(text(f.attrs["layer_names"]))
            ),  # Keras 2.13: top_level_model_weights
        }


def part_openl3(args: argparse.Namespace) -> None:
    sys.path[:0] = [args.openl3_src, args.kapre_src, str(Path(args.sam_src).parent)]
    import librosa
    import openl3
    import openl3.models
    import pyloudnorm as pyln
    from openl3.models import AUDIO_MODELS, load_audio_embedding_model_from_path
    from src import openl3_fd as sam  # stable-audio-metrics' module, unmodified

    work = Path(args.work)
    gen_dir, ref_dir = work / "generated", work / "reference"
    hashes = {**clips.write_clips(gen_dir, clips.GENERATED), **clips.write_clips(ref_dir, clips.REFERENCE)}
    hashes |= clips.write_clips(work / "clap_extra", clips.CLAP_EXTRA)

    # the random-weight mel256/music file, saved by Keras from openl3's own network
    model = AUDIO_MODELS["mel256"](include_frontend=True)
    weighted = [layer for layer in model.layers if layer.weights]
    layers = clips.openl3_weights()
    assert len(weighted) == len(layers) == 16
    for layer, arrays in zip(weighted, layers, strict=True):
        layer.set_weights(arrays)
    raw = work / "raw.h5"
    model.save_weights(raw)
    layout = keras_layout(raw)
    rebuilt = work / "rebuilt.h5"  # what the tests rebuild must be what Keras wrote
    clips.write_openl3_file(rebuilt, layout, layers)
    assert keras_layout(rebuilt) == layout
    package_dir = Path(openl3.models.__file__).parent  # where openl3 looks up its model files
    for repr_ in ("mel256", "mel128", "linear"):
        shutil.copy(raw, package_dir / f"openl3_audio_{repr_}_music.h5")

    out: dict[str, object] = {
        "clip_sha256": json.dumps(hashes),
        "openl3_weights_sha256": clips.weights_sha256(layers),
        "openl3_keras_layout": json.dumps(layout),
    }
    # per-file embeddings of both stable-audio-metrics paths (mel256, 512): the module's functions on one file
    for name, *_ in clips.GENERATED + clips.REFERENCE:
        folder = gen_dir if name[0] == "g" else ref_dir
        pattern = str(folder / f"{name}.wav")
        out[f"l3_stereo_{name}"] = np.stack(
            sam.extract_embeddings(pattern, 2, 44100, "music", 0.5, batch_size=4)
        )
        out[f"l3_mono_{name}"] = np.stack(sam.extract_embeddings_nobatching(pattern, 2, 44100, "music", 0.5))
    # end to end: the statistics and the distance of openl3_fd (its own functions) over each set's frames;
    # openl3_fd's glob order only permutes the frames, which the mean and covariance do not see
    for mode in ("stereo", "mono"):
        stats = [
            sam.calculate_embd_statistics(list(np.concatenate([out[f"l3_{mode}_{n}"] for n, *_ in specs])))
            for specs in (clips.GENERATED, clips.REFERENCE)
        ]
        out[f"fd_openl3_{mode}"] = float(sam.calculate_frechet_distance(*stats[0], *stats[1]))
    # the other openl3 configurations through the same batched path, model swapped in
    original = openl3.models.load_audio_embedding_model
    for repr_, size in OTHER_CONFIGS:
        path = package_dir / f"openl3_audio_{repr_}_music.h5"
        m = load_audio_embedding_model_from_path(str(path), repr_, size)
        sam.openl3.models.load_audio_embedding_model = lambda *a, _m=m, **k: _m
        emb = sam.extract_embeddings(str(gen_dir / f"{OTHER_CLIP}.wav"), 2, 44100, "music", 0.5, batch_size=4)
        out[f"l3_{repr_}_{size}_{OTHER_CLIP}"] = np.stack(emb)
    sam.openl3.models.load_audio_embedding_model = original

    # CLAP: the audio steps of stable-audio-metrics' clap_score (src/clap_score.py) up to the model input
    waves = {}
    for name, *_ in clips.GENERATED + clips.CLAP_EXTRA:
        folder = gen_dir if (gen_dir / f"{name}.wav").exists() else work / "clap_extra"
        audio, _ = librosa.load(folder / f"{name}.wav", sr=48000, mono=True)
        audio = pyln.normalize.peak(audio, -1.0)
        q = (np.clip(audio, a_min=-1.0, a_max=1.0) * 32767.0).astype(np.int16)
        waves[name] = (q / 32767.0).astype(np.float32)
        out[f"clap_len_{name}"] = len(waves[name])
        out[f"clap_wave_{name}"] = waves[name][::97]  # every 97th sample: enough to see a resampler change
    np.savez(work / "clap_waveforms.npz", **waves)
    out["versions_openl3"] = json.dumps(
        _versions(
            ["tensorflow-cpu", "keras", "numpy", "librosa", "resampy", "soxr", "pyloudnorm", "h5py", "scipy"]
        )
        | {"openl3": "0.4.2 (git tag v0.4.2)", "kapre": "0.3.7 (git tag Kapre-0.3.7)"}
    )
    _merge(out)


def part_openl3_48k(args: argparse.Namespace) -> None:
    """The broadband 48 kHz sets at samplingrate=48000 (batched stereo path), after part "openl3"."""
    sys.path[:0] = [args.openl3_src, args.kapre_src, str(Path(args.sam_src).parent)]
    import openl3.models
    from src import openl3_fd as sam  # stable-audio-metrics' module, unmodified

    work = Path(args.work)
    package_dir = Path(openl3.models.__file__).parent
    assert (package_dir / "openl3_audio_mel256_music.h5").exists(), "run part openl3 first"
    gen_dir, ref_dir = work / "generated_48k", work / "reference_48k"
    hashes = {
        **clips.write_clips(gen_dir, clips.GENERATED_48K),
        **clips.write_clips(ref_dir, clips.REFERENCE_48K),
    }
    out: dict[str, object] = {"clip_sha256_48k": json.dumps(hashes)}
    for name, *_ in clips.GENERATED_48K + clips.REFERENCE_48K:
        folder = gen_dir if name[0] == "h" else ref_dir
        emb = sam.extract_embeddings(str(folder / f"{name}.wav"), 2, 48000, "music", 0.5, batch_size=4)
        out[f"l3_48k_{name}"] = np.stack(emb)
    stats = [
        sam.calculate_embd_statistics(list(np.concatenate([out[f"l3_48k_{n}"] for n, *_ in specs])))
        for specs in (clips.GENERATED_48K, clips.REFERENCE_48K)
    ]
    out["fd_openl3_48k"] = float(sam.calculate_frechet_distance(*stats[0], *stats[1]))
    _merge(out)


def openl3_network_inputs(work: Path):
    """(clip name, side, its (N, 48000) openl3 network input windows) for every seeded clip, as the reference makes
    them: stable-audio-metrics' loading (librosa.load(sr=None, mono=False), pyloudnorm peak -1, soxr.resample to
    44.1 kHz, channels split), then openl3's own core._preprocess_audio_batch at hop 0.5 s."""
    import librosa
    import openl3.core
    import pyloudnorm as pyln
    import soxr

    for name, *_ in clips.GENERATED + clips.REFERENCE:
        folder = work / ("generated" if name[0] == "g" else "reference")
        audio, sr = librosa.load(folder / f"{name}.wav", sr=None, mono=False)
        audio = soxr.resample(pyln.normalize.peak(audio.T, -1.0), sr, 44100)
        sides = [audio] if audio.ndim == 1 else [audio[:, 0], audio[:, 1]]
        for side, signal in zip("LR", sides, strict=False):
            yield name, side, openl3.core._preprocess_audio_batch(signal, 44100, hop_size=0.5)[:, 0]


def part_openl3_inputs(args: argparse.Namespace) -> None:
    """The 48 kHz windows openl3 0.4.2 feeds its network, per clip and side, every 97th sample (TF-free check).

    The loading lines are those of stable-audio-metrics' extract_embeddings (librosa.load(sr=None, mono=False),
    pyloudnorm peak -1, soxr.resample to 44.1 kHz, channels split); the windows are openl3's own
    core._preprocess_audio_batch (resampy kaiser_best, centring, padding, framing) at hop 0.5 s.
    """
    sys.path[:0] = [args.openl3_src, args.kapre_src]

    work = Path(args.work)
    out: dict[str, object] = {}
    for name, side, x in openl3_network_inputs(work):
        out[f"l3_input_{name}_{side}"] = x[:, ::97]
    _merge(out)


FRONT_END_WINDOWS = [("mel256", "g0", "L", 1), ("mel256", "g4", "L", 1), ("linear", "g2", "L", 1)]
RFFT_SEED = 77


def rfft_frames(n: int) -> np.ndarray:
    """(3, n) float32 seeded frames for the TensorFlow FFT check: white noise, a Hann-windowed tone, an impulse."""
    rng = np.random.RandomState(RFFT_SEED + n)
    t = np.arange(n)
    return np.stack([
        rng.standard_normal(n), np.sin(2 * np.pi * 0.1234 * t) * (0.5 - 0.5 * np.cos(2 * np.pi * t / n)),
        np.eye(1, n, 3)[0],
    ]).astype(np.float32)  # fmt: skip


def part_front_end(args: argparse.Namespace) -> None:
    """TensorFlow's STFT pieces and kapre's front-end outputs, layer by layer (after part "openl3").

    The pieces lafa reproduces bit for bit: tf.signal.hann_window, tf.signal.rfft (Eigen's FFT on the CPU),
    kapre's mel filterbank (its SHA-256) and openl3's 48 kHz network inputs (SHA-256 of every window of every
    clip and side); then the front end's dB output on three windows (every 6th value) and the network's
    embedding of the same windows.
    """
    sys.path[:0] = [args.openl3_src, args.kapre_src]
    import tensorflow as tf
    from kapre import backend as kapre_backend
    from openl3.models import load_audio_embedding_model

    work = Path(args.work)
    recorded = json.loads(str(np.load(HERE / "fixtures.npz")["clip_sha256"]))
    for folder, specs in (("generated", clips.GENERATED), ("reference", clips.REFERENCE)):
        hashes = clips.write_clips(work / folder, specs)
        assert all(recorded[k] == v for k, v in hashes.items()), "the seeded clips differ from those recorded"
    out: dict[str, object] = {}
    for n in (512, 2048):
        out[f"tf_hann_{n}"] = tf.signal.hann_window(n, periodic=True).numpy()
        spectrum = tf.signal.rfft(rfft_frames(n)).numpy()
        out[f"tf_rfft_{n}_re"], out[f"tf_rfft_{n}_im"] = spectrum.real, spectrum.imag
    for n_mels in (128, 256):
        fb = kapre_backend.filterbank_mel(sample_rate=48000, n_freq=1025, n_mels=n_mels).numpy()
        digest = hashlib.sha256(np.ascontiguousarray(fb).tobytes()).hexdigest()
        out[f"kapre_filterbank_{n_mels}_sha256"] = digest
    windows = {}
    for name, side, x in openl3_network_inputs(work):  # x: (N, 48000)
        windows[f"{name}_{side}"] = x
    out["l3_input_sha256"] = json.dumps(
        {k: hashlib.sha256(np.ascontiguousarray(v).tobytes()).hexdigest() for k, v in windows.items()}
    )
    for repr_, name, side, index in FRONT_END_WINDOWS:
        model = load_audio_embedding_model(repr_, "music", 512)  # the random-weight file part "openl3" put
        x = windows[f"{name}_{side}"][index][None, None]  # (1, 1, 48000)
        db = model.layers[1](tf.constant(x)).numpy()[0, :, :, 0]  # kapre + openl3's decibel, (bins, frames)
        key = f"front_end_{repr_}_{name}{side}{index}"
        out[f"{key}_db"] = db.reshape(-1)[::6]
        out[f"{key}_shape"] = np.array(db.shape)
        out[f"{key}_embedding"] = model.predict(x, verbose=0)[0]
    _merge(out)


def seeded_state(module, seed: int, scale: float = 0.02) -> dict:
    """A state dict of seeded normals from numpy's frozen RandomState (independent of torch's RNG)."""
    import torch

    state = {}
    for name, value in module.state_dict().items():
        if not value.is_floating_point():
            state[name] = value
            continue
        rng = np.random.RandomState((seed + zlib.crc32(name.encode())) % (2**31))
        noise = rng.standard_normal(tuple(value.shape)).astype(np.float32)
        base = 1.0 if name.endswith("norm.weight") or ".norm" in name and name.endswith("weight") else 0.0
        state[name] = torch.from_numpy(base + scale * noise)
    return state


def passt_random_state(net) -> dict:
    """Random PaSST weights with a larger head so the class probabilities differ between clips."""
    state = seeded_state(net, clips.WEIGHT_SEED)
    for k in state:
        if k.startswith("head") and state[k].is_floating_point():
            state[k] = state[k] * 50
    return state


def state_sha256(state: dict) -> str:
    h = hashlib.sha256()
    for k in sorted(state):
        h.update(k.encode() + state[k].detach().cpu().numpy().tobytes())
    return h.hexdigest()


def part_passt(args: argparse.Namespace) -> None:
    import torch

    sys.path.insert(0, str(Path(args.sam_src).parent))
    import hear21passt.base as base

    def cpu(self, *a, **k):  # the reference moves everything to CUDA; this machine has none
        return self

    torch.Tensor.cuda = cpu
    torch.nn.Module.cuda = cpu
    made = {}
    original = base.get_model_passt

    def random_passt(*a, **k):  # get_basic_model's network, built without downloading, random weights
        net = original(*a, pretrained=False, **k)
        state = passt_random_state(net)
        net.load_state_dict(state)
        made["sha"] = state_sha256(state)
        return net

    base.get_model_passt = random_passt
    from src import passt_kld as sam  # stable-audio-metrics' module, unmodified

    work = Path(args.work)
    gen, ref = clips.passt_specs()
    hashes = {
        **clips.write_clips(work / "passt_generated", gen),
        **clips.write_clips(work / "passt_reference", ref),
    }
    ids = [n for n, *_ in gen]
    os.chdir(work)
    with contextlib.redirect_stdout(sys.stderr):
        kl = sam.passt_kld(ids, str(work / "passt_generated"), ref_path=str(work / "passt_reference"))
        model = base.get_basic_model(mode="logits").eval()
    out: dict[str, object] = {"passt_kl": float(kl), "passt_clip_sha256": json.dumps(hashes),
                              "passt_weights_sha256": made["sha"]}  # fmt: skip
    for side in ("generated", "reference"):
        for i in ids:
            out[f"passt_probs_{side}_{i}"] = (
                sam.return_probabilities(model, str(work / f"passt_{side}" / f"{i}.wav")).double().numpy()
            )

    # CLAP score of the reference waveforms (part one) with the random CLAP model, model side as lafa's
    sys.path.insert(0, str(HERE.parents[2]))
    from lafa.metrics.clap import ClapScorer, clip_seed, write_random_clap

    clap_dir = write_random_clap(work / "clap_model", seed=0)
    scorer = ClapScorer(clap_dir)
    waves = np.load(work / "clap_waveforms.npz")
    names = sorted(clips.PROMPTS)
    text = scorer.text_embeddings([clips.PROMPTS[n] for n in names])
    cos = []
    for n, t in zip(names, text, strict=True):
        a = scorer.audio_embedding(waves[n], clip_seed(0, n))
        cos.append(float(torch.nn.functional.cosine_similarity(a, t, dim=0, eps=1e-8)))
    out["clap_cosines"] = np.asarray(cos)
    out["clap_score"] = float(np.mean(cos))
    out["versions_passt"] = json.dumps(
        _versions(["torch", "hear21passt", "timm", "librosa", "soxr", "pyloudnorm", "numpy", "transformers"])
    )
    _merge(out)


# laion_clap 1.1.4 -> transformers ClapModel key renames (the rules of transformers' convert_clap script)
LAION_TO_HF = {
    "text_branch": "text_model", "audio_branch": "audio_model.audio_encoder", "attn": "attention.self",
    "self.proj": "output.dense", "attention.self_mask": "attn_mask", "mlp.fc1": "intermediate.dense",
    "mlp.fc2": "output.dense", "norm1": "layernorm_before", "norm2": "layernorm_after", "bn0": "batch_norm",
}  # fmt: skip
LAION_ONLY = ("spectrogram_extractor", "logmel_extractor", "attn_mask", ".head.", "tscam_conv")


def laion_clap_config():
    """transformers' ClapConfig of laion_clap's HTSAT-tiny with fusion (laion/clap-htsat-fused), a tiny text side."""
    from transformers import ClapConfig

    text = dict(vocab_size=100, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
    return ClapConfig(text_config=text, audio_config=dict(enable_fusion=True), projection_dim=512)


def clap_seeded_state(model) -> dict:
    """Seeded random weights for a transformers ClapModel's audio side (numpy RandomState per tensor name)."""
    params = dict(model.named_parameters())
    state = {}
    for name, value in model.state_dict().items():
        if not name.startswith(("audio_model", "audio_projection")) or not value.is_floating_point():
            continue
        if name not in params and not name.endswith(("running_mean", "running_var")):
            continue  # constant buffers stay as built
        rng = np.random.RandomState((WEIGHT_SEED_CLAP + zlib.crc32(name.encode())) % (2**31))
        shape = tuple(value.shape)
        if name.endswith("running_var"):
            new = rng.uniform(0.5, 1.5, shape)
        elif "norm" in name and name.endswith("weight"):
            new = 1 + 0.1 * rng.standard_normal(shape)
        elif name.endswith(("bias", "running_mean")):
            new = 0.1 * rng.standard_normal(shape)
        else:
            new = 0.02 * rng.standard_normal(shape)
        state[name] = value.new_tensor(new.astype(np.float32))
    return state


WEIGHT_SEED_CLAP = 4321


def laion_key_map(laion_keys) -> dict[str, tuple[str, int | None]]:
    """{laion audio key: (transformers key, qkv part or None)} for every laion key transformers has."""
    import re

    out = {}
    for key in laion_keys:
        if not key.startswith(("audio_branch", "audio_projection")) or any(s in key for s in LAION_ONLY):
            continue
        hf = key
        for a, b in LAION_TO_HF.items():
            if a in hf:
                hf = hf.replace(a, b)
        m = re.match(r".*_projection.(\d+).*", hf)
        if m:
            layer = int(m.group(1))
            hf = hf.replace(f"_projection.{layer}.", f"_projection.linear{1 if layer == 0 else 2}.")
        out[key] = (hf, None) if "qkv" not in hf else (hf, 3)  # qkv: query, key, value stacked on dim 0
    return out


def part_clap_laion(args: argparse.Namespace) -> None:
    """laion_clap 1.1.4's audio embedding (HTSAT-tiny, fusion) on the CLAP clips, with seeded random weights.

    Runs in lafa's environment with laion_clap 1.1.4 and torchlibrosa 0.1.0 installed --no-deps into
    --laion_src (pip install --no-deps --target DIR laion_clap==1.1.4 torchlibrosa ftfy wcwidth wget): built
    offline (no tokenizer or roberta download: the text side is a tiny random RobertaModel, unused), every audio
    tensor loaded from the transformers-side seeded weights through the convert script's key renames, the
    audio steps as stable-audio-metrics' clap_score (int16 round trip, get_audio_embedding_from_data with
    use_tensor=True, i.e. get_audio_features(fusion, repeatpad) + get_audio_embedding). torchvision's Resize
    is given antialias=False: torchvision 0.16.0 (the reference's pin) did not antialias tensors, 0.17+ does.
    """
    import importlib.machinery
    import types

    import soundfile as sf
    import torch
    import torchvision.transforms

    sys.path[:0] = [args.laion_src, str(Path(args.laion_src) / "laion_clap"), str(HERE.parents[2])]
    pandas = types.ModuleType("pandas")  # imported by laion_clap.training.data, not used by its audio steps
    pandas.__spec__ = importlib.machinery.ModuleSpec("pandas", None)
    sys.modules.setdefault("pandas", pandas)
    import transformers
    from transformers import ClapModel, RobertaConfig, RobertaModel

    tokenizers = (transformers.BertTokenizer, transformers.RobertaTokenizer, transformers.BartTokenizer)
    saved = {cls: cls.__dict__.get("from_pretrained") for cls in tokenizers}
    for cls in tokenizers:  # training.data loads three tokenizers at import; none is used here
        cls.from_pretrained = classmethod(lambda c, *a, **k: None)
    text = RobertaConfig(vocab_size=100, hidden_size=768, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=64)  # fmt: skip
    RobertaModel.from_pretrained = classmethod(lambda c, *a, **k: RobertaModel(text))
    from clap_module import create_model
    from training.data import get_audio_features

    for cls, fn in saved.items():
        if fn is None:
            del cls.from_pretrained
        else:
            cls.from_pretrained = fn
    resize = torchvision.transforms.Resize
    torchvision.transforms.Resize = lambda size, **k: resize(size, antialias=False)

    from lafa.metrics.clap import clap_waveform, clip_seed

    hf = ClapModel(laion_clap_config()).eval()
    hf_state = clap_seeded_state(hf)
    model, cfg = create_model("HTSAT-tiny", "roberta", "", precision="fp32", device="cpu", enable_fusion=True,
                              fusion_type="aff_2d")  # fmt: skip
    model.eval()
    laion_state = model.state_dict()
    mapping = laion_key_map(laion_state)
    hf_audio = {k for k in hf.state_dict() if k.startswith(("audio_model", "audio_projection"))}
    paired = {h.replace("qkv", n) for h, parts in mapping.values() for n in (("query", "key", "value") if parts else ("qkv",))}
    assert paired == hf_audio, ("laion and transformers audio tensors do not pair up", paired ^ hf_audio)
    full = hf.state_dict() | hf_state
    with torch.no_grad():
        for key, (hf_key, parts) in mapping.items():
            if parts is None:
                value = full[hf_key]
            else:
                value = torch.cat([full[hf_key.replace("qkv", n)] for n in ("query", "key", "value")])
            assert value.shape == laion_state[key].shape, key
            laion_state[key].copy_(value)
    work = Path(args.work)
    specs = clips.GENERATED + clips.CLAP_EXTRA + clips.CLAP_LONG
    out: dict[str, object] = {"clap_laion_clip_sha256": json.dumps(clips.write_clips(work / "clap_laion", specs))}
    for name, *_ in specs:
        audio, sr = sf.read(work / "clap_laion" / f"{name}.wav", dtype="float32", always_2d=True)
        wave = clap_waveform(audio.T, sr)  # librosa's load + peak + int16 round trip (checked in part openl3)
        np.random.seed(clip_seed(0, name))  # the fusion crops of clips over 10 s
        with torch.no_grad():
            feats = get_audio_features({}, torch.from_numpy(wave).float(), 480000, data_truncating="fusion",
                                       data_filling="repeatpad", audio_cfg=cfg["audio_cfg"])  # fmt: skip
            out[f"clap_laion_emb_{name}"] = model.get_audio_embedding([feats])[0].numpy()
        out[f"clap_laion_longer_{name}"] = bool(feats["longer"])
    out["clap_laion_weights_sha256"] = state_sha256(hf_state)
    out["versions_clap_laion"] = json.dumps(
        _versions(["laion_clap", "torchlibrosa", "torch", "torchaudio", "torchvision", "transformers", "numpy"])
        | {"torchvision_resize": "antialias=False, as torchvision 0.16.0"}
    )
    _merge(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("part", choices=["openl3", "openl3_48k", "openl3_inputs", "front_end", "passt", "clap_laion"])
    p.add_argument("--sam_src", help="stable-audio-metrics' src/ folder (all parts but clap_laion)")
    p.add_argument("--openl3_src", help="a checkout of marl/openl3 at v0.4.2 (the folder holding openl3/)")
    p.add_argument("--kapre_src", help="a checkout of kapre at Kapre-0.3.7 (the folder holding kapre/)")
    p.add_argument("--laion_src", help="a folder holding laion_clap 1.1.4 and torchlibrosa (pip --target)")
    p.add_argument("--work", required=True, help="scratch folder for the clips and model copies")
    args = p.parse_args()
    Path(args.work).mkdir(parents=True, exist_ok=True)
    parts = {"openl3": part_openl3, "openl3_48k": part_openl3_48k, "openl3_inputs": part_openl3_inputs,
             "front_end": part_front_end, "clap_laion": part_clap_laion}  # fmt: skip
    parts.get(args.part, part_passt)(args)


if __name__ == "__main__":
    main()
