"""`lafa encode`: pre-encode audio shards into latent shards (.npy + JSON, same shard names) with any autoencoder,
for `lafa.data.LatentDataModule`.

examples:
  lafa encode --ckpt_path runs/demo/lafa/checkpoints/last.ckpt --shards 'data/demo/shards/train-*.tar' \\
      --out data/demo/latents
  lafa encode --ckpt_path stabilityai/stable-audio-open-1.0 --shards 'data/fsd/train-*.tar' \\
      --shards 'data/fma/train-*.tar' --out data/latents --vae_dtype bfloat16

A throughput job: `--workers` processes decode audio ahead of the encoder, equal-length clips are encoded
`--batch_size` at a time through the VAE's inference path (folded weight norm, fused SnakeBeta, chunked long
clips; `--vae_dtype bfloat16` where the device has native bf16). Progress shows audio seconds and audio-hours/s;
the end reports audio-hours per CPU-hour. Re-running skips finished shards after checking that the same autoencoder
weights and settings made them (their fingerprint); a folder another encode wrote is refused (`--overwrite`
re-encodes). One `lafa encode` per --out at a time (a lock); its decode workers die with it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import torch
from jsonargparse import ActionYesNo, ArgumentParser

from lafa.commands.options import command_parser, parse, print_device
from lafa.data.latent_shards import encode_corpus, encode_fingerprint, prepare_output
from lafa.data.stream import expand_shards
from lafa.devices import DEVICE_HELP, resolve_device
from lafa.errors import BadInput


def build_parser() -> ArgumentParser:
    parser = command_parser("lafa encode", __doc__)
    parser.add_argument("--ckpt_path", type=str, required=True,
                        help="a `lafa fit` VAE or LAFA checkpoint, a VAE or LAFA bundle folder or Hub repo id, or "
                             "Stable Audio Open (stabilityai/stable-audio-open-1.0, or its VAE weights file)")
    parser.add_argument("--shards", type=str, action="append", required=True,
                        help="audio shard spec ('data/x/train-*.tar', 'train-{000000..000009}.tar'); repeat "
                             "--shards for several: every one is encoded")
    parser.add_argument("--out", type=str, required=True, help="output folder for the latent shards")
    parser.add_argument("--batch_size", type=int, default=8, help="equal-length chunks encoded together")
    parser.add_argument("--device", type=str, default="auto", help=DEVICE_HELP)
    parser.add_argument("--dtype", type=Literal["float32", "float16"], default="float32",
                        help="storage type of the latents")
    parser.add_argument("--latent_dim", type=int, default=64, help="latent channels of official SAO weights")
    parser.add_argument("--overwrite", action=ActionYesNo, default=False,
                        help="re-encode shards already in --out, also those another autoencoder or settings made")
    parser.add_argument("--workers", type=int, default=max(0, min(4, (os.cpu_count() or 1) - 1)),
                        help="audio decode processes (0: decode in the encoding process)")
    parser.add_argument("--vae_dtype", type=Literal["float32", "bfloat16"], default="float32",
                        help="VAE inference arithmetic; bfloat16 only where the device has native bf16")
    return parser


def main(argv: list[str]) -> int:
    args = parse(build_parser(), argv)
    from lafa.hub import looks_like_repo_id

    if not Path(args.ckpt_path).exists() and not looks_like_repo_id(args.ckpt_path):
        raise BadInput(f"--ckpt_path {args.ckpt_path}", "no such file or folder",
                       "give a VAE or LAFA checkpoint written by `lafa fit`, a bundle, or SAO's model.safetensors")
    for key, least in (("batch_size", 1), ("workers", 0)):
        if getattr(args, key) < least:
            raise BadInput(f"--{key} {getattr(args, key)}", f"must be an integer >= {least}", f"give --{key} {least}")
    where, fix = ("--shards " + " --shards ".join(args.shards),
                  "give a glob, brace pattern or folder of .tar shards (`make shards` writes data/demo/shards/)")
    try:
        urls = expand_shards(args.shards)
    except FileNotFoundError as e:
        raise BadInput(where, f"matches no shard files ({e})", fix) from e
    if not urls:
        raise BadInput(where, "matches no shard files", fix)
    device = resolve_device(args.device)
    print_device(device)
    lock = prepare_output(args.out)  # an unwritable or busy --out is refused before the model loads
    try:
        return _encode(args, urls, device)
    finally:
        lock.release()


def _encode(args, urls: list[str], device: torch.device) -> int:
    from lafa.stages.loading import load_autoencoder

    autoencoder = load_autoencoder(args.ckpt_path, latent_dim=args.latent_dim)
    made = encode_fingerprint(autoencoder, args.dtype, args.vae_dtype)  # the weights as stored, before folding
    if isinstance(autoencoder, torch.nn.Module):
        autoencoder = autoencoder.to(device).eval()
    engine = getattr(autoencoder, "engine", None)  # the VAE's InferenceVAE
    if args.vae_dtype == "bfloat16":
        if not hasattr(engine, "configure"):
            raise BadInput("--vae_dtype bfloat16", "needs an Oobleck VAE autoencoder", "use --vae_dtype float32")
        try:
            engine.configure(dtype=torch.bfloat16)
        except ValueError as e:
            raise BadInput("--vae_dtype bfloat16", str(e), "use --vae_dtype float32") from e
    stats = encode_corpus(autoencoder, urls, args.out, args.batch_size, str(device), args.dtype,
                          source=Path(args.ckpt_path).name, overwrite=args.overwrite, workers=args.workers, made=made,
                          locked=True)
    print(stats.summary())
    if stats.moved:
        print(f"moved {len(stats.moved)} shards of another encode to {Path(args.out) / '.stale'}")
    print(f"fingerprint {made['fingerprint']} (autoencoder weights sha256 {made['made_by']['autoencoder_weights'][:16]})")
    print(f"wrote {len(stats.outputs)} latent shards to {args.out}")
    return 0
