"""Source files for data_prep tests (music-like audio with a JSON sidecar) and reading built shards back."""

import json
import os
import tarfile

import numpy as np
import soundfile as sf

SR = 44100


def music(seconds: float, channels: int = 2, rate: int = SR, seed: int = 0) -> np.ndarray:
    """(samples, channels) float32: a 330 Hz tone plus noise, the right channel a shifted copy of the left."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    x = 0.3 * np.sin(2 * np.pi * 330 * t) + 0.05 * rng.standard_normal(len(t))
    return np.stack([x, np.roll(x, 50)][:channels], 1).astype(np.float32)


def write_source(folder, name, audio, rate=SR, **kw):
    """folder/name written by soundfile (kw: format, subtype) with a train-split JSON sidecar; returns the path."""
    path = folder / name
    sf.write(path, audio, rate, **kw)
    (folder / f"{os.path.splitext(name)[0]}.json").write_text(json.dumps({"genre": "test", "split": "train"}))
    return path


def shard_members(out, pattern: str = "*.tar") -> dict[str, bytes]:
    """Member name -> bytes over every shard of `out` matching `pattern`."""
    members = {}
    for tar_path in sorted(out.glob(pattern)):
        with tarfile.open(tar_path) as tar:
            members.update({m.name: tar.extractfile(m).read() for m in tar.getmembers()})
    return members
