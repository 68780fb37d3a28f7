"""Streaming WebDataset data for lafa: captions, crop/pad/mask, the DataModules, latent shards.

The DataModules (and with them Lightning) load on first use, so that the pure-tensor helpers here
(`lafa.data.geometry`, `lafa.data.transforms`) can be imported by models without importing Lightning.
"""

from __future__ import annotations

__all__ = ["AudioDataModule", "LatentDataModule"]


def __getattr__(name: str):
    if name in __all__:
        from lafa.data import datamodule

        return getattr(datamodule, name)
    raise AttributeError(f"module 'lafa.data' has no attribute {name!r}")
