"""A model from anywhere, ready to use: a checkpoint file, a bundle folder or a Hub repo id -> a DiT stage or an
autoencoder (`from_pretrained`, what `lafa generate` loads); a bundle's whole stage for `lafa test|validate
--ckpt_path BUNDLE_OR_REPO_ID` (`stage_config` + `load_stage_weights`, docs/bundles.md)."""

from __future__ import annotations

import inspect
from pathlib import Path

from lightning.pytorch import LightningModule

from lafa.checkpoints import load_vae_state_dict, read_checkpoint, read_vae_state_dict, stored_stage
from lafa.config_trust import check_config_classes, trusted_class
from lafa.stages.dit import DitStage
from lafa.stages.loading import load_autoencoder, load_stage

DEFAULT_DATA_CLASS = "lafa.data.AudioDataModule"  # bundles written before `data_class` was recorded


def stage_config(folder: str | Path) -> dict:
    """The `model:` and `data:` config sections that rebuild a bundle's stage: the stage's class and arguments
    (a LAFA stage reads its VAE from the bundle's weights, a DiT stage gets its autoencoder in `load_stage_weights`),
    and the run's DataModule class with its scalar settings (crop, rate, batch size), without shards. Stable Audio
    Open's files (`model_config.json` + `model.safetensors`) rebuild a VAE stage of its VAE."""
    from lafa import hub
    from lafa.bundles import WEIGHTS, read_config

    folder = Path(folder)
    if hub.is_sao_folder(folder):  # Stable Audio Open's files: its VAE, as a VAE stage
        vae = hub.sao_vae_arguments(folder)
        return {"model": {"class_path": "lafa.stages.vae.VaeStage", "init_args": {"model": vae}},
                "data": {"class_path": DEFAULT_DATA_CLASS, "init_args": {"sample_rate": vae["sample_rate"]}}}
    config = read_config(folder)
    components, kind, source = config["components"], config["kind"], folder / "config.json"
    accepted = inspect.signature(trusted_class(config["stage"], source)).parameters
    init_args = {k: v for k, v in (config.get("stage_args") or {}).items() if k in accepted}
    if kind == "vae":
        init_args["model"] = components["vae"]
    elif kind == "lafa":
        init_args.update(vae_ckpt=str(folder / WEIGHTS), vae_args=components["vae"], model=components["lafa"])
    else:
        init_args.update(autoencoder_ckpt=None, model=components["dit"])
    data_class = config.get("data_class") or DEFAULT_DATA_CLASS
    accepted = inspect.signature(trusted_class(data_class, source, "data_class")).parameters
    data = {k: v for k, v in (config.get("data") or {}).items() if k in accepted}
    sections = {"model": {"class_path": config["stage"], "init_args": init_args},
                "data": {"class_path": data_class, "init_args": data}}
    check_config_classes(sections, source)  # a bundle from the Hub is data: it names trusted classes only
    return sections


def load_stage_weights(stage: LightningModule, folder: str | Path, autoencoder=None) -> LightningModule:  # noqa: ANN001
    """A bundle's weights into the stage `stage_config` built, component by component and strictly (a DiT stage
    also gets the bundle's autoencoder, or `autoencoder`; Stable Audio Open's files: its VAE); returns the stage."""
    from lafa import hub
    from lafa.bundles import build_autoencoder, load_into, read_bundle

    folder = Path(folder)
    if hub.is_sao_folder(folder):
        weights = folder / "model.safetensors"
        load_vae_state_dict(stage.vae, read_vae_state_dict(weights), source=str(weights))
        return stage
    config, state = read_bundle(folder)
    kind = config["kind"]
    if kind == "dit":
        load_into(stage.model, state, "dit", folder)
        ae = autoencoder if autoencoder is not None else build_autoencoder(config, state, folder)
        stage.frozen.autoencoder = ae.requires_grad_(False).eval()
        return stage
    load_into(stage.vae, state, "vae", folder)
    if kind == "lafa":
        load_into(stage.lafa, state, "lafa", folder)
    return stage


def load_model(name: str | Path, autoencoder_ckpt: str | Path | None = None, map_location: str = "cpu"):
    """A checkpoint file, a bundle folder or a Hub repo id -> the model ready to use: a DiT stage (eval mode) for a
    DiT, an autoencoder for a VAE or LAFA. `autoencoder_ckpt` replaces a DiT's autoencoder (any source
    `load_autoencoder` takes). `from_pretrained` is the same function, under the name Hugging Face users know."""
    from lafa import hub
    from lafa.bundles import build_autoencoder, is_bundle, read_bundle

    path = hub.resolve(name)
    if path.is_dir() and is_bundle(path):  # an autoencoder, or a DiT stage with its own or `autoencoder_ckpt`
        ae = load_autoencoder(autoencoder_ckpt) if autoencoder_ckpt else None
        config, state = read_bundle(path)
        if config["kind"] != "dit":
            return build_autoencoder(config, state, path).to(map_location)
        stage = DitStage(**stage_config(path)["model"]["init_args"])
        return load_stage_weights(stage, path, ae).eval().to(map_location)
    if path.is_dir() or path.suffix == ".safetensors":
        return load_autoencoder(path)
    ckpt = read_checkpoint(path)
    stage = stored_stage(ckpt, path)
    if stage is not None and hasattr(stage[0], "as_autoencoder"):
        return load_stage(path, ckpt=ckpt).as_autoencoder()
    overrides = {"autoencoder_ckpt": str(autoencoder_ckpt)} if autoencoder_ckpt else {}
    return load_stage(path, map_location, ckpt=ckpt, **overrides)


from_pretrained = load_model
