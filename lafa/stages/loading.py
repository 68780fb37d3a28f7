"""Rebuild a stage or its autoencoder from a file: a `lafa fit` checkpoint or official Stable Audio weights.

Files are read and checked by `lafa.checkpoints` (once each: the classes a stored config names are trusted, the
weights finite); every way a file can be wrong is one `LafaUserError` naming the file and the fix.
"""

from __future__ import annotations

from pathlib import Path

import torch

from lafa.checkpoints import key_mismatch, load_sao_vae, read_checkpoint, read_torch_file, stored_stage
from lafa.errors import LafaUserError, MissingFileError


def load_stage(ckpt_path: str | Path, map_location: str | torch.device = "cpu", ckpt: dict | None = None,
               **overrides):
    """Instantiate the LightningModule a `lafa fit` checkpoint was trained as and load its weights (eval mode);
    `ckpt`: the checkpoint already read from `ckpt_path`."""
    ckpt = ckpt if ckpt is not None else read_checkpoint(ckpt_path)
    stage = stored_stage(ckpt, ckpt_path)
    if stage is None:
        raise LafaUserError(f"{ckpt_path} carries no lafa config: it was not written by `lafa fit` (pass a `lafa fit` "
                            f"checkpoint, or Stable Audio Open weights where an autoencoder is asked for)")
    cls, init_args = stage
    init_args.update(overrides)
    # LightningCLI hands the hyperparameters of the stage it builds to every save_hyperparameters() called while
    # building it: a stage loaded inside another stage's __init__ would store the outer stage's arguments
    from lightning.pytorch.core.mixins.hparams_mixin import _given_hyperparameters

    token = _given_hyperparameters.set(None)
    try:
        stage = cls(**init_args)
    finally:
        _given_hyperparameters.reset(token)
    wrong = key_mismatch(stage.state_dict(), ckpt["state_dict"])
    if wrong:
        raise LafaUserError("; ".join([f"{ckpt_path}: its weights do not match the {cls.__name__} its stored config "
                                       f"builds", *wrong, "was the file edited, or written by another lafa version?"]))
    stage.load_state_dict(ckpt["state_dict"], strict=True)
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
    from lafa.models.autoencoder import VaeAutoencoder

    stage = stored_stage(read_torch_file(path), path) if path.suffix != ".safetensors" else None
    if stage is not None:
        cls, ckpt = stage[0], read_checkpoint(path)
        if not hasattr(cls, "as_autoencoder"):
            raise LafaUserError(
                f"{path} is a {cls.__name__} checkpoint, not an autoencoder: give a VAE or LAFA stage "
                f"checkpoint (`lafa fit --config configs/vae.yaml` or configs/lafa.yaml), or Stable Audio Open "
                f"VAE weights (model.safetensors)")
        return load_stage(path, ckpt=ckpt).as_autoencoder()
    return VaeAutoencoder(load_sao_vae(path, latent_dim=latent_dim).eval())
