"""The one reader of checkpoint and weights files: what lafa loads is tensors and YAML, never code.

- `read_checkpoint`: a `lafa fit` (Lightning) checkpoint, loaded with `weights_only=True` and checked once: a
  missing, empty, truncated or foreign file, a pickle that would run code, a stored config (or Lightning
  hyper_parameters) naming a class `lafa.config_trust` does not trust, and weights holding NaN or infinity are
  each one `LafaUserError` naming the file and what to do. The file read last is kept (keyed by its resolved
  path, size, mtime and inode), so every route of one command that needs it (the CLI's stored config, Lightning's
  restore, a stage's autoencoder) reads it from disk once.
- `stored_stage`: the stage class and init arguments of the config a `lafa fit` run stored in its checkpoint
  (`CHECKPOINT_CONFIG_KEY`, written by the CLI); only this module knows that key.
- Files a checkpoint refers to (`record_files` at fit time, `resolve_files` at every read): the autoencoder and
  VAE a stage was trained on, the fine-tuning start and the data shard specs are recorded as an absolute path plus
  a content fingerprint (`FINGERPRINT`); a read puts the place each one is found now into the stored config (the
  recorded path, else beside the checkpoint, else where a moved tree puts it), so a checkpoint works from any
  folder while the files exist; one that is nowhere is named, with its fingerprint and override, by
  `missing_file_message`.
- Stable Audio Open VAE weights (official files or `lafa export` output) into `OobleckVAE`:
  Stable Audio Open's `model.safetensors` / `model.ckpt` (the VAE keys live under `pretransform.model.`, beside
  the DiT and conditioner keys, which are ignored) or an unwrapped VAE (`encoder.layers.N...`), e.g. what
  `lafa export` writes.
"""

from __future__ import annotations

import glob
import hashlib
import os
import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from lafa.config_trust import check_config_classes, parse_yaml, trusted_class
from lafa.errors import LafaUserError, MissingFileError
from lafa.models.oobleck import OobleckVAE

SAO_VAE_PREFIX = "pretransform.model."
CHECKPOINT_CONFIG_KEY = "lafa_config"  # the merged YAML config `lafa fit` stores in every checkpoint
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


# ---- files a checkpoint refers to ---------------------------------------------------------------------------
FILES_KEY = "lafa_files"  # what `record_files` writes into every checkpoint `lafa fit` saves
FINGERPRINT = "size + sha256 of the first and last MiB"  # the content hash of a file (the whole file if <= 2 MiB)
LISTING = "sha256 of the sorted (name, size) list of the shards it matches"  # the content hash of a shard spec
# where a stored config names files: (section, key) -> the override a user passes where the file moved
REFERENCES = {
    ("model", "vae_ckpt"): "--vae_ckpt (lafa generate) or --model.init_args.vae_ckpt",
    ("model", "autoencoder_ckpt"): "--autoencoder_ckpt (lafa generate) or --model.init_args.autoencoder_ckpt",
    ("model", "pretrained"): "--model.init_args.pretrained",
    **{("data", f"{split}_shards"): f"--data.init_args.{split}_shards"
       for split in ("train", "val", "test", "predict")},
}
_MiB = 1 << 20
_fingerprints: dict[tuple, str] = {}  # (resolved path, size, mtime) -> fingerprint: each file hashed once a process
missing_files: dict[str, str] = {}  # a recorded path found nowhere -> the one line that says so
_overrides: dict[str, str] = {}  # "model.init_args.vae_ckpt" -> the place a command's option gives (`override_files`)


def override_files(places: dict[str, str]) -> None:
    """Use these places for the files every checkpoint read from now on names at these config keys (a command's
    `--vae_ckpt` reaching the VAE of the LAFA of a DiT)."""
    _overrides.update(places)


def fingerprint(path: str | Path) -> str:
    """`FINGERPRINT` of a file, as hex: cheap on a 5 GB checkpoint (2 MiB read), and it tells copies apart."""
    path = Path(path)
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _fingerprints:
        digest = hashlib.sha256(str(stat.st_size).encode())
        with open(path, "rb") as f:
            digest.update(f.read(_MiB))
            if stat.st_size > 2 * _MiB:
                f.seek(-_MiB, os.SEEK_END)
            digest.update(f.read(_MiB))
        _fingerprints[key] = digest.hexdigest()
    return _fingerprints[key]


