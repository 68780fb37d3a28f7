"""`lafa encode --ckpt_path X --shards 'data/demo/shards/train-*.tar' --out data/demo/latents`: pre-encode audio
shards into latent shards (.npy + JSON, same shard names) with any autoencoder, for `lafa.data.LatentDataModule`."""

from __future__ import annotations

from pathlib import Path

import torch
from jsonargparse import ArgumentParser

from lafa.data.latent_shards import encode_shards
from lafa.data.stream import expand_shards


def main(argv: list[str]) -> int:
    parser = ArgumentParser(prog="lafa encode", description=__doc__)
    parser.add_argument("--config", action="config")
    parser.add_argument("--ckpt_path", type=str, required=True,
                        help="a `lafa fit` VAE or LAFA checkpoint, or Stable Audio Open VAE weights")
    parser.add_argument("--shards", type=str | list[str], required=True, help="audio shard spec(s)")
    parser.add_argument("--out", type=str, required=True, help="output folder for the latent shards")
    parser.add_argument("--batch_size", type=int, default=8, help="equal-length chunks encoded together")
    parser.add_argument("--device", type=str, default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", type=str, default="float32", choices=["float32", "float16"],
                        help="storage type of the latents")
    parser.add_argument("--latent_dim", type=int, default=64, help="latent channels of official SAO weights")
    parser.add_argument("--overwrite", type=bool, default=False, help="re-encode shards already in --out")
    args = parser.parse_args(argv)
    if not Path(args.ckpt_path).is_file():
        raise SystemExit(f"lafa encode: checkpoint not found: {args.ckpt_path}")
    from lafa.stages.loading import load_autoencoder

    autoencoder = load_autoencoder(args.ckpt_path, latent_dim=args.latent_dim)
    if isinstance(autoencoder, torch.nn.Module):
        autoencoder = autoencoder.to(args.device).eval()
    outputs = encode_shards(autoencoder, expand_shards(args.shards), args.out, args.batch_size, args.device,
                            args.dtype, source=Path(args.ckpt_path).name, overwrite=args.overwrite)
    print(f"wrote {len(outputs)} latent shards to {args.out}")
    return 0
