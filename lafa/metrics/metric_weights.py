"""Which weights a metric runs on, and the key its cached results are filed under: a weights file or Hugging Face
folder named by SHA-256 (or random weights by seed), checked before any network is built."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from lafa.errors import BadInput
from lafa.metrics.caches import sha256_file
from lafa.metrics.openl3_weights import weight_file_config

RANDOM_NOTE = "random weights built locally: NOT comparable to the paper's numbers"


def cache_key(weights: dict, settings: dict) -> str:
    return json.dumps({"weights": {k: v for k, v in weights.items() if k != "path"}, "settings": settings},
                      sort_keys=True)


def check_weights_path(path: str | None, option: str, metric: str) -> None:
    """A weights path given on the command line exists (and a CLAP one is a Hugging Face directory)."""
    if path is not None and not Path(path).exists():
        raise BadInput(f"{option} {path}", "no such file or folder",
                       f"give the local weights (docs/metrics.md, 'Weights to place locally'), or leave {option} "
                       f"out to skip {metric}")
    if path is not None and metric == "clap_score" and not (Path(path) / "config.json").is_file():
        raise BadInput(f"{option} {path}", "not a Hugging Face CLAP directory (no config.json)",
                       "give a local copy of laion/clap-htsat-fused (or laion/larger_clap_music)")


def checked_weights(path: str | None, seed: int, option: str) -> dict:
    """The weights a metric runs on (random by seed, or a file or Hugging Face directory named by SHA-256),
    checked (after `check_weights_path`) before any network is built: a folder without weights is BadInput."""
    if path is None:
        return {"kind": "random", "seed": seed, "note": RANDOM_NOTE}
    where, fix, folder = f"{option} {path}", "give the weights folder itself (docs/metrics.md)", Path(path)
    if folder.is_dir():  # a Hugging Face directory: hash its weight files together
        files = sorted(p for p in folder.iterdir() if p.suffix in (".safetensors", ".bin"))
        if not files:
            raise BadInput(where, f"{folder} holds no *.safetensors / *.bin weight files", fix)
        digest = hashlib.sha256("".join(f"{p.name}:{sha256_file(p)}" for p in files).encode()).hexdigest()
        return {"kind": "file", "path": str(folder), "sha256": digest, "files": [p.name for p in files]}
    if not folder.is_file():
        raise BadInput(where, f"weights file not found: {folder}", fix)
    return {"kind": "file", "path": str(folder), "sha256": sha256_file(folder)}


def check_openl3_file(path: str, input_repr: str, content_type: str) -> None:
    """The OpenL3 file holds the model asked for (read from its name and front-end layer, no network built)."""
    try:
        found = weight_file_config(path)
    except (OSError, ValueError) as e:
        raise BadInput(f"--openl3_weights {path}", " ".join(str(e).split()),
                       "pass an openl3 release file under its own name (docs/metrics.md)") from e
    if found != (input_repr, content_type):
        raise BadInput(f"--openl3_weights {path}", f"holds the OpenL3 {found[0]}/{found[1]} model; "
                       f"{input_repr}/{content_type} was asked for",
                       f"pass --openl3_input_repr {found[0]} --content_type {found[1]}, or the file of "
                       f"{input_repr}/{content_type}")
