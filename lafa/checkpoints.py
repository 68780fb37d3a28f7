"""The one reader of checkpoint and weights files: what lafa loads is tensors and YAML, never code.

- `read_checkpoint`: a `lafa fit` checkpoint, read once per command and checked once (the contract:
  docs/architecture.md, "Stages and checkpoints"); each way the file can be wrong is one `LafaUserError` naming it.
- `stored_stage`: the stage class and init arguments of the config a `lafa fit` run stored in its checkpoint
  (`CHECKPOINT_CONFIG_KEY`, written by the CLI); only this module knows that key.
- `load_sao_vae`: Stable Audio Open VAE weights into `OobleckVAE`: SAO's `model.safetensors` / `model.ckpt` (the
  VAE under `pretransform.model.`, the other keys ignored), a lafa bundle's `model.safetensors` (its `vae.*`
  part) or an unwrapped VAE (`encoder.layers.N...`), e.g. what `lafa export --out vae.safetensors` writes.
"""

from __future__ import annotations

import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from lafa.config_trust import CHECKPOINT_CONFIG_KEY, check_config_classes, parse_yaml, trusted_class
from lafa.errors import LafaUserError, MissingFileError, listing
from lafa.models.oobleck import OobleckVAE

SAO_VAE_PREFIX = "pretransform.model."
# a lafa bundle's model.safetensors (`lafa.bundles`) carries this metadata key; its VAE is under `vae.`
BUNDLE_WEIGHTS_MARK, BUNDLE_VAE_PREFIX = "lafa", "vae."
_SHOWN = 12  # how many names of each kind an error lists
_last: dict[str, Any] = {}  # the file read last: {"key": (path, size, mtime, inode), "obj": ..., "checked": bool}


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
    """torch.load(weights_only=True) of `path`, with one clear error per way the file can be wrong; the same
    unchanged file asked for again is not read again."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"{what} not found: {path} (check the path; nothing was loaded)")
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns, stat.st_ino)
    if _last.get("key") == key:
        return _last["obj"]
    _last.clear()
    if stat.st_size == 0:
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
        obj = _torch_load(path)
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
    _last.update(key=key, obj=obj, checked=False)
    return obj


def read_checkpoint(path: str | Path, keep: bool = True) -> dict:
    """A `lafa fit` checkpoint's top-level dict (a shallow copy), read and checked once (see the module docstring);
    keep=False: the last reader of this command, nothing is kept."""
    ckpt = read_torch_file(path)
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("state_dict"), dict):
        has = (f"its top level is a {type(ckpt).__name__}, not a dict" if not isinstance(ckpt, dict) else
               f"it has no 'state_dict'; top-level keys: {sorted(map(str, ckpt))[:_SHOWN]}")
        raise LafaUserError(f"{path} is not a Lightning checkpoint ({has}); pass a checkpoint written by `lafa fit`")
    if not _last.get("checked"):
        for stored in (ckpt.get(CHECKPOINT_CONFIG_KEY), ckpt.get("hyper_parameters")):
            if stored is not None:
                check_config_classes(stored, path)
        refuse_nonfinite(ckpt["state_dict"], path)
        _last["checked"] = True
    if not keep:
        _last.clear()
    from lafa.checkpoint_files import resolve_files

    return resolve_files({**ckpt, "state_dict": dict(ckpt["state_dict"])}, path)


def stored_stage(ckpt: Any, path: str | Path) -> tuple[type, dict] | None:
    """(stage class, init args) of the config `lafa fit` stored in the checkpoint `ckpt` read from `path`, or None
    if it stores none (a foreign checkpoint or weights file). The class is imported only if trusted."""
    stored = ckpt.get(CHECKPOINT_CONFIG_KEY) if isinstance(ckpt, dict) else None
    if stored is None:
        return None
    config = parse_yaml(stored, path)
    model = (config.get("model") if isinstance(config, dict) else None) or {}
    if not model.get("class_path"):
        raise LafaUserError(f"{path}: its stored config has no model.class_path; pass a checkpoint written by "
                            f"`lafa fit`")
    return trusted_class(model["class_path"], path), dict(model.get("init_args") or {})


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


def refuse_nonfinite(state: Mapping[str, Any], source: str | Path) -> None:
    """Raise a `LafaUserError` naming `source` and its non-finite tensors, if it has any."""
    bad = nonfinite_tensors(state)
    if bad:
        total = sum(isinstance(v, torch.Tensor) and v.is_floating_point() for v in state.values())
        raise LafaUserError(f"{source} holds non-finite weights (NaN or inf) in {len(bad)} of {total} tensors: "
                            f"{listing(bad, _SHOWN)}; the run that wrote it diverged; use an earlier checkpoint or retrain "
                            f"with a lower learning rate")


# ---- official and exported VAE weights ----------------------------------------------------------------------
def _vae_keys(keys, prefix: str = SAO_VAE_PREFIX) -> list[str]:  # noqa: ANN001
    """The VAE's keys: those under `prefix` (`pretransform.model.` where the file is SAO's whole model, `vae.` in
    a lafa bundle's weights), else all."""
    return [k for k in keys if k.startswith(prefix)] or list(keys)


