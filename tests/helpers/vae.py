"""A small seeded OobleckVAE with non-trivial gains, for tests that compare VAE code paths bit for bit."""

from __future__ import annotations

import torch

from lafa.models.oobleck import OobleckVAE


def seeded_vae(**kwargs) -> OobleckVAE:
    """OobleckVAE(**kwargs) built under seed 0, then its snake logs and weight-norm gains moved off their trivial
    init (zero / unit) with generator seed 1: the same weights on every call."""
    torch.manual_seed(0)
    vae = OobleckVAE(**kwargs)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in vae.named_parameters():
            if name.endswith((".alpha", ".beta")):
                p.copy_(0.3 * torch.randn(p.shape, generator=g))
            elif name.endswith("weight_g"):
                p.mul_(1 + 0.2 * torch.randn(p.shape, generator=g))
    return vae


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| / max |b|, in float64."""
    return ((a.double() - b.double()).abs().max() / b.double().abs().max()).item()
