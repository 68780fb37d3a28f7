"""LightningModules, one per stage (vae, lafa, dit): they wire models, losses and metrics together."""