def read_vae_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The VAE tensors, under unwrapped names, of a .safetensors file or the (`state_dict` of a) torch file, loaded
    safely on CPU; a damaged file or one holding NaN/inf is a `LafaUserError` naming it."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"weights file not found: {path} (check the path; for Stable Audio Open, put "
                               f"model.safetensors there)")
    prefix = SAO_VAE_PREFIX
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(path), framework="pt", device="cpu") as f:  # SAO's whole model is ~5 GB: the VAE alone
                if (f.metadata() or {}).get(BUNDLE_WEIGHTS_MARK):  # a lafa bundle's chain: its `vae.*` part
                    prefix = BUNDLE_VAE_PREFIX
                state = {k: f.get_tensor(k) for k in _vae_keys(f.keys(), prefix)}
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
        state = {k: obj[k] for k in _vae_keys(obj)}
    refuse_nonfinite(state, path)
    return {k.removeprefix(prefix): v for k, v in state.items()}


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


def key_mismatch(expected: Mapping[str, torch.Tensor], found: Mapping[str, torch.Tensor]) -> list[str]:
    """How a state dict `found` differs from the `expected` one: its missing, unexpected and wrongly shaped keys,
    one phrase per kind (empty if it loads strictly)."""
    wrong = [f"{k} (file {tuple(found[k].shape)}, model {tuple(v.shape)})" for k, v in expected.items()
             if k in found and found[k].shape != v.shape]
    kinds = (("missing", set(expected) - set(found)), ("unexpected", set(found) - set(expected)),
             ("wrongly shaped", wrong))
    return [f"{kind} keys ({len(keys)}): {listing(sorted(keys), _SHOWN)}" for kind, keys in kinds if keys]


def load_vae_state_dict(model: OobleckVAE, state_dict: dict[str, torch.Tensor], source: str = "checkpoint") -> None:
    """Strictly load an unwrapped VAE state dict; on any mismatch raise one error naming the missing,
    unexpected and wrongly shaped keys (and the latent size when that is the cause)."""
    weight = state_dict.get("decoder.layers.0.weight_v")  # (C, latent_dim, k): the size it was trained with
    found = int(weight.shape[1]) if weight is not None and weight.ndim == 3 else None
    if found is not None and found != model.latent_dim:
        raise LafaUserError(
            f"{source} holds a VAE with latent size {found} but the config asks for latent_dim={model.latent_dim}; "
            f"set latent_dim: {found} (or use a checkpoint trained with {model.latent_dim} latent channels)"
        )
    wrong = key_mismatch(model.state_dict(), state_dict)
    if wrong:
        raise LafaUserError("; ".join([f"{source} does not match the OobleckVAE the config builds", *wrong,
                                       "pass the VAE's own weights file (official SAO or `lafa export`) or the "
                                       "matching model arguments"]))
    model.load_state_dict(state_dict, strict=True)


def load_sao_vae(path: str | Path, latent_dim: int = 64, **model_kwargs) -> OobleckVAE:
    """An `OobleckVAE(latent_dim=..., **model_kwargs)` holding the weights of `path` (see the module docstring).

    Architecture arguments not given (channels, c_mults, strides, in_channels, use_snake) are read from the
    file's shapes, so a VAE of any width exported by `lafa export` loads by path alone; the latent size is never
    guessed: a file whose latent size differs from `latent_dim` is an error that says so.
    """
    state_dict = read_vae_state_dict(path)
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
