"""Deterministic inputs of the parity suite, rebuilt identically by make_fixtures.py and by the tests.

numpy's legacy RandomState streams are frozen across numpy versions, so the audio clips and the random
OpenL3 weights are regenerated from seeds instead of being committed; fixtures.npz records their SHA-256 so a
changed stream fails loudly instead of comparing different inputs.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import soundfile as sf

# (name, sample rate, channels, seconds): odd lengths, four rates, mono and stereo (~3 OpenL3 frames each)
GENERATED = [
    ("g0", 44100, 2, 1.7), ("g1", 48000, 2, 1.3), ("g2", 44100, 1, 1.2), ("g3", 32000, 2, 1.6),
    ("g4", 22050, 1, 1.1),
]  # fmt: skip
REFERENCE = [
    ("r0", 44100, 2, 1.5), ("r1", 48000, 2, 1.4), ("r2", 44100, 1, 1.9), ("r3", 32000, 2, 1.2),
    ("r4", 22050, 2, 1.3),
]  # fmt: skip
# broadband 48 kHz sets scored at samplingrate=48000: no resampling anywhere, every STFT bin carries signal,
# so TensorFlow's float32 FFT noise (which fills the empty 22.05-24 kHz band of 44.1 kHz audio) does not matter
GENERATED_48K = [("h0", 48000, 2, 1.5), ("h1", 48000, 1, 1.3), ("h2", 48000, 2, 1.2)]
REFERENCE_48K = [("s0", 48000, 2, 1.4), ("s1", 48000, 2, 1.6), ("s2", 48000, 1, 1.1)]
# CLAP: the generated set plus a 5.000 s clip at 44.1 kHz (librosa makes it 240001 samples at 48 kHz, which
# flips CLAP's repeat-padding) and a 2.6 s mono one at 48 kHz
CLAP_EXTRA = [("g5", 44100, 2, 5.0), ("g6", 48000, 1, 2.6)]
# the laion_clap comparison: the CLAP set plus a 12.5 s clip, whose fusion crops (random, seeded) are taken
CLAP_LONG = [("g7", 44100, 2, 12.5)]
PASST_LENGTHS = {
    "g0": 3.0,
    "g1": 11.5,
    "g2": 2.0,
    "r0": 4.0,
    "r1": 11.0,
    "r2": 6.5,
}  # KL_PaSST set (ids g/r i)
PROMPTS = {
    "g0": "a dog barks twice", "g1": "rain on a tin roof", "g2": "solo piano, slow", "g3": "crowd cheering",
    "g4": "synth bass line", "g5": "birds at dawn", "g6": "a car passes by",
}  # fmt: skip
WEIGHT_SEED = 1234
OPENL3_FILE = "openl3_audio_mel256_music.h5"  # the name openl3 gives the model (tests rebuild it)


def clip(name: str, sample_rate: int, channels: int, seconds: float) -> np.ndarray:
    """(samples, channels) float32 broadband test audio: white + low-passed noise, a sweep, an envelope."""
    rng = np.random.RandomState(sum(ord(c) * 31**i for i, c in enumerate(name)) % (2**31))
    n = int(round(seconds * sample_rate))
    t = np.arange(n) / sample_rate
    out = []
    for ch in range(channels):
        white = rng.standard_normal(n)
        low = np.convolve(rng.standard_normal(n), np.ones(32) / 32, mode="same") * 4
        f0 = 200 + 3000 * rng.rand()
        sweep = np.sin(2 * np.pi * (f0 * t + 2000 * t**2)) * 0.5
        env = 0.4 + 0.6 * np.abs(np.sin(2 * np.pi * (0.5 + rng.rand()) * t + ch))
        out.append(env * (0.25 * white + 0.35 * low + sweep) * (0.6 if ch else 1.0))
    audio = np.stack(out, axis=1)
    return (0.5 * audio / np.abs(audio).max()).astype(np.float32)


def write_clips(folder: str | Path, specs: list[tuple[str, int, int, float]]) -> dict[str, str]:
    """Write 16-bit WAVs into `folder`; {name: sha256 of the decoded float32 samples}."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    hashes = {}
    for name, sr, ch, sec in specs:
        path = folder / f"{name}.wav"
        sf.write(path, clip(name, sr, ch, sec), sr, subtype="PCM_16")
        decoded, _ = sf.read(path, dtype="float32", always_2d=True)
        hashes[name] = hashlib.sha256(decoded.tobytes()).hexdigest()
    return hashes


