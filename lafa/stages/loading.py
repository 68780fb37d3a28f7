"""Rebuild a stage or its autoencoder from a file: a `lafa fit` checkpoint or official Stable Audio weights."""

from __future__ import annotations

import importlib
from pathlib import Path

import torch
import yaml

from lafa.cli import read_checkpoint_config


def stage_class_and_args(config_yaml: str) -> tuple[type, dict]:
    """The model class and init args named by a stored lafa config."""
    config = yaml.safe_load(config_yaml)
    model = config.get("model") or {}
    class_path = model.get("class_path")
    if not class_path:
        raise ValueError("stored config has no model.class_path")
    module_name, _, cls_name = class_path.rpartition(".")
    cls = getattr(importlib.import_module(module_name), cls_name)
    return cls, dict(model.get("init_args") or {})


def load_stage(ckpt_path: str | Path, map_location: str | torch.device = "cpu", **overrides):
    """Instantiate the LightningModule a `lafa fit` checkpoint was trained as and load its weights (eval mode)."""
    ckpt_path = Path(ckpt_path)
    if not ckpt_path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {ckpt_path}")
    config_yaml = read_checkpoint_config(ckpt_path)
    if config_yaml is None:
        raise ValueError(f"{ckpt_path} carries no lafa config: it was not written by `lafa fit`")
    cls, init_args = stage_class_and_args(config_yaml)
    init_args.update(overrides)
    # LightningCLI hands the hyperparameters of the stage it builds to every save_hyperparameters() called while
    # building it: a stage loaded inside another stage's __init__ would store the outer stage's arguments
    from lightning.pytorch.core.mixins.hparams_mixin import _given_hyperparameters

    token = _given_hyperparameters.set(None)
    try:
        stage = cls(**init_args)
    finally:
        _given_hyperparameters.reset(token)
    ckpt = torch.load(ckpt_path, map_location=map_location, weights_only=True)
    stage.load_state_dict(ckpt["state_dict"], strict=True)
    if hasattr(stage, "on_load_checkpoint"):
        stage.on_load_checkpoint(ckpt)
    return stage.eval()


def load_autoencoder(path: str | Path, latent_dim: int = 64):
    """Any autoencoder file -> an object with the `lafa.models.autoencoder.Autoencoder` interface.

    - a `lafa fit` checkpoint of the VAE or LAFA stage: the stage's `as_autoencoder()`;
    - Stable Audio Open weights (`model.safetensors`, `model.ckpt`, or the unwrapped VAE): the Oobleck VAE.
    """
    path = Path(path)
    if path.suffix == ".ckpt" and read_checkpoint_config(path) is not None:
        return load_stage(path).as_autoencoder()
    from lafa.checkpoints import load_sao_vae
    from lafa.models.autoencoder import VaeAutoencoder

    return VaeAutoencoder(load_sao_vae(path, latent_dim=latent_dim).eval())
