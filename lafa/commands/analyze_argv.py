"""`lafa analyze`'s command line before jsonargparse reads it: repeated options, labels, stage configs."""

from __future__ import annotations

from pathlib import Path

import yaml

from lafa.errors import LafaUserError

STAGE_CONFIG_KEYS = ("model", "data", "trainer")
LIST_FLAGS = ("--ckpt_path", "--label", "--audio")  # options that append when repeated


def normalise_argv(argv: list[str]) -> list[str]:
    """The command line as jsonargparse reads it, with lafa's rules for repeated options:

    - list options append: `--ckpt_path A --ckpt_path B` analyses both, `--audio X --audio Y` reads both;
    - a `--label` names the values of the `--ckpt_path` right before it (one label per path: `--ckpt_path a b
      --label x y`, or `--ckpt_path a --label x`); a path without a label gets one from its path
      (`default_label`), so `--ckpt_path A --ckpt_path B --label vae` labels B "vae" and A by its run folder;
    - every other option given twice is refused (one line), not silently overridden;
    - a --config that is a stage config (model/data/trainer keys) becomes --stage_config.
    """
    out, paths, labels, audio = [], [], [], []  # labels: one per path, None until named
    unnamed = 0  # values of the most recent --ckpt_path (the last of paths) a --label may still name
    seen: dict[str, str] = {}
    i = 0
    while i < len(argv):
        arg = argv[i]
        flag, eq, inline = arg.partition("=")
        flag = "--config" if flag == "-c" else flag
        if flag in LIST_FLAGS:
            values = [inline] if eq else []
            i += 1
            while not eq and i < len(argv) and not argv[i].startswith("--"):
                values.append(argv[i])
                i += 1
            if not values:
                raise LafaUserError(f"{flag}: no value given; write {flag} VALUE")
            if flag == "--ckpt_path":
                unnamed = len(values)
                paths += values
                labels += [None] * len(values)
            elif flag == "--audio":
                audio += values
            else:  # --label
                if not unnamed:
                    raise LafaUserError(f"--label {' '.join(values)}: no --ckpt_path before it to name; write "
                                        "--ckpt_path PATH --label NAME")
                if len(values) != unnamed:
                    named = " ".join(paths[-unnamed:])
                    raise LafaUserError(f"--label {' '.join(values)}: {len(values)} label(s) for the "
                                        f"{unnamed} path(s) of the --ckpt_path before it ({named}); give one "
                                        "label per path, or none to label them from their paths")
                labels[-unnamed:] = values
                unnamed = 0  # one --label per --ckpt_path
            continue
        if flag == "--config" and (eq or i + 1 < len(argv)):
            path = inline if eq else argv[i + 1]
            out += ["--stage_config" if _is_stage_config(path) else "--config", path]
            i += 1 if eq else 2
            continue
        if flag.startswith("--") and flag not in ("--help", "--print_config"):
            value = inline if eq else (argv[i + 1] if i + 1 < len(argv) and not argv[i + 1].startswith("--") else "")
            if flag in seen:
                raise LafaUserError(f"{flag}: given twice ({seen[flag]!r}, then {value!r}); give it once")
            seen[flag] = value
        out.append(arg)
        i += 1
    if paths:
        out += ["--ckpt_path", *paths, "--label", *distinct_labels(paths, labels)]
    if audio:
        out += ["--audio", *audio]
    return out


def distinct_labels(paths: list[str], labels: list[str | None]) -> list[str]:
    """The given labels, and one from its path (`default_label`) for each path without one; a default that
    collides with another label (or is "mel") gets the file's stem appended (vae-last, vae-epoch=3), then a
    number."""
    out = [label if label is not None else default_label(path) for path, label in zip(paths, labels, strict=True)]
    clash = [label is None and (out.count(out[k]) > 1 or out[k] == "mel") for k, label in enumerate(labels)]
    out = [f"{o}-{Path(p).stem}" if c else o for o, p, c in zip(out, paths, clash, strict=True)]
    for k, label in enumerate(labels):
        base, n = out[k], 2
        while label is None and (out.count(out[k]) > 1 or out[k] == "mel"):
            out[k], n = f"{base}-{n}", n + 1
    return out


def _is_stage_config(path: str) -> bool:
    try:
        config = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError):
        return False  # let jsonargparse report it
    return isinstance(config, dict) and any(k in config for k in STAGE_CONFIG_KEYS)


def shards_from_stage_config(path: str) -> str | list[str]:
    """The shards a stage config's AudioDataModule reads (data.init_args: val, else test, else train)."""
    config = yaml.safe_load(Path(path).read_text()) or {}
    args = (config.get("data") or {}).get("init_args") or {}
    for key in ("val_shards", "test_shards", "train_shards"):
        if args.get(key):
            return args[key]
    raise LafaUserError(f"{path}: names no shards under data.init_args; pass --data SHARDS")


def default_label(ckpt_path: str) -> str:
    """runs/demo/vae/checkpoints/last.ckpt -> vae; a model directory -> its name; other files -> their stem."""
    path = Path(ckpt_path)
    if path.is_dir():
        return path.resolve().name
    return path.parent.parent.name if path.parent.name == "checkpoints" else path.stem
