"""Stored configs are data, never code: which classes a checkpoint's stored config may name (issue of trust).

`check_config_classes` walks a stored config at any depth and refuses, before anything is imported or called,
every class_path, Lightning `_instantiator`, class-slot string or dotted string given to a callable argument
that is not lafa's own stages/data modules or the Lightning/torch classes a config may legitimately name.
Users extend the list with the environment variable `LAFA_TRUSTED_CLASSES`; a checkpoint cannot.
"""

from __future__ import annotations

import builtins
import importlib
import inspect
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lafa.errors import LafaUserError

CHECKPOINT_CONFIG_KEY = "lafa_config"  # the merged YAML config `lafa fit` stores in every checkpoint

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


def is_trusted_class_path(class_path: str) -> bool:
    """Whether a stored config may name `class_path` (a full dotted path; decided without importing anything)."""
    if not isinstance(class_path, str) or not _DOTTED.fullmatch(class_path):
        return False
    if class_path in TRUSTED_CLASSES or class_path.startswith(TRUSTED_CLASS_PREFIXES):
        return True
    user = [e.strip() for e in os.environ.get(TRUST_ENV, "").split(",") if e.strip()]  # `mypkg,other.mod.Cls`
    return any(class_path == e or class_path.startswith(e + ".") for e in user)


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
    config = parse_yaml(config, source)
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
            cls = trusted_class(class_path, source, at)
            init_args = node.get("init_args") if isinstance(node.get("init_args"), dict) else {}
            for name in sorted(_code_params(cls) & set(init_args)):
                if _names_code(init_args[name]):
                    raise _refuse(source, f"{where}.init_args.{name}".lstrip("."), init_args[name],
                                  "a dotted string given to an argument typed as a callable or a class (code)")


def trusted_class(class_path: str, source: str | Path, where: str = "model.class_path") -> type:
    """The class a stored config names, imported only once it is known to be trusted."""
    if not is_trusted_class_path(class_path):
        raise _refuse(source, where, class_path, "a class lafa does not load from a stored config")
    module_name, _, name = class_path.rpartition(".")
    try:
        obj = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError) as e:
        raise LafaUserError(f"{source}: its stored config names {where} = {class_path!r}, which cannot be "
                            f"imported ({e}); is the package that defines it installed?") from e
    if not isinstance(obj, type):
        raise _refuse(source, where, class_path, f"which is a {type(obj).__name__}, not a class")
    return obj


def parse_yaml(stored: Any, source: str | Path) -> Any:
    import yaml

    if not isinstance(stored, str):
        return stored
    try:
        return yaml.safe_load(stored)
    except yaml.YAMLError as e:
        raise LafaUserError(f"{source}: its stored config is not valid YAML ({str(e).splitlines()[0]}); "
                            f"pass --config with the run's config instead") from e
