"""A model from anywhere, ready to use: a checkpoint file, a bundle folder or a Hub repo id -> a DiT stage or an
autoencoder (`from_pretrained`, what `lafa generate` loads). Autoencoders alone come from `lafa.stages.loading`."""

from __future__ import annotations

from pathlib import Path

from lafa.checkpoints import read_checkpoint, stored_stage
from lafa.stages.dit import DitStage
from lafa.stages.loading import load_autoencoder, load_stage


def load_bundle(folder: str | Path, autoencoder=None):  # noqa: ANN001, ANN201
    """The model a bundle folder holds: an autoencoder (VAE or LAFA), or a DiT stage carrying its own autoencoder
    (`autoencoder` replaces it)."""
    from lafa.bundles import build_autoencoder, load_into, read_bundle

    folder = Path(folder)
    config, state = read_bundle(folder)
    if config["kind"] != "dit":
        return build_autoencoder(config, state, folder)
    stage = DitStage(autoencoder_ckpt=None, model=dict(config["components"]["dit"]), **config.get("stage_args", {}))
    load_into(stage.model, state, "dit", folder)
    ae = autoencoder if autoencoder is not None else build_autoencoder(config, state, folder)
    stage.frozen.autoencoder = ae.requires_grad_(False).eval()
    return stage.eval()


def load_model(name: str | Path, autoencoder_ckpt: str | Path | None = None, map_location: str = "cpu"):
    """A checkpoint file, a bundle folder or a Hub repo id -> the model ready to use: a DiT stage (eval mode) for a
    DiT, an autoencoder for a VAE or LAFA. `autoencoder_ckpt` replaces a DiT's autoencoder (any source
    `load_autoencoder` takes). `from_pretrained` is the same function, under the name Hugging Face users know."""
    from lafa import hub
    from lafa.bundles import is_bundle

    path = hub.resolve(name)
    if path.is_dir() and is_bundle(path):
        ae = load_autoencoder(autoencoder_ckpt) if autoencoder_ckpt else None
        return load_bundle(path, autoencoder=ae).to(map_location)
    if path.is_dir() or path.suffix == ".safetensors":
        return load_autoencoder(path)
    ckpt = read_checkpoint(path)
    stage = stored_stage(ckpt, path)
    if stage is not None and hasattr(stage[0], "as_autoencoder"):
        return load_stage(path, ckpt=ckpt).as_autoencoder()
    overrides = {"autoencoder_ckpt": str(autoencoder_ckpt)} if autoencoder_ckpt else {}
    return load_stage(path, map_location, ckpt=ckpt, **overrides)


from_pretrained = load_model
