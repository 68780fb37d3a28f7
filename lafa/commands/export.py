"""`lafa export`: a checkpoint as a bundle folder (any stage), or a VAE stage's weights alone as safetensors.

`--out DIR` (a folder, or a name without a suffix): a bundle, the unit of sharing (docs/bundles.md):
config.json, model.safetensors (the model and its whole frozen chain: a DiT carries its LAFA and VAE, a LAFA its
VAE) and README.md (a model card written from the checkpoint, its data and its logged metrics). Every `--ckpt_path`
of lafa takes the folder (or its Hub repo id after `lafa push`).
`--out FILE.safetensors`: a VAE stage checkpoint's EMA (or `--weights raw`) weights alone in the official unwrapped
layout (`encoder.layers.N...`), which `lafa.checkpoints.load_sao_vae` reads back.

examples:
  lafa export --ckpt_path runs/demo/dit/checkpoints/last.ckpt --out bundles/demo-dit
  lafa export --ckpt_path runs/vae/checkpoints/last.ckpt --out vae.safetensors
  lafa export --ckpt_path runs/vae/checkpoints/last.ckpt --weights raw --out vae_raw.safetensors

A checkpoint whose stored config names untrusted classes, or whose weights hold NaN or inf, is refused (and, for a
.safetensors file, a checkpoint of another stage than the VAE's); nothing is written then. A bundle is written
whole or not at all (staged beside --out, then renamed); an existing bundle at --out is replaced, any other
non-empty folder refused."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
from jsonargparse import ArgumentParser

from lafa.checkpoints import read_checkpoint, save_vae_safetensors, stored_stage
from lafa.commands.options import command_parser, parse
from lafa.errors import BadInput, LafaUserError

# where each weight set of a VAE-stage checkpoint lies: with lafa.stages.ema.WarmupEMA (configs/vae.yaml) the
# state_dict holds the averaged weights and `current_model_state` the trained ones (Lightning's WeightAveraging)
SOURCES = {"ema": "state_dict", "raw": "current_model_state"}


def vae_weights(ckpt_path: str | Path, weights: str = "ema") -> dict[str, torch.Tensor]:
    """The VAE tensors (`vae.*`) of a `lafa fit` VAE-stage checkpoint under unwrapped names: the EMA weights
    (the checkpoint's state_dict) or, for "raw", the trained ones (`current_model_state`; a run without the EMA
    callback has only one set, which both give)."""
    from lafa.stages.vae import VaeStage

    ckpt = read_checkpoint(ckpt_path)  # refuses untrusted classes and NaN/inf weights
    cls = (stored_stage(ckpt, ckpt_path) or (VaeStage, None))[0]  # a `lafa fit` checkpoint must be the VAE stage's
    if not issubclass(cls, VaeStage):
        raise LafaUserError(f"{ckpt_path} is a {cls.__name__} checkpoint; lafa export writes a VAE stage's "
                            f"weights: pass a checkpoint of `lafa fit --config configs/vae.yaml` (a LAFA or DiT "
                            f"stage's VAE is the file its config names)")
    state = ckpt.get(SOURCES[weights]) or ckpt["state_dict"]
    found = {k[len("vae."):]: v for k, v in state.items() if k.startswith("vae.")}
    if not found:
        tops = sorted({k.split(".", 1)[0] for k in state})
        raise LafaUserError(f"{ckpt_path} holds no VAE weights under vae. (top-level names: {tops}); "
                            f"pass a VAE stage checkpoint")
    return found


def build_parser() -> ArgumentParser:
    parser = command_parser("lafa export", __doc__)
    parser.add_argument("--ckpt_path", type=str, required=True,
                        help="a `lafa fit` checkpoint: any stage for a bundle, the VAE stage for a .safetensors file")
    parser.add_argument("--out", type=str, required=True,
                        help="a folder (or a name without a suffix): the bundle to write; a .safetensors file: the VAE "
                             "weights alone")
    parser.add_argument("--weights", type=Literal["ema", "raw"], default="ema",
                        help="ema: the EMA copy (the trained weights if the run kept no EMA); raw: the trained weights")
    return parser


def main(argv: list[str]) -> int:
    args = parse(build_parser(), argv)
    if not Path(args.ckpt_path).is_file():
        raise BadInput(f"--ckpt_path {args.ckpt_path}", "no such file",
                       "give a checkpoint written by `lafa fit --config configs/vae.yaml`, e.g. "
                       "runs/vae/checkpoints/last.ckpt")
    out = Path(args.out)
    if out.is_dir() or not out.suffix:
        if args.weights != "ema":
            raise BadInput("--weights raw", "a bundle holds the weights the checkpoint's state_dict holds (the EMA "
                                            "where the run kept one)", "drop --weights, or give --out FILE.safetensors")
        from lafa.bundles.write import export_bundle

        folder = export_bundle(args.ckpt_path, out)
        print(f"wrote the bundle {folder}: " + ", ".join(
            f"{p.name} ({p.stat().st_size / 1e6:.2f} MB)" for p in sorted(folder.iterdir())))
        return 0
    if out.suffix != ".safetensors":
        raise BadInput(f"--out {out}", f"a {out.suffix} file is neither a bundle folder nor a .safetensors file",
                       "give a folder for a bundle, or FILE.safetensors for a VAE's weights")
    state = vae_weights(args.ckpt_path, args.weights)
    out = save_vae_safetensors(state, args.out)
    print(f"wrote {len(state)} tensors ({sum(v.numel() for v in state.values()) / 1e6:.2f} M parameters) to {out}")
    return 0