def passt_specs() -> tuple[list, list]:
    """(generated, reference) specs of the KL_PaSST set: mono/stereo at 44.1/48 kHz, 3-12.5 s."""
    spec = {
        n: (n, 44100 if n[1] in "02" else 48000, 1 if n[1] == "2" else 2, s) for n, s in PASST_LENGTHS.items()
    }
    gen = [spec[n] for n in sorted(spec) if n[0] == "g"]
    ref = [(f"g{n[1]}", *spec[n][1:]) for n in sorted(spec) if n[0] == "r"]  # same ids, other audio
    return gen, ref


def openl3_weights(seed: int = WEIGHT_SEED) -> list[list[np.ndarray]]:
    """Random weights of the 16 weighted Keras layers ([BN, Conv] x 8), in Keras' get_weights order.

    Conv kernels are he-normal scaled ternary values (-s, 0, s) so the gzip-compressed file stays small;
    BN layers get random gamma/beta/moving mean/variance so every statistic matters.
    """
    rng = np.random.RandomState(seed)
    widths = (64, 64, 128, 128, 256, 256, 512, 512)
    layers, c_in = [], 1
    for w_out in widths:
        layers.append([
            (1 + 0.2 * rng.standard_normal(c_in)).astype(np.float32),  # gamma
            (0.1 * rng.standard_normal(c_in)).astype(np.float32),  # beta
            (-40 + 5 * rng.standard_normal(c_in) if c_in == 1 else 0.2 * rng.standard_normal(c_in)).astype(np.float32),
            (300 * rng.uniform(0.5, 1.5, c_in) if c_in == 1 else rng.uniform(0.5, 1.5, c_in)).astype(np.float32),
        ])  # fmt: skip
        std = np.sqrt(2.0 / (9 * c_in)) / np.sqrt(2.0 / 3.0)  # ternary {-1,0,1} w.p. 1/3 each: var 2/3
        kernel = (rng.randint(-1, 2, size=(3, 3, c_in, w_out)) * std).astype(np.float32)
        layers.append([kernel, (0.05 * rng.standard_normal(w_out)).astype(np.float32)])
        c_in = w_out
    return layers


def weights_sha256(layers: list[list[np.ndarray]]) -> str:
    h = hashlib.sha256()
    for arrays in layers:
        for a in arrays:
            h.update(np.ascontiguousarray(a, np.float32).tobytes())
    return h.hexdigest()


def write_openl3_file(path: str | Path, layout: dict, layers: list[list[np.ndarray]]) -> Path:
    """A Keras `save_weights` HDF5 file with `layout` (as make_fixtures recorded it) and these weights."""
    import h5py

    kinds = {
        "batch_normalization": ["gamma", "beta", "moving_mean", "moving_variance"],
        "conv": ["kernel", "bias"],
    }
    arrays = iter(layers)
    with h5py.File(path, "w") as f:
        for k, v in layout["attrs"].items():
            f.attrs[k] = v
        f.attrs["layer_names"] = [n.encode() for n, _ in layout["layers"]]
        for name in layout.get("extra_groups", []):
            f.create_group(name).attrs["weight_names"] = np.array([], dtype=np.float64)
        for name, weight_names in layout["layers"]:
            g = f.create_group(name)
            g.attrs["weight_names"] = [w.encode() for w in weight_names]
            if weight_names:
                values = next(arrays)
                assert len(values) == len(weight_names), (name, weight_names)
                for w, a in zip(weight_names, values, strict=True):
                    kind = w.split("/")[-1].split(":")[0]
                    assert any(kind in ks for ks in kinds.values()), w
                    g.create_dataset(w, data=a)
    return Path(path)
