"""`export_bundle`: a `lafa fit` checkpoint of any stage -> a bundle folder (see `lafa.bundles`)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from torch import nn

from lafa.bundles import COMPONENTS, CONFIG, FORMAT, VERSION, WEIGHTS, is_bundle, read_config
from lafa.errors import LafaUserError

# stage arguments that are paths, training-only or output places: never in a bundle's config
_NOT_BUNDLED = {"autoencoder_ckpt", "vae_ckpt", "vae_args", "pretrained", "model", "test_eval", "compile"}


def vae_arguments(vae: nn.Module) -> dict:
    """The full OobleckVAE arguments of a built VAE (its shapes, latent size, rate and final activation)."""
    from lafa.checkpoints import infer_vae_kwargs
    from lafa.models.oobleck import OobleckVAE

    if not isinstance(vae, OobleckVAE):
        raise LafaUserError(f"the autoencoder's base is a {type(vae).__name__}, not an Oobleck VAE: a bundle carries "
                            f"VAE and LAFA weights only (stand-in latents are rebuilt from their config)")
    return {**infer_vae_kwargs(vae.state_dict()), "latent_dim": vae.latent_dim, "sample_rate": vae.sample_rate,
            "final_tanh": isinstance(vae.decoder.layers[-1], nn.Tanh)}


def _lafa_arguments(source: str, latent_channels: int) -> dict:
    """The full Lafa arguments of the LAFA an autoencoder file (checkpoint, bundle or Hub id) holds."""
    from lafa import hub
    from lafa.checkpoints import read_checkpoint, stored_stage
    from lafa.models.lafa import LAFA_PRESETS, Lafa
    from lafa.models.presets import model_arguments

    path = hub.resolve(source)
    if is_bundle(path):
        return read_config(path)["components"]["lafa"]
    _, init_args = stored_stage(read_checkpoint(path), path)
    return model_arguments(Lafa, LAFA_PRESETS, {"preset": "paper", **(init_args.get("model") or {})},
                           latent_channels=latent_channels)


def _autoencoder_parts(ae, source: str | None, lafa_arguments=None) -> tuple[dict, dict, dict]:  # noqa: ANN001
    """(components, weights, autoencoder settings) of a built autoencoder; its LAFA's arguments are
    `lafa_arguments` if given, else read from the file `source`."""
    from lafa.models.autoencoder import LafaAutoencoder, VaeAutoencoder

    if not isinstance(ae, (VaeAutoencoder, LafaAutoencoder)):
        raise LafaUserError(f"{source}: a {type(ae).__name__} autoencoder cannot be bundled (a VAE or VAE + LAFA can)")
    components = {"vae": vae_arguments(ae.vae)}
    modules = {"vae": ae.vae}
    settings = {}
    if isinstance(ae, LafaAutoencoder):
        components["lafa"] = lafa_arguments or _lafa_arguments(source, ae.vae.latent_dim)
        modules["lafa"] = ae.lafa
        settings["decode_steps"] = ae.default_steps
    return components, modules, settings


def describe(stage, init_args: dict) -> tuple[str, dict, dict, dict]:  # noqa: ANN001
    """(kind, components, modules by prefix, extra config) of a loaded stage."""
    from lafa.models.dit import DIT_PRESETS, DiT
    from lafa.models.lafa import LAFA_PRESETS, Lafa
    from lafa.models.presets import model_arguments
    from lafa.stages.dit import DitStage
    from lafa.stages.lafa import LafaStage
    from lafa.stages.vae import VaeStage

    # the stage's own arguments (loss, evaluation, sampling settings): what `lafa test|validate` on the bundle
    # builds the stage with (`lafa.stages.pretrained.stage_config`)
    stage_args = {k: v for k, v in dict(stage.hparams).items() if k not in _NOT_BUNDLED and not k.startswith("_")}
    if isinstance(stage, VaeStage):
        return "vae", {"vae": vae_arguments(stage.vae)}, {"vae": stage.vae}, {"stage_args": stage_args}
    if isinstance(stage, LafaStage):
        lafa = model_arguments(Lafa, LAFA_PRESETS, stage.hparams.model, latent_channels=stage.vae.latent_dim)
        components, modules, settings = _autoencoder_parts(stage.as_autoencoder(), None, lafa)
        return "lafa", components, modules, {"autoencoder": settings, "stage_args": stage_args}
    if isinstance(stage, DitStage):
        components, modules, settings = _autoencoder_parts(stage.autoencoder, init_args.get("autoencoder_ckpt"))
        dit = model_arguments(DiT, DIT_PRESETS, stage.hparams.model, text_dim=stage.frozen.text.dim,
                              io_channels=stage.model.io_channels)
        return "dit", {"dit": dit, **components}, {"dit": stage.model, **modules}, {
            "autoencoder": settings, "stage_args": stage_args}
    raise LafaUserError(f"a {type(stage).__name__} cannot be bundled: lafa bundles its VAE, LAFA and DiT stages")


def full_arguments(cls: type, args: dict) -> dict:
    """Every constructor argument of `cls`: `args` over the signature's defaults (a bundle does not depend on
    lafa's defaults staying what they are)."""
    import inspect

    defaults = {name: p.default for name, p in inspect.signature(cls).parameters.items()
                if p.default is not inspect.Parameter.empty}
    return {**defaults, **args}


