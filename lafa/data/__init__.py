"""Streaming WebDataset data for lafa: captions, crop/pad/mask, the DataModules, latent shards."""

from lafa.data.datamodule import AudioDataModule, LatentDataModule

__all__ = ["AudioDataModule", "LatentDataModule"]
