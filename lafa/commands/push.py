"""`lafa push`: upload a bundle folder (`lafa export --out DIR`) to the Hugging Face Hub with huggingface_hub.

examples:
  lafa push --bundle bundles/demo-dit --repo_id me/lafa-demo-dit
  lafa push --bundle bundles/demo-lafa --repo_id me/lafa-demo-lafa --private true

The model repo is created if it does not exist; the folder's files (config.json, model.safetensors, README.md)
are committed as they are. Authentication is huggingface_hub's (`hf auth login`, or HF_TOKEN). Anyone can then
pass the repo id wherever lafa takes a model (`lafa generate --ckpt_path me/lafa-demo-dit`,
`lafa.stages.pretrained.from_pretrained("me/lafa-demo-dit")`).
"""

from __future__ import annotations

from pathlib import Path

from jsonargparse import ArgumentParser

from lafa.commands.options import command_parser, parse
from lafa.errors import BadInput


def build_parser() -> ArgumentParser:
    parser = command_parser("lafa push", __doc__)
    parser.add_argument("--bundle", type=str, required=True, help="the bundle folder `lafa export --out DIR` wrote")
    parser.add_argument("--repo_id", type=str, required=True, help="the Hub model repo, e.g. me/lafa-demo-dit")
    parser.add_argument("--private", type=bool, default=False, help="create the repo private (if it is new)")
    parser.add_argument("--message", type=str | None, default=None, help="the commit message (default: names the folder)")
    return parser


def main(argv: list[str]) -> int:
    from lafa import hub
    from lafa.bundles import is_bundle, read_config

    args = parse(build_parser(), argv)
    folder = Path(args.bundle)
    if not is_bundle(folder):
        raise BadInput(f"--bundle {folder}", "not a lafa bundle (no config.json of format lafa-bundle)",
                       "write one with `lafa export --ckpt_path X --out DIR` and push DIR")
    read_config(folder)
    missing = [name for name in ("model.safetensors", "README.md") if not (folder / name).is_file()]
    if missing:
        raise BadInput(f"--bundle {folder}", f"{', '.join(missing)} missing", "export the bundle again")
    if not hub.looks_like_repo_id(args.repo_id) or "@" in args.repo_id:
        raise BadInput(f"--repo_id {args.repo_id}", "not a Hub repo id", "give OWNER/NAME, e.g. me/lafa-demo-dit")
    url = hub.push(folder, args.repo_id, private=args.private, commit_message=args.message)
    print(f"pushed {folder} to https://huggingface.co/{args.repo_id} ({url})")
    return 0
