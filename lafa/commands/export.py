"""`lafa export --ckpt_path X --out vae.safetensors`: a VAE stage checkpoint's EMA weights alone, as safetensors
in the official unwrapped layout (`encoder.layers.N...`), which `lafa.checkpoints.load_sao_vae` reads back.
A checkpoint of another stage, one whose stored config names untrusted classes, and weights holding NaN or inf
are refused, and nothing is written."""

from __future__ import annotations

from pathlib import Path

import torch
from jsonargparse import ArgumentParser

from lafa.checkpoints import read_checkpoint, save_vae_safetensors, stored_stage
from lafa.errors import LafaUserError

PREFIXES = {"ema": "vae_ema.", "raw": "vae."}


def vae_weights(ckpt_path: str | Path, weights: str = "ema") -> dict[str, torch.Tensor]:
    """The VAE tensors of a `lafa fit` VAE-stage checkpoint under unwrapped names: the EMA copy (`vae_ema.`) when
    weights="ema" and the checkpoint has one (else the trained weights, `vae.`), or the trained ones for "raw"."""
    from lafa.stages.vae import VaeStage

    ckpt = read_checkpoint(ckpt_path)  # refuses untrusted classes and NaN/inf weights
    cls = (stored_stage(ckpt, ckpt_path) or (VaeStage, None))[0]  # a `lafa fit` checkpoint must be the VAE stage's
    if not issubclass(cls, VaeStage):
        raise LafaUserError(f"{ckpt_path} is a {cls.__name__} checkpoint; lafa export writes a VAE stage's "
                            f"weights: pass a checkpoint of `lafa fit --config configs/vae.yaml` (a LAFA or DiT "
                            f"stage's VAE is the file its config names)")
    order = ["vae_ema.", "vae."] if weights == "ema" else ["vae."]
    for prefix in order:
        found = {k[len(prefix):]: v for k, v in ckpt["state_dict"].items() if k.startswith(prefix)}
        if found:
            return found
    tops = sorted({k.split(".", 1)[0] for k in ckpt["state_dict"]})
    raise LafaUserError(f"{ckpt_path} holds no VAE weights under {' or '.join(order)} (top-level names: {tops}); "
                        f"pass a VAE stage checkpoint")


def main(argv: list[str]) -> int:
    parser = ArgumentParser(prog="lafa export", description=__doc__)
    parser.add_argument("--config", action="config")
    parser.add_argument("--ckpt_path", type=str, required=True, help="a `lafa fit` checkpoint of the VAE stage")
    parser.add_argument("--out", type=str, required=True, help="output .safetensors file")
    parser.add_argument("--weights", type=str, default="ema", choices=list(PREFIXES),
                        help="ema (default; the trained weights if the run kept no EMA) or raw")
    args = parser.parse_args(argv)
    state = vae_weights(args.ckpt_path, args.weights)
    out = save_vae_safetensors(state, args.out)
    print(f"wrote {len(state)} tensors ({sum(v.numel() for v in state.values()) / 1e6:.2f} M parameters) to {out}")
    return 0
