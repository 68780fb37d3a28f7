"""`lafa export --ckpt_path X --out vae.safetensors`: a VAE stage checkpoint's EMA weights alone, as safetensors
in the official unwrapped layout (`encoder.layers.N...`), which `lafa.checkpoints.load_sao_vae` reads back."""

from __future__ import annotations

from pathlib import Path

import torch
from jsonargparse import ArgumentParser

from lafa.checkpoints import save_vae_safetensors

PREFIXES = {"ema": "vae_ema.", "raw": "vae."}


def vae_weights(ckpt_path: str | Path, weights: str = "ema") -> dict[str, torch.Tensor]:
    """The VAE tensors of a `lafa fit` VAE-stage checkpoint under unwrapped names: the EMA copy (`vae_ema.`) when
    weights="ema" and the checkpoint has one (else the trained weights, `vae.`), or the trained ones for "raw"."""
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    state = ckpt.get("state_dict") if isinstance(ckpt, dict) else None
    if not isinstance(state, dict):
        raise ValueError(f"{ckpt_path} is not a Lightning checkpoint (no 'state_dict')")
    order = ["vae_ema.", "vae."] if weights == "ema" else ["vae."]
    for prefix in order:
        found = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        if found:
            return found
    tops = sorted({k.split(".", 1)[0] for k in state})
    raise ValueError(f"{ckpt_path} holds no VAE weights under {' or '.join(order)} (top-level names: {tops})")


def main(argv: list[str]) -> int:
    parser = ArgumentParser(prog="lafa export", description=__doc__)
    parser.add_argument("--config", action="config")
    parser.add_argument("--ckpt_path", type=str, required=True, help="a `lafa fit` checkpoint of the VAE stage")
    parser.add_argument("--out", type=str, required=True, help="output .safetensors file")
    parser.add_argument("--weights", type=str, default="ema", choices=list(PREFIXES),
                        help="ema (default; the trained weights if the run kept no EMA) or raw")
    args = parser.parse_args(argv)
    if not Path(args.ckpt_path).is_file():
        raise SystemExit(f"lafa export: checkpoint not found: {args.ckpt_path}")
    state = vae_weights(args.ckpt_path, args.weights)
    out = save_vae_safetensors(state, args.out)
    print(f"wrote {len(state)} tensors ({sum(v.numel() for v in state.values()) / 1e6:.2f} M parameters) to {out}")
    return 0
