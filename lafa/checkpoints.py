"""Safe reading of checkpoint and weights files: what lafa loads is tensors and YAML, never code.

- `read_checkpoint`: a torch file, loaded with `weights_only=True`; a missing, empty, truncated or foreign file
  and a pickle that would run code are each one `LafaUserError` naming the file and what to do.
- `refuse_nonfinite`: every loader (and `lafa export`, and the always-on training guard) refuses weights that
  hold NaN or infinity, naming the file and the tensors.
- `check_config_classes`: a checkpoint's stored config may name only trusted classes (lafa's stages, data
  modules and callbacks; Lightning's callbacks, loggers, strategies, plugins, profilers and accelerators; torch
  optimizers and LR schedulers), checked at any depth before anything is imported. `LAFA_TRUSTED_CLASSES`
  (comma-separated modules or classes) adds the user's own.
- Stable Audio Open VAE weights (official files or `lafa export` output) into `OobleckVAE`:
  Stable Audio Open's `model.safetensors` / `model.ckpt` (the VAE keys live under `pretransform.model.`, beside
  the DiT and conditioner keys, which are ignored) or an unwrapped VAE (`encoder.layers.N...`), e.g. what
  `lafa export` writes.
"""

from __future__ import annotations

import builtins
import importlib
import inspect
import os
import pickle
import re
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch

from lafa.errors import LafaUserError, MissingFileError
from lafa.models.oobleck import OobleckVAE

SAO_VAE_PREFIX = "pretransform.model."
CHECKPOINT_CONFIG_KEY = "lafa_config"
_SHOWN = 12  # how many names of each kind an error lists


