"""Rebuild a stage or its autoencoder from a file: a `lafa fit` checkpoint or official Stable Audio weights.

A checkpoint's stored config is data: every class it names is checked against the trusted list
(`lafa.checkpoints.check_config_classes`) before anything is imported or called, and weights holding NaN or
inf are refused. Every way a file can be wrong is one `LafaUserError` naming the file and the fix.
"""

from __future__ import annotations

from pathlib import Path

import torch
import yaml

from lafa.checkpoints import (
    CHECKPOINT_CONFIG_KEY,
    check_config_classes,
    checkpoint_state_dict,
    read_checkpoint,
    read_trusted_checkpoint,
    trusted_class,
)
from lafa.errors import LafaUserError, MissingFileError

_SHOWN = 8


def stage_class_and_args(config_yaml: str, source: str | Path = "stored config") -> tuple[type, dict]:
    """The model class and init args named by a stored lafa config (refused unless every class it names is
    trusted; only then is the model's module imported)."""
    check_config_classes(config_yaml, source)
    config = yaml.safe_load(config_yaml)
    model = (config.get("model") if isinstance(config, dict) else None) or {}
    class_path = model.get("class_path")
    if not class_path:
        raise LafaUserError(f"{source}: its stored config has no model.class_path; pass a checkpoint written by "
                            f"`lafa fit`")
    return trusted_class(class_path, source), dict(model.get("init_args") or {})


def _stored_config(ckpt: dict, path: Path) -> str:
    stored = ckpt.get(CHECKPOINT_CONFIG_KEY)
    if stored is None:
        raise LafaUserError(f"{path} carries no lafa config: it was not written by `lafa fit` (pass a `lafa fit` "
                            f"checkpoint, or Stable Audio Open weights where an autoencoder is asked for)")
    return stored


def _listed(keys: list[str]) -> str:
    return ", ".join(keys[:_SHOWN]) + (f", ... ({len(keys) - _SHOWN} more)" if len(keys) > _SHOWN else "")


def load_stage(ckpt_path: str | Path, map_location: str | torch.device = "cpu", **overrides):
    """Instantiate the LightningModule a `lafa fit` checkpoint was trained as and load its weights (eval mode)."""
    ckpt_path = Path(ckpt_path)
    if not ckpt_path.is_file():
        raise MissingFileError(f"checkpoint not found: {ckpt_path} (check the path)")
    ckpt = read_trusted_checkpoint(ckpt_path)  # refuses untrusted classes and NaN/inf weights
    cls, init_args = stage_class_and_args(_stored_config(ckpt, ckpt_path), ckpt_path)
    init_args.update(overrides)
    # LightningCLI hands the hyperparameters of the stage it builds to every save_hyperparameters() called while
    # building it: a stage loaded inside another stage's __init__ would store the outer stage's arguments
    from lightning.pytorch.core.mixins.hparams_mixin import _given_hyperparameters

    token = _given_hyperparameters.set(None)
    try:
        stage = cls(**init_args)
    finally:
        _given_hyperparameters.reset(token)
    state = checkpoint_state_dict(ckpt, ckpt_path)
    expected = stage.state_dict()
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if expected[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        parts = [f"{ckpt_path}: its weights do not match the {cls.__name__} its stored config builds"]
        parts += [f"{what} ({len(keys)}): {_listed(keys)}" for what, keys in
                  (("missing keys", missing), ("unexpected keys", unexpected), ("wrongly shaped keys", wrong)) if keys]
        raise LafaUserError("; ".join(parts) + "; was the file edited, or written by another lafa version?")
    stage.load_state_dict(state, strict=True)
    if hasattr(stage, "on_load_checkpoint"):
        stage.on_load_checkpoint(ckpt)
    return stage.to(map_location).eval()


def load_autoencoder(path: str | Path, latent_dim: int = 64):
    """Any autoencoder file -> an object with the `lafa.models.autoencoder.Autoencoder` interface.

    - a `lafa fit` checkpoint of the VAE or LAFA stage: the stage's `as_autoencoder()`;
    - Stable Audio Open weights (`model.safetensors`, `model.ckpt`, or the unwrapped VAE): the Oobleck VAE.
    A checkpoint of another stage (a DiT) is refused before it is built.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"autoencoder file not found: {path} (a VAE or LAFA `lafa fit` checkpoint, or "
                               f"Stable Audio Open VAE weights such as model.safetensors)")
    if path.suffix != ".safetensors":
        stored = read_checkpoint(path).get(CHECKPOINT_CONFIG_KEY)
        if stored is not None:
            cls, _ = stage_class_and_args(stored, path)
            if not hasattr(cls, "as_autoencoder"):
                raise LafaUserError(
                    f"{path} is a {cls.__name__} checkpoint, not an autoencoder: give a VAE or LAFA stage "
                    f"checkpoint (`lafa fit --config configs/vae.yaml` or configs/lafa.yaml), or Stable Audio Open "
                    f"VAE weights (model.safetensors)")
            return load_stage(path).as_autoencoder()
    from lafa.checkpoints import load_sao_vae
    from lafa.models.autoencoder import VaeAutoencoder

    return VaeAutoencoder(load_sao_vae(path, latent_dim=latent_dim).eval())
