"""Fingerprints: what made an output, as a short hash, so a resumed job never trusts outputs made by something else.

A fingerprint is the SHA-256 of a canonical JSON record (sorted keys) of everything that decides an output's
bytes: a model's weights (hashed from its tensors, never its file name), the inputs, the settings and lafa's
version. `lafa encode` keys its latent shards with it; data_prep's shard records and the metric caches fold
lafa's version into theirs the same way.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

import lafa

LENGTH = 16  # hex digits shown and compared: 64 bits


def weights_digest(model: Any) -> str:
    """SHA-256 of an nn.Module's state_dict (or of a mapping of tensors): every tensor's name, dtype, shape and
    raw bytes, in sorted name order. Two modules with equal weights hash alike whatever file they came from;
    non-tensor entries are skipped."""
    state = model.state_dict() if hasattr(model, "state_dict") else model
    h = hashlib.sha256()
    for name in sorted(state):
        value = state[name]
        if not isinstance(value, torch.Tensor):
            continue
        t = value.detach().to("cpu").contiguous()
        h.update(f"{name}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.dtype != torch.bool
                     else t.numpy().tobytes())
    return h.hexdigest()


def fingerprint(record: Mapping[str, Any]) -> str:
    """LENGTH hex digits of SHA-256 over the record as canonical JSON; lafa's version is always part of it."""
    full = {**record, "lafa_version": lafa.__version__}
    return hashlib.sha256(json.dumps(full, sort_keys=True, default=str).encode()).hexdigest()[:LENGTH]


def read_record(path: Path) -> dict[str, Any] | None:
    """The JSON record of what made a folder: None when there is none, {} when it is unreadable (a record cut
    short counts as another maker's, so the folder is refused rather than trusted)."""
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return {}