# ---- reading files ------------------------------------------------------------------------------------------
def _torch_load(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError as e:
        if "mmap can only be used" not in str(e):
            raise
    return torch.load(path, map_location="cpu", weights_only=True)  # the legacy (non-zip) torch format


def _truncated(path: Path, what: str) -> LafaUserError:
    return LafaUserError(f"{path} is truncated or damaged ({path.stat().st_size} bytes; its torch zip archive is "
                         f"incomplete): copy it again or use an earlier {what}")


def read_torch_file(path: str | Path, what: str = "checkpoint") -> Any:
    """torch.load(weights_only=True) of `path`, with one clear error per way the file can be wrong."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"{what} not found: {path} (check the path; nothing was loaded)")
    if path.stat().st_size == 0:
        raise LafaUserError(f"{path} is empty (0 bytes): the copy or the save was interrupted; "
                            f"copy it again or use another {what}")
    with open(path, "rb") as f:
        head = f.read(4)
    if head == b"PK\x03\x04" and not zipfile.is_zipfile(path):  # torch.save's zip: its directory is at the end
        raise _truncated(path, what)
    if head != b"PK\x03\x04" and not head.startswith(b"\x80"):  # neither zip nor legacy torch (a pickle)
        raise LafaUserError(f"{path} is not a PyTorch {what} (it starts with {head!r}); check that it is the "
                            f"right file")
    try:
        return _torch_load(path)
    except pickle.UnpicklingError as e:
        if "Weights only load failed" in str(e):
            raise LafaUserError(f"{path} holds pickled Python objects besides tensors, which lafa refuses to load "
                                f"(unpickling them can run code); re-save it as plain tensors "
                                f"(torch.save of a state dict) or as safetensors") from e
        raise LafaUserError(f"{path} is not a PyTorch {what} ({e}); check that it is the right file") from e
    except RuntimeError as e:
        if "PytorchStreamReader" in str(e) or "zip archive" in str(e):
            raise _truncated(path, what) from e
        raise LafaUserError(f"{path} cannot be read as a PyTorch {what}: {str(e).splitlines()[0]}") from e
    except Exception as e:  # any other failure of the unpickler on this file (EOFError, KeyError, IndexError...)
        raise LafaUserError(f"{path} is not a PyTorch {what} ({type(e).__name__}: {e}); "
                            f"check that it is the right file") from e


def read_checkpoint(path: str | Path) -> dict:
    """A Lightning checkpoint's top-level dict, read safely (see `read_torch_file`)."""
    ckpt = read_torch_file(path)
    if not isinstance(ckpt, dict):
        raise LafaUserError(f"{path} is not a Lightning checkpoint (its top level is a {type(ckpt).__name__}, "
                            f"not a dict); pass a checkpoint written by `lafa fit`")
    return ckpt


def checkpoint_state_dict(ckpt: dict, path: str | Path) -> dict[str, torch.Tensor]:
    state = ckpt.get("state_dict")
    if not isinstance(state, dict):
        raise LafaUserError(f"{path} is not a Lightning checkpoint (it has no 'state_dict'; top-level keys: "
                            f"{sorted(map(str, ckpt))[:_SHOWN]}); pass a checkpoint written by `lafa fit`")
    return state


# ---- non-finite weights -------------------------------------------------------------------------------------
def nonfinite_tensors(state: Mapping[str, Any]) -> list[str]:
    """Names of the floating-point tensors of `state` that hold a NaN or an infinity."""
    names = [k for k, v in state.items() if isinstance(v, torch.Tensor) and v.is_floating_point() and v.numel()]
    if not names:
        return []
    # max |x| is NaN or inf exactly when x holds one: one reduction per tensor (no overflow), one device sync
    peaks = torch._foreach_norm([state[k].detach() for k in names], float("inf"))
    finite = torch.stack([p.float().to(peaks[0].device) for p in peaks]).isfinite().cpu()
    return [] if bool(finite.all()) else [k for k, ok in zip(names, finite.tolist(), strict=True) if not ok]


def refuse_nonfinite(state: Mapping[str, Any], source: str | Path, fix: str = "") -> None:
    """Raise a `LafaUserError` naming `source` and its non-finite tensors, if it has any."""
    bad = nonfinite_tensors(state)
    if bad:
        total = sum(isinstance(v, torch.Tensor) and v.is_floating_point() for v in state.values())
        fix = fix or "the run that wrote it diverged; use an earlier checkpoint or retrain with a lower learning rate"
        raise LafaUserError(f"{source} holds non-finite weights (NaN or inf) in {len(bad)} of {total} tensors: "
                            f"{_names(bad)}; {fix}")


# ---- stored configs are data, never code --------------------------------------------------------------------
TRUSTED_CLASS_PREFIXES = (
    "lafa.stages.", "lafa.data.",  # lafa's stages, data modules and callbacks
    "lightning.pytorch.callbacks.", "lightning.pytorch.loggers.", "lightning.pytorch.strategies.",
    "lightning.pytorch.plugins.", "lightning.pytorch.profilers.", "lightning.pytorch.accelerators.",
    "torch.optim.",  # optimizers and LR schedulers
)
TRUSTED_CLASSES = ("lightning.pytorch.cli.ReduceLROnPlateau",)
TRUST_ENV = "LAFA_TRUSTED_CLASSES"
# the one function Lightning's CLI stores as `_instantiator` in hyper_parameters (never imported by lafa)
TRUSTED_INSTANTIATORS = ("lightning.pytorch.cli.instantiate_module",)
# where LightningCLI resolves a dotted string as a class (the shorthand of {class_path: ...})
_CLASS_SLOTS = ("model", "data", "optimizer", "lr_scheduler", "trainer.callbacks", "trainer.logger",
                "trainer.plugins", "trainer.profiler", "trainer.strategy", "trainer.accelerator")
_CLASS_KEYS = ("class_path", "_class_path", "_instantiator")  # jsonargparse's and Lightning's hparams' names
_DOTTED = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)+")


def user_trusted() -> tuple[str, ...]:
    """The modules or classes the user trusts beyond lafa's list: `LAFA_TRUSTED_CLASSES=mypkg,other.mod.Cls`."""
    return tuple(e.strip() for e in os.environ.get(TRUST_ENV, "").split(",") if e.strip())


