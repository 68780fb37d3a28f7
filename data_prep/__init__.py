"""make shards: readers for FreeSound/FSD50K, FMA and generic folders, licence filter, dedup, Appendix-B
captions, 44.1 kHz stereo chunks, and deterministic, resumable WebDataset shards (`python -m data_prep`)."""
