"""lafa: make latent audio diffusion listen like mel (LAFA bottleneck, DiTs, analysis, evaluation)."""

__version__ = "0.1.0"
