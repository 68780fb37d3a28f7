"""Files a checkpoint refers to (`REFERENCES`): recorded at every save (`record_files`: absolute path + content
hash, in `FILES_KEY`), found again at every read (`resolve_files`, called by `lafa.checkpoints.read_checkpoint`:
the places tried, in order, are `_candidates`); one found nowhere waits in `missing_files` as the line that names
it, its hash and its override, for the loader that needs it. docs/bundles.md, "Checkpoints that move".
"""

from __future__ import annotations

import glob
import hashlib
import os
from pathlib import Path
from typing import Any

from lafa.config_trust import CHECKPOINT_CONFIG_KEY, parse_yaml

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
        part = config.get(section) if isinstance(config, dict) else None
        args = part.get("init_args") if isinstance(part, dict) else None
        value = args.get(key) if isinstance(args, dict) else None
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
        try:
            exists, digest = _content(value, shards=where.startswith("data"))
        except OSError:  # unreadable or gone while it was hashed: recorded without a hash
            exists, digest = False, None
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