def is_trusted_class_path(class_path: str) -> bool:
    """Whether a stored config may name `class_path` (a full dotted path; decided without importing anything)."""
    if not isinstance(class_path, str) or not _DOTTED.fullmatch(class_path):
        return False
    if class_path in TRUSTED_CLASSES or class_path.startswith(TRUSTED_CLASS_PREFIXES):
        return True
    return any(class_path == e or class_path.startswith(e + ".") for e in user_trusted())


def _code_params(cls: type) -> set[str]:
    """Init arguments of `cls` (and of the classes it passes **kwargs to) typed as a callable or a class:
    jsonargparse would import a dotted string given for them, so a stored config may not give one."""
    names = set()
    for klass in cls.__mro__:
        try:
            params = inspect.signature(klass.__init__).parameters.values()
        except (TypeError, ValueError):
            continue
        for p in params:
            text = p.annotation if isinstance(p.annotation, str) else repr(p.annotation)
            if "Callable" in text or re.search(r"\b[Tt]ype\[", text):
                names.add(p.name)
    return names


def _names_code(value: Any) -> bool:
    """A string jsonargparse could resolve to a Python object: a dotted path, or a builtin's name."""
    return isinstance(value, str) and (bool(_DOTTED.fullmatch(value)) or hasattr(builtins, value))


def _walk(node: Any, where: str) -> Iterator[tuple[str, dict]]:
    """(location, dict) for every dict of a config tree, depth first."""
    if isinstance(node, dict):
        yield where, node
        for key, value in node.items():
            yield from _walk(value, f"{where}.{key}" if where else str(key))
    elif isinstance(node, (list, tuple)):
        for i, value in enumerate(node):
            yield from _walk(value, f"{where}[{i}]")


def _slot_strings(config: dict) -> Iterator[tuple[str, str]]:
    for slot in _CLASS_SLOTS:
        node: Any = config
        for part in slot.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        for i, value in enumerate(node if isinstance(node, list) else [node]):
            if isinstance(value, str) and "." in value:
                yield (f"{slot}[{i}]" if isinstance(node, list) else slot), value


def _refuse(source: str | Path, where: str, value: Any, why: str) -> LafaUserError:
    module = value.rpartition(".")[0] if isinstance(value, str) and "." in value else "<module>"
    return LafaUserError(
        f"{source}: its stored config names {where} = {value!r}, {why}; nothing was imported or run. A stored "
        f"config may name lafa.stages.*, lafa.data.*, Lightning callbacks/loggers/strategies/plugins/profilers/"
        f"accelerators and torch.optim.*; if you wrote this class and trust this file, set {TRUST_ENV}={module}")


def check_config_classes(config: Any, source: str | Path) -> None:
    """Refuse (a `LafaUserError`) a stored config that names any class outside the trusted list, at any depth
    (model, data, trainer callbacks and loggers, optimizers, init_args of init_args...), or that gives a dotted
    string to an argument typed as a callable or a class. Only trusted modules are imported, to read the types."""
    config = _parse_yaml(config, source)
    for where, value in _slot_strings(config if isinstance(config, dict) else {}):
        if not is_trusted_class_path(value):
            raise _refuse(source, where, value, "a class lafa does not load from a stored config")
    for where, node in _walk(config, ""):
        for key in _CLASS_KEYS:
            if key not in node:
                continue
            class_path, at = node[key], f"{where}.{key}" if where else key
            if key == "_instantiator":
                if class_path not in TRUSTED_INSTANTIATORS:
                    raise _refuse(source, at, class_path, "a function lafa does not load from a stored config")
                continue
            if not is_trusted_class_path(class_path):
                raise _refuse(source, at, class_path, "a class lafa does not load from a stored config")
            cls = _import_trusted(class_path, source, at)
            init_args = node.get("init_args") if isinstance(node.get("init_args"), dict) else {}
            for name in sorted(_code_params(cls) & set(init_args)):
                if _names_code(init_args[name]):
                    raise _refuse(source, f"{where}.init_args.{name}".lstrip("."), init_args[name],
                                  "a dotted string given to an argument typed as a callable or a class (code)")