def export_bundle(ckpt_path: str | Path, out: str | Path) -> Path:
    """Write the bundle of a `lafa fit` checkpoint to the folder `out` (created; an existing bundle there is
    replaced, any other non-empty folder refused); returns `out`."""
    from safetensors.torch import save_file

    from lafa.bundles.card import write_card
    from lafa.checkpoints import BUNDLE_WEIGHTS_MARK, parse_yaml, read_checkpoint, stored_stage
    from lafa.stages.loading import load_stage

    ckpt_path, out = Path(ckpt_path), Path(out)
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not is_bundle(out))):
        raise LafaUserError(f"--out {out}: exists and is not an empty folder or a lafa bundle; give a new folder")
    ckpt = read_checkpoint(ckpt_path)
    stage_info = stored_stage(ckpt, ckpt_path)
    if stage_info is None:
        raise LafaUserError(f"{ckpt_path} carries no lafa config (not written by `lafa fit`); a bundle is made from a "
                            f"`lafa fit` checkpoint")
    cls, init_args = stage_info
    stage = load_stage(ckpt_path, ckpt=ckpt)
    kind, components, modules, extra = describe(stage, init_args)
    from lafa.models.dit import DiT
    from lafa.models.lafa import Lafa
    from lafa.models.oobleck import OobleckVAE

    classes = {"dit": DiT, "lafa": Lafa, "vae": OobleckVAE}
    components = {name: full_arguments(classes[name], components[name]) for name in COMPONENTS if name in components}
    modules = {name: modules[name] for name in COMPONENTS if name in modules}
    config = parse_yaml(ckpt.get("lafa_config"), ckpt_path) or {}
    data_section = config.get("data") or {}
    data = {k: v for k, v in (data_section.get("init_args") or {}).items()
            if not k.endswith("_shards") and isinstance(v, (int, float, str, bool))}
    plain = json.loads(json.dumps({"components": components, **extra}))  # JSON values: tuples as lists
    bundle = {"format": FORMAT, "version": VERSION, "kind": kind, "stage": f"{cls.__module__}.{cls.__qualname__}",
              **plain, "data": data}
    if data_section.get("class_path"):  # the DataModule class the run read (its shards are the user's to give)
        bundle["data_class"] = data_section["class_path"]
    weights = {f"{prefix}.{k}": v.detach().cpu().contiguous() for prefix, module in modules.items()
               for k, v in module.state_dict().items()}
    params = {prefix: sum(p.numel() for p in module.parameters()) for prefix, module in modules.items()}
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        (tmp / CONFIG).write_text(json.dumps(bundle, indent=2) + "\n")
        save_file(weights, str(tmp / WEIGHTS), metadata={"format": "pt", BUNDLE_WEIGHTS_MARK: FORMAT})
        write_card(tmp, {**bundle, "name": out.name}, ckpt, ckpt_path, config, params)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
