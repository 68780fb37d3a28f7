"""Plain nn.Modules (no Lightning): the VAE, the LAFA bottleneck, the DiTs and their blocks."""