def _import_trusted(class_path: str, source: str | Path, where: str) -> type:
    module_name, _, name = class_path.rpartition(".")
    try:
        obj = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError) as e:
        raise LafaUserError(f"{source}: its stored config names {where} = {class_path!r}, which cannot be "
                            f"imported ({e}); is the package that defines it installed?") from e
    if not isinstance(obj, type):
        raise _refuse(source, where, class_path, f"which is a {type(obj).__name__}, not a class")
    return obj


def read_trusted_checkpoint(path: str | Path) -> dict:
    """`read_checkpoint`, then refuse a stored config (or Lightning hyper_parameters) naming an untrusted class,
    and non-finite weights: what every route that loads a checkpoint's config or weights goes through."""
    ckpt = read_checkpoint(path)
    stored = ckpt.get(CHECKPOINT_CONFIG_KEY)
    if stored is not None:
        check_config_classes(_parse_yaml(stored, path), path)
    if isinstance(ckpt.get("hyper_parameters"), dict):
        check_config_classes(ckpt["hyper_parameters"], path)
    refuse_nonfinite(checkpoint_state_dict(ckpt, path), path)
    return ckpt


def read_checkpoint_config(path: str | Path) -> str | None:
    """The YAML config a `lafa fit` run stored in its checkpoint, or None if the file has none."""
    return read_checkpoint(path).get(CHECKPOINT_CONFIG_KEY)


def _parse_yaml(stored: Any, source: str | Path) -> Any:
    import yaml

    if not isinstance(stored, str):
        return stored
    try:
        return yaml.safe_load(stored)
    except yaml.YAMLError as e:
        raise LafaUserError(f"{source}: its stored config is not valid YAML ({str(e).splitlines()[0]}); "
                            f"pass --config with the run's config instead") from e


def trusted_class(class_path: str, source: str | Path, where: str = "model.class_path") -> type:
    """The class a stored config names, imported only once it is known to be trusted."""
    if not is_trusted_class_path(class_path):
        raise _refuse(source, where, class_path, "a class lafa does not load from a stored config")
    return _import_trusted(class_path, source, where)


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """All tensors of a .safetensors file, or the (`state_dict` of a) torch file, loaded safely on CPU; a damaged
    file or one holding NaN/inf is a `LafaUserError` naming it."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"weights file not found: {path} (check the path; for Stable Audio Open, put "
                               f"model.safetensors there)")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(path), framework="pt", device="cpu") as f:
                keys = list(f.keys())
                # the full SAO model is ~5 GB: read the VAE tensors alone when it holds them
                if any(k.startswith(SAO_VAE_PREFIX) for k in keys):
                    keys = [k for k in keys if k.startswith(SAO_VAE_PREFIX)]
                state = {k: f.get_tensor(k) for k in keys}
        except SafetensorError as e:
            raise LafaUserError(f"{path} is truncated or not a safetensors file ({e}); copy it again or "
                                f"check that it is the right file") from e
    else:
        obj = read_torch_file(path, what="weights file")
        if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
            obj = obj["state_dict"]
        if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
            raise LafaUserError(f"{path} does not hold a flat dict of tensors (or a checkpoint with a "
                                f"'state_dict'); pass VAE weights (safetensors, `lafa export` output) instead")
        state = obj
    refuse_nonfinite(state, path)
    return state


def unwrap_vae_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Keep the VAE's tensors under their unwrapped names: strip `pretransform.model.` when present."""
    if any(k.startswith(SAO_VAE_PREFIX) for k in state_dict):
        return {k[len(SAO_VAE_PREFIX):]: v for k, v in state_dict.items() if k.startswith(SAO_VAE_PREFIX)}
    return dict(state_dict)


def checkpoint_latent_dim(state_dict: dict[str, torch.Tensor]) -> int | None:
    """The latent size an unwrapped VAE state dict was trained with (decoder input channels), if readable."""
    weight = state_dict.get("decoder.layers.0.weight_v")
    return int(weight.shape[1]) if weight is not None and weight.ndim == 3 else None


