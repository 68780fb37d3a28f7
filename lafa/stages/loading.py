"""Rebuild a stage or its autoencoder from what a user names: a `lafa fit` checkpoint, a bundle folder, a Hub
repo id or official Stable Audio weights (a DiT or a bundle of one: `lafa.stages.pretrained`).

Files are read and checked by `lafa.checkpoints`; every way a file can be wrong is one `LafaUserError` naming
the file and the fix.
"""

from __future__ import annotations

from pathlib import Path

import torch

from lafa.checkpoint_files import missing_files
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
    stage.on_load_checkpoint(ckpt)
    return stage.to(map_location).eval()


def load_autoencoder(path: str | Path, latent_dim: int = 64):
    """Any autoencoder source -> an object with the `lafa.models.autoencoder.Autoencoder` interface, frozen
    (no gradients) and in eval mode, however it was stored: the same arithmetic from a checkpoint, a bundle or
    the Hub (a few kernels choose their path by `requires_grad`).

    - a `lafa fit` checkpoint of the VAE or LAFA stage: the stage's `as_autoencoder()`;
    - a VAE or LAFA bundle folder, or its Hub repo id (`lafa.bundles`);
    - Stable Audio Open: its Hub repo id or folder (`model_config.json` + `model.safetensors`, e.g.
      `stabilityai/stable-audio-open-1.0`), or its weights file (`model.safetensors`, `model.ckpt`, or the unwrapped
      VAE, read with `latent_dim`): the Oobleck VAE.
    A checkpoint or bundle of another stage (a DiT) is refused before it is built.
    """
    from lafa import hub
    from lafa.bundles import build_autoencoder, is_bundle, read_bundle, read_config
    from lafa.models.autoencoder import VaeAutoencoder

    path = hub.resolve(path)
    if path.is_dir():
        if is_bundle(path):
            if read_config(path)["kind"] == "dit":
                raise LafaUserError(f"{path} is a DiT bundle, not an autoencoder: give a VAE or LAFA "
                                    f"bundle or checkpoint, or Stable Audio Open "
                                    f"(stabilityai/stable-audio-open-1.0)")
            ae = build_autoencoder(*read_bundle(path), path)
        elif hub.is_sao_folder(path):
            vae = load_sao_vae(path / "model.safetensors", **hub.sao_vae_arguments(path))
            ae = VaeAutoencoder(vae.eval())
        else:
            raise LafaUserError(f"{path} is a folder but neither a lafa bundle (config.json + "
                                f"model.safetensors) nor Stable Audio Open's files (model_config.json + "
                                f"model.safetensors); give one of those, or a file")
    elif not path.is_file():
        recorded = missing_files.get(str(path))  # the checkpoint's record of it: fingerprint, override
        raise MissingFileError(f"autoencoder file not found: {recorded}" if recorded else (
            f"autoencoder file not found: {path} (a VAE or LAFA `lafa fit` checkpoint, a lafa bundle folder "
            f"or Hub repo id, or Stable Audio Open VAE weights such as model.safetensors)"))
    else:
        stage = stored_stage(read_torch_file(path), path) if path.suffix != ".safetensors" else None
        if stage is None:
            ae = VaeAutoencoder(load_sao_vae(path, latent_dim=latent_dim).eval())
        else:
            cls, ckpt = stage[0], read_checkpoint(path)
            if not hasattr(cls, "as_autoencoder"):
                raise LafaUserError(
                    f"{path} is a {cls.__name__} checkpoint, not an autoencoder: give a VAE or LAFA stage "
                    f"checkpoint (`lafa fit --config configs/vae.yaml` or configs/lafa.yaml), or Stable "
                    f"Audio Open VAE weights (model.safetensors)")
            ae = load_stage(path, ckpt=ckpt).as_autoencoder()
    return ae.requires_grad_(False).eval()
