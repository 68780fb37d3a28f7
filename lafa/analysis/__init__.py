"""Latent analysis of Sec. 3 / Appendices C and G: spectral slope, LPI, correlation maps, channel ablation."""