def infer_vae_kwargs(state_dict: dict[str, torch.Tensor]) -> dict:
    """OobleckVAE arguments readable from an unwrapped VAE state dict's shapes: in_channels, channels, c_mults,
    strides (downsampling conv kernel = 2 x stride), use_snake. Empty if the layout is not recognised."""
    first = state_dict.get("encoder.layers.0.weight_v")
    if first is None or first.ndim != 3:
        return {}
    channels, in_channels = int(first.shape[0]), int(first.shape[1])
    widths, strides, i = [], [], 1
    while (down := state_dict.get(f"encoder.layers.{i}.layers.4.weight_v")) is not None and down.ndim == 3:
        widths.append(int(down.shape[0]))
        strides.append(int(down.shape[-1]) // 2)
        i += 1
    if not widths or any(w % channels for w in widths):
        return {}
    return {"in_channels": in_channels, "channels": channels, "c_mults": tuple(w // channels for w in widths),
            "strides": tuple(strides), "use_snake": "encoder.layers.1.layers.3.alpha" in state_dict}


def _names(keys: list[str]) -> str:
    shown = ", ".join(keys[:_SHOWN])
    return shown + (f", ... ({len(keys) - _SHOWN} more)" if len(keys) > _SHOWN else "")


def load_vae_state_dict(model: OobleckVAE, state_dict: dict[str, torch.Tensor], source: str = "checkpoint") -> None:
    """Strictly load an unwrapped VAE state dict; on any mismatch raise one error naming the missing,
    unexpected and wrongly shaped keys (and the latent size when that is the cause)."""
    found = checkpoint_latent_dim(state_dict)
    if found is not None and found != model.latent_dim:
        raise LafaUserError(
            f"{source} holds a VAE with latent size {found} but the config asks for latent_dim={model.latent_dim}; "
            f"set latent_dim: {found} (or use a checkpoint trained with {model.latent_dim} latent channels)"
        )
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    wrong = sorted(
        f"{k} (file {tuple(state_dict[k].shape)}, model {tuple(v.shape)})"
        for k, v in expected.items()
        if k in state_dict and state_dict[k].shape != v.shape
    )
    if missing or unexpected or wrong:
        parts = [f"{source} does not match the OobleckVAE the config builds"]
        if missing:
            parts.append(f"missing keys ({len(missing)}): {_names(missing)}")
        if unexpected:
            parts.append(f"unexpected keys ({len(unexpected)}): {_names(unexpected)}")
        if wrong:
            parts.append(f"wrongly shaped keys ({len(wrong)}): {_names(wrong)}")
        parts.append("pass the VAE's own weights file (official SAO or `lafa export`) or the matching model "
                     "arguments")
        raise LafaUserError("; ".join(parts))
    model.load_state_dict(state_dict, strict=True)


def load_sao_vae(path: str | Path, latent_dim: int = 64, **model_kwargs) -> OobleckVAE:
    """An `OobleckVAE(latent_dim=..., **model_kwargs)` holding the weights of `path` (see the module docstring).

    Architecture arguments not given (channels, c_mults, strides, in_channels, use_snake) are read from the
    file's shapes, so a VAE of any width exported by `lafa export` loads by path alone; the latent size is never
    guessed: a file whose latent size differs from `latent_dim` is an error that says so.
    """
    state_dict = unwrap_vae_state_dict(read_state_dict(path))
    model = OobleckVAE(latent_dim=latent_dim, **{**infer_vae_kwargs(state_dict), **model_kwargs})
    load_vae_state_dict(model, state_dict, source=str(path))
    return model


def save_vae_safetensors(model_or_state: OobleckVAE | dict[str, torch.Tensor], path: str | Path) -> Path:
    """Write a VAE's weights in the official unwrapped layout (`encoder.layers.N...`) as safetensors."""
    from safetensors.torch import save_file

    state = model_or_state.state_dict() if isinstance(model_or_state, torch.nn.Module) else model_or_state
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in state.items()}, str(path))
    return path