def _is_local(value: Any) -> bool:
    return isinstance(value, str) and bool(value) and not value.startswith("pipe:") and "://" not in value


def _matches(spec: str) -> list[str]:
    """The shard files a local spec names (brace patterns, globs, folders, files); [] if none."""
    from braceexpand import braceexpand

    found = []
    for one in braceexpand(spec):
        if Path(one).is_dir():
            found += sorted(str(p) for p in Path(one).glob("*.tar"))
        elif any(c in one for c in "*?["):
            found += sorted(glob.glob(one))
        elif Path(one).is_file():
            found.append(one)
    return found


def _content(value: str, shards: bool) -> tuple[bool, str | None]:
    """(whether `value` names something that exists, its content hash)."""
    if shards:
        files = _matches(value)
        listing = "\n".join(f"{Path(f).name}\t{Path(f).stat().st_size}" for f in files)
        return bool(files), hashlib.sha256(listing.encode()).hexdigest() if files else None
    path = Path(value)
    if path.is_file():
        return True, fingerprint(path)
    return path.is_dir(), None  # a bundle folder (or a Hub repo id: not local, never recorded)


def _references(config: Any) -> list[tuple[str, list, str]]:
    """(where, key path into config, value) of every local file or shard spec a stored config names."""
    found = []
    for (section, key), _ in REFERENCES.items():
        args = ((config or {}).get(section) or {}).get("init_args") or {}
        value = args.get(key)
        values = list(enumerate(value)) if isinstance(value, list) else [(None, value)]
        for i, one in values:
            if _is_local(one):
                where = f"{section}.init_args.{key}" + ("" if i is None else f"[{i}]")
                found.append((where, [section, "init_args", key] + ([] if i is None else [i]), one))
    return found


def _hub_id(value: str) -> bool:
    from lafa.hub import looks_like_repo_id

    return looks_like_repo_id(value) and not Path(value).exists()


def record_files(checkpoint: dict, path: str | Path) -> None:
    """At save: record in `checkpoint` every file its stored config refers to: absolute path, content hash,
    size, and where the checkpoint and the working folder were (so a moved tree is followed)."""
    config = parse_yaml(checkpoint.get(CHECKPOINT_CONFIG_KEY), path)
    if not isinstance(config, dict):
        return
    records = {}
    for where, _, value in _references(config):
        if not where.startswith("data") and _hub_id(value):
            records[where] = {"given": value, "repo_id": value}
            continue
        exists, digest = _content(value, shards=where.startswith("data"))
        records[where] = {"given": value, "path": os.path.abspath(value), "exists": exists, "hash": digest,
                          "hash_kind": LISTING if where.startswith("data") else FINGERPRINT}
        if exists and not where.startswith("data") and Path(value).is_file():
            records[where]["size"] = Path(value).stat().st_size
    checkpoint[FILES_KEY] = {"checkpoint": os.path.abspath(path), "cwd": os.getcwd(), "files": records}


def _candidates(record: dict, value: str, ckpt_path: Path, saved: dict) -> list[tuple[str, bool]]:
    """Places to look for a referenced file, each with whether its hash must match the record's."""
    here = ckpt_path.resolve().parent
    out: list[tuple[str, bool]] = [(record.get("path") or value, False)] if record else []
    if not record or not os.path.isabs(value):
        out.append((value, bool(record)))  # relative to the working folder, as the run read it
    if record.get("path") and saved.get("checkpoint"):  # the same place relative to the checkpoint (a moved tree)
        rel = os.path.relpath(record["path"], os.path.dirname(saved["checkpoint"]))
        out.append((os.path.normpath(here / rel), True))
    if not os.path.isabs(value):  # relative to each folder above the checkpoint (the training folder, moved)
        out += [(str(parent / value), bool(record)) for parent in [here, *here.parents]]
    name = Path(record.get("path") or value).name
    out.append((str(here / name), bool(record)))  # beside the checkpoint (or in the bundle folder it lies in)
    if record.get("size"):  # a renamed copy beside the checkpoint
        out += [(str(p), True) for p in sorted(here.iterdir()) if p.is_file() and p.name != name
                and p.stat().st_size == record["size"]]
    return out


