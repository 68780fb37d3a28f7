"""A bundle: the unit of sharing a lafa model, a folder that works anywhere with no other file: config.json (what
builds the model, no paths), model.safetensors (the model and its whole frozen chain, one prefix per component:
`dit.*`, `lafa.*`, `vae.*`) and README.md (a model card, `lafa.bundles.card`); docs/bundles.md.

This package reads bundles and builds their autoencoders; it imports no stage. `lafa.bundles.write.export_bundle`
writes one (`lafa export --out DIR`); `lafa.stages.pretrained.from_pretrained` loads one.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from lafa.errors import LafaUserError

FORMAT = "lafa-bundle"
VERSION = 1
CONFIG, WEIGHTS = "config.json", "model.safetensors"
COMPONENTS = ("dit", "lafa", "vae")  # the chain, top down


def is_bundle(folder: str | Path) -> bool:
    folder = Path(folder)
    if not (folder / CONFIG).is_file():
        return False
    try:
        return json.loads((folder / CONFIG).read_text()).get("format") == FORMAT
    except (json.JSONDecodeError, AttributeError):
        return False


def read_config(folder: str | Path) -> dict:
    folder = Path(folder)
    try:
        config = json.loads((folder / CONFIG).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise LafaUserError(f"{folder / CONFIG}: cannot read the bundle's config ({e}); export the bundle again "
                            f"(`lafa export --ckpt_path X --out {folder}`)") from e
    if config.get("format") != FORMAT or int(config.get("version", 0)) > VERSION:
        raise LafaUserError(f"{folder / CONFIG}: not a lafa bundle of version <= {VERSION} (format "
                            f"{config.get('format')!r}, version {config.get('version')!r}); use the lafa that wrote it")
    return config


def load_into(module: torch.nn.Module, state: dict[str, torch.Tensor], prefix: str, source: Path) -> None:
    """A component's weights (`<prefix>.*` of the bundle) into its module, strictly."""
    from lafa.checkpoints import key_mismatch

    part = {k[len(prefix) + 1:]: v for k, v in state.items() if k.startswith(prefix + ".")}
    wrong = key_mismatch(module.state_dict(), part)
    if wrong:
        raise LafaUserError("; ".join([f"{source}: its {prefix} weights do not match the {type(module).__name__} its "
                                       f"config.json builds", *wrong, "export the bundle again with this lafa"]))
    module.load_state_dict(part, strict=True)


def build_autoencoder(config: dict, state: dict[str, torch.Tensor], source: Path):
    """The autoencoder of a bundle's chain: `VaeAutoencoder` (vae) or `LafaAutoencoder` (lafa on vae), eval mode."""
    from lafa.models.autoencoder import LafaAutoencoder, VaeAutoencoder
    from lafa.models.lafa import Lafa
    from lafa.models.oobleck import OobleckVAE

    components = config["components"]
    vae = OobleckVAE(**components["vae"])
    load_into(vae, state, "vae", source)
    vae.requires_grad_(False).eval()
    if "lafa" not in components:
        return VaeAutoencoder(vae).eval()
    lafa = Lafa(**components["lafa"])
    load_into(lafa, state, "lafa", source)
    steps = int((config.get("autoencoder") or {}).get("decode_steps", 2))
    return LafaAutoencoder(vae, lafa.requires_grad_(False).eval(), default_steps=steps).eval()


def read_bundle(folder: str | Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """(config.json, the weights) of a bundle folder; `lafa.stages.pretrained.load_model` builds the model from them."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from lafa.checkpoints import refuse_nonfinite

    folder = Path(folder)
    config, path = read_config(folder), folder / WEIGHTS
    if not path.is_file():
        raise LafaUserError(f"{path}: missing; a bundle is config.json + model.safetensors (+ README.md): copy the "
                            f"whole folder")
    try:
        state = load_file(str(path), device="cpu")
    except SafetensorError as e:
        raise LafaUserError(f"{path} is truncated or not a safetensors file ({e}); copy the bundle again") from e
    refuse_nonfinite(state, path)
    return config, state
