"""Which encode made a set of latent shards: the fingerprint member `lafa encode` writes first in every latent shard,
read back, and a corpus that mixes encodes refused (used by `lafa encode`, the LatentDataModule and the DiT)."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

from lafa.errors import LafaUserError

FINGERPRINT_MEMBER = "__lafa_fingerprint__"  # first member of a latent shard; names starting "__" are not samples


class EncodeFolderError(LafaUserError):
    """An output folder (or shard) written by another encode, or one lafa encode cannot write to."""


def shard_fingerprint(path: str | Path) -> dict | None:
    """The fingerprint member of a latent shard (its first member: one header read), or None when it has none
    (written before fingerprints, or not a latent shard) or cannot be read."""
    try:
        with tarfile.open(path, "r:") as tar:
            first = tar.next()
            if first is None or first.name != FINGERPRINT_MEMBER:
                return None
            return json.loads(tar.extractfile(first).read())
    except (tarfile.TarError, OSError, EOFError, ValueError):
        return None


def check_latent_corpus(urls: list[str], what: str = "latent shards") -> str | None:
    """The one fingerprint of a set of local latent shards (None: none carries one, e.g. written before
    fingerprints, or remote), or EncodeFolderError naming the fingerprints when they mix. `pipe:` shards are
    not opened."""
    groups: dict[str, list[str]] = {}
    for url in urls:
        if url.startswith("pipe:") or "://" in url or not Path(url).is_file():
            continue
        info = shard_fingerprint(url)
        groups.setdefault(info["fingerprint"] if info else "none", []).append(url)
    if len(groups) <= 1:
        fp = next(iter(groups), None)
        return None if fp in (None, "none") else fp
    parts = ", ".join(f"{'no fingerprint (encoded before lafa recorded one)' if fp == 'none' else fp} "
                      f"({len(u)} shards, e.g. {u[0]})" for fp, u in sorted(groups.items()))
    raise EncodeFolderError(f"{what} mix latents of {len(groups)} different encodes: {parts}; a model trained on "
                            f"them would learn several latent spaces: re-encode them all with one autoencoder "
                            f"(`lafa encode ... --overwrite`) or point to one encode's shards")