def _locate(where: str, value: str, record: dict, ckpt_path: Path, saved: dict) -> str | None:
    shards = where.startswith("data")
    for place, check in _candidates(record, value, ckpt_path, saved):
        try:
            exists, digest = _content(place, shards)
        except OSError:
            continue
        if exists and (not check or not record.get("hash") or digest == record["hash"]):
            return os.path.abspath(place)
    return None


def missing_file_message(where: str, record: dict, ckpt_path: str | Path, override: str) -> str:
    given = record.get("path") or record.get("given")
    digest = f"{record['hash_kind']} {record['hash'][:16]}" if record.get("hash") else "no hash recorded"
    size = f"{record['size']:,} bytes, " if record.get("size") else ""
    return (f"{given}: not found ({where} of {ckpt_path}; {size}{digest}); not beside the checkpoint nor where a "
            f"moved run folder would put it; pass {override} with its new place")


def resolve_files(ckpt: dict, path: str | Path) -> dict:
    """`ckpt` with each file its stored config names replaced by the absolute place where it is found now (see
    `_candidates`); a file found nowhere keeps its recorded place and its one-line message goes into
    `missing_files` for the loader that needs it."""
    config = parse_yaml(ckpt.get(CHECKPOINT_CONFIG_KEY), path)
    refs = _references(config) if isinstance(config, dict) else []
    if not refs:
        return ckpt
    saved = ckpt.get(FILES_KEY) or {}
    import yaml

    changed = False
    for where, keys, value in refs:
        record = (saved.get("files") or {}).get(where) or {}
        if record.get("repo_id") or (not record and not where.startswith("data") and _hub_id(value)):
            continue
        found = _overrides.get(where) or _locate(where, value, record, Path(path), saved)
        if found is None:  # kept as recorded (absolute) or as given (an old checkpoint, explained by its loader)
            found = record.get("path") or value
            if record:
                missing_files[found] = missing_file_message(where, record, path, REFERENCES[keys[0], keys[2]])
        else:
            missing_files.pop(record.get("path") or value, None)
        if found != value:
            target = config
            for k in keys[:-1]:
                target = target[k]
            target[keys[-1]] = found
            changed = True
    return {**ckpt, CHECKPOINT_CONFIG_KEY: yaml.safe_dump(config, sort_keys=False)} if changed else ckpt


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
                            f"{_names(bad)}; the run that wrote it diverged; use an earlier checkpoint or retrain "
                            f"with a lower learning rate")


# ---- official and exported VAE weights ----------------------------------------------------------------------
def _vae_keys(keys) -> list[str]:  # noqa: ANN001
    """The VAE's keys: those under `pretransform.model.` where the file is SAO's whole model, else all."""
    return [k for k in keys if k.startswith(SAO_VAE_PREFIX)] or list(keys)


def read_vae_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The VAE tensors, under unwrapped names, of a .safetensors file or the (`state_dict` of a) torch file, loaded
    safely on CPU; a damaged file or one holding NaN/inf is a `LafaUserError` naming it."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"weights file not found: {path} (check the path; for Stable Audio Open, put "
                               f"model.safetensors there)")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(path), framework="pt", device="cpu") as f:  # SAO's whole model is ~5 GB: the VAE alone
                state = {k: f.get_tensor(k) for k in _vae_keys(f.keys())}
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
    return {k.removeprefix(SAO_VAE_PREFIX): v for k, v in state.items()}


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


def key_mismatch(expected: Mapping[str, torch.Tensor], found: Mapping[str, torch.Tensor]) -> list[str]:
    """How a state dict `found` differs from the `expected` one: its missing, unexpected and wrongly shaped keys,
    one phrase per kind (empty if it loads strictly)."""
    wrong = [f"{k} (file {tuple(found[k].shape)}, model {tuple(v.shape)})" for k, v in expected.items()
             if k in found and found[k].shape != v.shape]
    kinds = (("missing", set(expected) - set(found)), ("unexpected", set(found) - set(expected)),
             ("wrongly shaped", wrong))
    return [f"{kind} keys ({len(keys)}): {_names(sorted(keys))}" for kind, keys in kinds if keys]


def load_vae_state_dict(model: OobleckVAE, state_dict: dict[str, torch.Tensor], source: str = "checkpoint") -> None:
    """Strictly load an unwrapped VAE state dict; on any mismatch raise one error naming the missing,
    unexpected and wrongly shaped keys (and the latent size when that is the cause)."""
    found = checkpoint_latent_dim(state_dict)
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
