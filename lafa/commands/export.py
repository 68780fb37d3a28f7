"""`lafa export`: a VAE stage checkpoint's EMA weights alone, as safetensors in the official unwrapped layout
(`encoder.layers.N...`), which `lafa.checkpoints.load_sao_vae` reads back.

examples:
  lafa export --ckpt_path runs/vae/checkpoints/last.ckpt --out vae.safetensors
  lafa export --ckpt_path runs/vae/checkpoints/last.ckpt --weights raw --out vae_raw.safetensors

A checkpoint of another stage, one whose stored config names untrusted classes, and weights holding NaN or inf
are refused, and nothing is written."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
from jsonargparse import ArgumentParser

from lafa.checkpoints import (
    CHECKPOINT_CONFIG_KEY,
    check_config_classes,
    checkpoint_state_dict,
    read_checkpoint,
    refuse_nonfinite,
    save_vae_safetensors,
    trusted_class,
)
from lafa.commands.options import command_parser, parse
from lafa.errors import BadInput, LafaUserError

PREFIXES = {"ema": "vae_ema.", "raw": "vae."}


def vae_weights(ckpt_path: str | Path, weights: str = "ema") -> dict[str, torch.Tensor]:
    """The VAE tensors of a `lafa fit` VAE-stage checkpoint under unwrapped names: the EMA copy (`vae_ema.`) when
    weights="ema" and the checkpoint has one (else the trained weights, `vae.`), or the trained ones for "raw"."""
    ckpt = read_checkpoint(ckpt_path)
    stored = ckpt.get(CHECKPOINT_CONFIG_KEY)
    if stored is not None:  # a `lafa fit` checkpoint: it must be the VAE stage's
        import yaml

        from lafa.stages.vae import VaeStage

        check_config_classes(stored, ckpt_path)
        class_path = ((yaml.safe_load(stored) or {}).get("model") or {}).get("class_path", "")
        cls = trusted_class(class_path, ckpt_path) if class_path else None
        if cls is not None and not issubclass(cls, VaeStage):
            raise LafaUserError(f"{ckpt_path} is a {cls.__name__} checkpoint; lafa export writes a VAE stage's "
                                f"weights: pass a checkpoint of `lafa fit --config configs/vae.yaml` (a LAFA or DiT "
                                f"stage's VAE is the file its config names)")
    state = checkpoint_state_dict(ckpt, ckpt_path)
    order = ["vae_ema.", "vae."] if weights == "ema" else ["vae."]
    for prefix in order:
        found = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        if found:
            refuse_nonfinite(found, f"{ckpt_path} ({prefix}* weights)",
                             "the run that wrote it diverged; nothing was exported: export an earlier checkpoint")
            return found
    tops = sorted({k.split(".", 1)[0] for k in state})
    raise LafaUserError(f"{ckpt_path} holds no VAE weights under {' or '.join(order)} (top-level names: {tops}); "
                        f"pass a VAE stage checkpoint")


def build_parser() -> ArgumentParser:
    parser = command_parser("lafa export", __doc__)
    parser.add_argument("--ckpt_path", type=str, required=True,
                        help="a checkpoint of the VAE stage, written by `lafa fit --config configs/vae.yaml`")
    parser.add_argument("--out", type=str, required=True, help="the .safetensors file to write")
    parser.add_argument("--weights", type=Literal["ema", "raw"], default="ema",
                        help="ema: the EMA copy (the trained weights if the run kept no EMA); raw: the trained weights")
    return parser


def main(argv: list[str]) -> int:
    args = parse(build_parser(), argv)
    if not Path(args.ckpt_path).is_file():
        raise BadInput(f"--ckpt_path {args.ckpt_path}", "no such file",
                       "give a checkpoint written by `lafa fit --config configs/vae.yaml`, e.g. "
                       "runs/vae/checkpoints/last.ckpt")
    if Path(args.out).is_dir():
        raise BadInput(f"--out {args.out}", "is a folder", "give the file to write, e.g. --out vae.safetensors")
    state = vae_weights(args.ckpt_path, args.weights)
    out = save_vae_safetensors(state, args.out)
    print(f"wrote {len(state)} tensors ({sum(v.numel() for v in state.values()) / 1e6:.2f} M parameters) to {out}")
    return 0
