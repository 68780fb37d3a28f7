"""A model's config, named sizes, and building the model from them: the one way every stage gets its model.

`config_class(Model)` derives a dataclass from the model's own constructor signature: a `preset` name plus
every constructor argument, each defaulting to None = "from the preset, else the model's default". A stage
takes it as `model: <Model>Config` (docs/architecture.md, "A stage gets its model one way").
"""

from __future__ import annotations

import dataclasses
import inspect
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

from torch import nn

M = TypeVar("M", bound=nn.Module)


def config_class(cls: type[nn.Module], exclude: tuple[str, ...] = ()) -> type:
    """The `<cls>Config` dataclass: `preset` and every argument of `cls.__init__` but `exclude` (values the stage
    derives, such as a latent width read from the frozen autoencoder), all Optional with default None."""
    hints = typing.get_type_hints(cls.__init__)
    fields: list[tuple[str, Any, Any]] = [("preset", str | None, None)]
    for name in inspect.signature(cls).parameters:
        if name not in exclude:
            fields.append((name, hints[name] | None, None))
    config = dataclasses.make_dataclass(f"{cls.__name__}Config", fields)
    config.__module__ = cls.__module__
    config.__doc__ = (f"{cls.__name__}'s arguments (None: from `preset`, else {cls.__name__}'s default); "
                      f"built by lafa.models.presets.build_model")
    return config


def as_mapping(config: Any) -> dict[str, Any]:
    """A config dataclass or mapping -> a plain dict of the values that are set (what a checkpoint stores)."""
    if config is None:
        return {}
    items = dataclasses.asdict(config) if dataclasses.is_dataclass(config) else dict(config)
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in items.items() if v is not None}


def model_arguments(cls: type[nn.Module], presets: Mapping[str, Mapping[str, Any]], config: Any,
                    **derived: Any) -> dict[str, Any]:
    """The arguments `build_model` passes to `cls`: `derived` (what the stage knows from its data or frozen parts),
    then the preset's values, then the config's (the model's own defaults fill the rest). An unknown preset or
    argument is a ValueError naming the allowed ones."""
    values = as_mapping(config)
    preset = values.pop("preset", None)
    if preset is not None:
        if preset not in presets:
            raise ValueError(f"unknown {cls.__name__} preset {preset!r} (one of {', '.join(presets)})")
        values = {**presets[preset], **values}
    allowed = list(inspect.signature(cls).parameters)
    unknown = sorted(set(values) - set(allowed))
    if unknown:
        raise ValueError(f"model: {', '.join(unknown)} is not an argument of {cls.__name__} "
                         f"(its arguments: preset, {', '.join(allowed)})")
    return {**derived, **values}


def build_model(cls: type[M], presets: Mapping[str, Mapping[str, Any]], config: Any, **derived: Any) -> M:
    """`cls(**model_arguments(cls, presets, config, **derived))`."""
    return cls(**model_arguments(cls, presets, config, **derived))


def check_choice(what: str, value: Any, choices: tuple[str, ...]) -> None:
    """A ValueError "unknown <what> <value!r> (a | b | ...)" unless `value` is one of `choices`."""
    if value not in choices:
        raise ValueError(f"unknown {what} {value!r} ({' | '.join(choices)})")
