"""The embedded demo corpus: procedurally synthesised, captioned music and sound effects (no downloads).

Music (instruments, chords, drums; tempo and key in the metadata) goes to a generic folder with JSON
sidecars; sound effects go to an FSD50K-style folder with CSVs. A few bad files (corrupt, silent,
non-commercial licence, duplicate) show the filters at work. Everything is drawn from one seed.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import soundfile as sf

NOTE_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
MAJOR, MINOR = (0, 2, 4, 5, 7, 9, 11), (0, 2, 3, 5, 7, 8, 10)
PROGRESSIONS = {"major": ((0, 4, 5, 3), (0, 3, 4, 0), (0, 5, 3, 4)), "minor": ((0, 5, 2, 6), (0, 3, 4, 0), (0, 6, 5, 4))}
# genre: (tempo range, instruments, drum pattern name)
GENRES = {
    "ambient": ((60, 80), ("synth pad", "bells"), None),
    "house": ((118, 126), ("piano", "bass", "drums"), "four"),
    "hip hop": ((82, 95), ("piano", "bass", "drums"), "boombap"),
    "rock": ((110, 140), ("electric guitar", "bass", "drums"), "rock"),
    "folk": ((90, 110), ("acoustic guitar",), None),
    "techno": ((126, 134), ("synth bass", "drums"), "four"),
}
HARMONICS = {  # relative partial amplitudes and decay rate (1/s) of each instrument
    "piano": ([1, 0.5, 0.3, 0.2, 0.1], 3.0), "synth pad": ([1, 0.3, 0.15], 0.3), "bells": ([1, 0.6, 0.4], 2.0),
    "bass": ([1 / k for k in range(1, 9)], 2.0), "synth bass": ([1 / k for k in range(1, 12)], 4.0),
    "electric guitar": ([1 / k for k in range(1, 10)], 1.0), "acoustic guitar": ([k**-1.5 for k in range(1, 11)], 5.0),
}
WORDS = ("blue", "river", "night", "echo", "paper", "city", "golden", "slow", "north", "glass", "summer", "ghost")
NAMES = ("Mara Vale", "The Lanterns", "Oskar Fenn", "Juno Park", "Low Tide", "Ines Calder", "Northbound")
SFX = {  # name: (labels, description)
    "rain": ("Rain,Water,Weather", "Steady rain on a roof with scattered heavy drops."),
    "wind": ("Wind,Nature", "Gusty wind rising and falling outdoors."),
    "birds": ("Bird,Chirp,Animal", "Small birds chirping in short rising calls."),
    "engine": ("Engine,Vehicle,Idling", "A car engine idling with a low rumble."),
    "knock": ("Knock,Door,Wood", "Someone knocking on a wooden door three times."),
    "beep": ("Beep,Alarm,Electronic", "An electronic alarm beeping repeatedly."),
}
LICENSES = ("Attribution 4.0 International", "http://creativecommons.org/publicdomain/zero/1.0/",
            "http://creativecommons.org/licenses/sampling+/1.0/")


def _tone(freq: float, n: int, sr: int, instrument: str) -> np.ndarray:
    amps, decay = HARMONICS[instrument]
    t = np.arange(n) / sr
    x = sum(a * np.sin(2 * np.pi * freq * k * t) for k, a in enumerate(amps, 1) if freq * k < sr / 2)
    env = np.exp(-decay * t) * np.minimum(1, t / (0.3 if instrument == "synth pad" else 0.005))
    x = x * env
    return np.tanh(3 * x) if instrument == "electric guitar" else x


def _drum(kind: str, sr: int, rng: np.random.Generator) -> np.ndarray:
    n = int(0.25 * sr)
    t = np.arange(n) / sr
    if kind == "kick":
        phase = 2 * np.pi * np.cumsum(45 + 105 * np.exp(-t * 30)) / sr
        return np.sin(phase) * np.exp(-t * 9)
    noise = rng.standard_normal(n)
    if kind == "snare":
        return 0.6 * noise * np.exp(-t * 20) + 0.4 * np.sin(2 * np.pi * 180 * t) * np.exp(-t * 25)
    return 0.4 * np.diff(noise, prepend=0) * np.exp(-t * 60)  # hat: high-passed noise


def _pattern(name: str) -> list[tuple[float, str]]:
    """Drum hits within one 4/4 bar, positions in beats."""
    hats = [(b / 2, "hat") for b in range(8)]
    if name == "four":
        return [(b, "kick") for b in range(4)] + [(b + 0.5, "hat") for b in range(4)]
    if name == "boombap":
        return [(0, "kick"), (1.5, "kick"), (1, "snare"), (3, "snare")] + hats
    return [(0, "kick"), (2, "kick"), (2.5, "kick"), (1, "snare"), (3, "snare")] + hats


def _add(buf: np.ndarray, x: np.ndarray, at: int, gains: tuple[float, float]) -> None:
    end = min(buf.shape[1], at + len(x))
    if end > at:
        buf[0, at:end] += gains[0] * x[: end - at]
        buf[1, at:end] += gains[1] * x[: end - at]


def synth_music(rng: np.random.Generator, seconds: float, sr: int = 44100) -> tuple[np.ndarray, dict]:
    """A few bars of one genre: chords, bass line, melody, drums. Returns stereo (2, S) and its metadata."""
    genre = str(rng.choice(list(GENRES)))
    (lo, hi), instruments, drums = GENRES[genre]
    bpm = int(rng.integers(lo, hi + 1))
    root, mode = int(rng.integers(12)), str(rng.choice(["major", "minor"]))
    scale = MAJOR if mode == "major" else MINOR
    prog = PROGRESSIONS[mode][int(rng.integers(3))]
    beat = 60.0 / bpm
    n = int(seconds * sr)
    out = np.zeros((2, n))
    harmonic = [i for i in instruments if i != "drums"]
    for bar in range(int(seconds / (4 * beat)) + 1):
        degree = prog[bar % len(prog)]
        chord = [scale[(degree + k) % 7] + 12 * ((degree + k) // 7) for k in (0, 2, 4)]
        at = int(bar * 4 * beat * sr)
        for j, inst in enumerate(harmonic):
            pan = (0.5 + 0.4 * (-1) ** j, 0.5 - 0.4 * (-1) ** j)
            if "bass" in inst:
                for b in range(4):
                    f = 440 * 2 ** ((root + chord[0] - 9 - 24) / 12)
                    _add(out, 0.5 * _tone(f, int(beat * sr), sr, inst), at + int(b * beat * sr), (0.5, 0.5))
            else:
                for k, semi in enumerate(chord):  # chord, or an arpeggio for the plucked guitar
                    f = 440 * 2 ** ((root + semi - 9) / 12)
                    offset = int(k * beat * sr) if inst == "acoustic guitar" else 0
                    _add(out, 0.25 * _tone(f, int(4 * beat * sr), sr, inst), at + offset, pan)
        if drums:
            for pos, kind in _pattern(drums):
                _add(out, 0.6 * _drum(kind, sr, rng), at + int(pos * beat * sr), (0.5, 0.5))
    out *= 10 ** (-3 / 20) / max(np.abs(out).max(), 1e-9)
    title = " ".join(str(w).title() for w in rng.choice(WORDS, 2, replace=False))
    meta = {"kind": "music", "genre": genre, "title": title, "artist": str(rng.choice(NAMES)),
            "album": f"{str(rng.choice(WORDS)).title()} Sessions", "year": str(int(rng.integers(1995, 2025))),
            "instruments": ", ".join(instruments), "tempo": f"{bpm} bpm", "key": f"{NOTE_NAMES[root]} {mode}"}
    return out.astype(np.float32), meta


def synth_sfx(rng: np.random.Generator, name: str, seconds: float, sr: int = 44100) -> np.ndarray:
    """A mono sound effect (S,) of the named kind."""
    n = int(seconds * sr)
    t = np.arange(n) / sr
    noise = rng.standard_normal(n)
    if name == "rain":
        x = 0.2 * np.convolve(noise, np.ones(8) / 8, "same")
        for at in rng.integers(0, n, int(seconds * 20)):
            x[at:at + 200] += 0.5 * np.exp(-np.arange(min(200, n - at)) / 30) * rng.standard_normal()
    elif name == "wind":
        x = np.convolve(noise, np.hanning(64) / 32, "same") * (0.6 + 0.4 * np.sin(2 * np.pi * 0.7 * t))
    elif name == "birds":
        x = np.zeros(n)
        for at in rng.integers(0, max(1, n - sr // 8), int(seconds * 5)):
            m = np.arange(sr // 8) / sr
            x[at:at + len(m)] += np.sin(2 * np.pi * (2500 * m + 12000 * m**2)) * np.hanning(len(m))
    elif name == "engine":
        x = sum(np.sin(2 * np.pi * 42 * k * t) / k for k in range(1, 6)) * (1 + 0.3 * np.sin(2 * np.pi * 14 * t))
        x += 0.05 * noise
    elif name == "knock":
        x = np.zeros(n)
        for k in range(3):
            at = int((0.1 + 0.25 * k) * sr)
            m = np.arange(min(int(0.08 * sr), max(0, n - at)))
            x[at:at + len(m)] += np.sin(2 * np.pi * 320 * m / sr) * np.exp(-m / (0.012 * sr))
    else:  # beep
        x = np.sign(np.sin(2 * np.pi * 1000 * t)) * (np.sin(2 * np.pi * 3 * t) > 0) * 0.5
    return (x * 10 ** (-6 / 20) / max(np.abs(x).max(), 1e-9)).astype(np.float32)


def write_demo_sources(raw: Path, seed: int = 0) -> dict[str, Path]:
    """Write the raw demo corpus under raw/music (folder + JSON sidecars) and raw/fsd (audio + CSVs)."""
    rng = np.random.default_rng(seed)
    music, fsd = raw / "music", raw / "fsd"
    (fsd / "audio").mkdir(parents=True, exist_ok=True)
    music.mkdir(parents=True, exist_ok=True)
    dev_rows, info_rows = [], []
    for split, count in {"train": 48, "val": 8, "test": 8}.items():
        n_music = (2 * count) // 3
        for i in range(count):
            if i < n_music:  # music 2-6 s, some at 48 kHz or mono to exercise conversion
                audio, meta = synth_music(rng, float(rng.uniform(2, 6)))
                sr, path = 44100, music / f"{split}_{i:03d}.wav"
                if i % 4 == 1:
                    sr, audio = 48000, _resample_naive(audio, 44100, 48000)
                if i % 5 == 2:
                    audio = audio.mean(0, keepdims=True)
                sf.write(path, audio.T, sr, subtype="PCM_16")
                meta.update(split=split, license=str(rng.choice(LICENSES)))
                path.with_suffix(".json").write_text(json.dumps(meta, indent=1))
            else:  # sound effects 0.6-3 s (shorter than most training crops: padding gets exercised)
                name = str(rng.choice(list(SFX)))
                fid = f"{len(dev_rows) + 1000}"
                sf.write(fsd / "audio" / f"{fid}.wav", synth_sfx(rng, name, float(rng.uniform(0.6, 3))), 44100)
                dev_rows.append({"fname": fid, "labels": SFX[name][0], "split": split})
                info_rows.append({"id": fid, "license": str(rng.choice(LICENSES)), "title": f"{name} {fid}",
                                  "description": SFX[name][1]})
    _write_bad_files(music, fsd, dev_rows, info_rows, rng)
    for file, rows in (("dev.csv", dev_rows), ("info.csv", info_rows)):
        with open(fsd / file, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    return {"music": music, "fsd": fsd}


def _resample_naive(audio: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """Linear interpolation: only used to store a few demo files at another rate (content is synthetic)."""
    n_out = int(audio.shape[-1] * sr_out / sr_in)
    x = np.linspace(0, audio.shape[-1] - 1, n_out)
    return np.stack([np.interp(x, np.arange(audio.shape[-1]), ch) for ch in audio]).astype(np.float32)


def _write_bad_files(music: Path, fsd: Path, dev_rows: list, info_rows: list, rng: np.random.Generator) -> None:
    """One corrupt file, one silent file, one non-commercial licence, one duplicate of an existing clip."""
    (music / "train_corrupt.wav").write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(rng.integers(0, 256, 64, np.uint8)))
    (music / "train_corrupt.json").write_text(json.dumps({"kind": "music", "genre": "rock", "license": LICENSES[0]}))
    audio, meta = synth_music(rng, 2.0)
    sf.write(music / "train_noncommercial.wav", audio.T, 44100, subtype="PCM_16")
    meta.update(split="train", license="Attribution-NonCommercial-ShareAlike 3.0 International")
    (music / "train_noncommercial.json").write_text(json.dumps(meta))
    sf.write(fsd / "audio" / "9001.wav", np.zeros(44100, np.float32) + 1e-5, 44100)  # -100 dBFS
    first = dev_rows[0]["fname"]
    (fsd / "audio" / "9002.wav").write_bytes((fsd / "audio" / f"{first}.wav").read_bytes())
    for fid, label in (("9001", "Silence"), ("9002", dev_rows[0]["labels"])):
        dev_rows.append({"fname": fid, "labels": label, "split": "train"})
        info_rows.append({"id": fid, "license": LICENSES[1], "title": fid, "description": ""})
