"""Streaming WebDataset data for lafa: captions, crop/pad/mask, the DataModules, latent shards."""
