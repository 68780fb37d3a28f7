"""Config merging for study runs, and the check that the runs of one stage differ only in the study's factor.

`deep_merge` is jsonargparse's own `--config a --config b` merge: `Namespace.update`, which
`ArgumentParser.merge_config` calls, on Namespaces built from the two mappings. No parser: building
`lafa fit`'s LightningCLI parser imports Lightning and every stage class (measured many times slower,
docs/study.md). Mappings merge key by key (the models' dataclass configs included), lists and scalars are
replaced. One rule is kept simpler: a `class_path` that changes replaces the whole entry, where jsonargparse's
parser keeps the old `init_args` the new class accepts. tests/study/test_merge_vs_jsonargparse.py compares the
result with `lafa fit`'s parser on every run of every shipped study.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml
from jsonargparse import Namespace

REF_PREFIX = "@"  # a `set` value "@<run>" is that run's final checkpoint path


def _namespace(value: Any) -> Any:
    """Nested mappings as nested Namespaces; lists, scalars and a mapping with a key that is not a plain name
    (not a string, or dotted) are leaves."""
    if isinstance(value, dict) and all(isinstance(k, str) and "." not in k for k in value):
        return Namespace({k: _namespace(v) for k, v in value.items()})
    return value


def deep_merge(base: Any, over: Any) -> Any:
    """`over` merged into a copy of `base` (neither is modified), as jsonargparse merges a later `--config` into an
    earlier one (module docstring: a changed `class_path` replaces the entry)."""
    if not (isinstance(base, dict) and isinstance(over, dict)):
        return copy.deepcopy(over)
    merged, over = _namespace(copy.deepcopy(base)), _namespace(copy.deepcopy(over))
    for key, value in over.items():
        entry, _, leaf = key.rpartition(".")
        if leaf == "class_path" and entry and merged.get(key) not in (None, value):
            merged[entry] = over[entry].clone()  # in place: the entry keeps its position
    return merged.update(over).as_dict()


def dotted_to_nested(values: dict[str, Any]) -> dict[str, Any]:
    """{"model.init_args.lr": 1e-4} -> {"model": {"init_args": {"lr": 1e-4}}}."""
    nested: dict[str, Any] = {}
    for key, value in values.items():
        node = nested
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ValueError(f"config key '{key}': '{part}' is set to a value and also used as a mapping")
        node[leaf] = value
    return nested


def flatten(config: Any, prefix: str = "") -> dict[str, Any]:
    """Nested mappings -> {dotted key: leaf value}; lists are leaves (compared whole)."""
    if not isinstance(config, dict) or not config:
        return {prefix: config} if prefix else {}
    flat: dict[str, Any] = {}
    for key, value in config.items():
        flat.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def _load_yaml(path: str | Path, what: str = "stage config") -> dict[str, Any]:
    if not Path(path).is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    data = yaml.safe_load(Path(path).read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{what} {path}: top level must be a mapping, got {type(data).__name__}")
    return data


def resolve_refs(study: Any, values: dict[str, Any], seed: int | None = None) -> dict[str, Any]:
    """Replace "@run" values by that run's final checkpoint path (the same seed's, for a run repeated per seed)."""
    return {k: study.final_checkpoint(v[len(REF_PREFIX):], seed) if isinstance(v, str) and v.startswith(REF_PREFIX)
            else v for k, v in values.items()}


def run_config(study: Any, run: Any, seed: int | None) -> dict[str, Any]:
    """The merged `lafa fit` config of one run instance: its stage's configs, the stage's and the run's `set`,
    and the seed (compared and seeded runs). The runner adds only where the run writes (logger, checkpoints)."""
    stage = study.stages[run.stage]
    config: dict[str, Any] = {}
    for path in stage.config:
        config = deep_merge(config, _load_yaml(path))
    config = deep_merge(config, dotted_to_nested(stage.set))
    config = deep_merge(config, dotted_to_nested(resolve_refs(study, run.set, seed)))
    if seed is not None:
        config["seed_everything"] = seed
    return config


def _covered(key: str, factor_keys: list[str]) -> bool:
    return any(key == f or key.startswith(f + ".") for f in factor_keys)


def config_differences(configs: dict[str, dict[str, Any]]) -> set[str]:
    """Dotted keys whose values are not the same in every config (missing counts as different)."""
    flats = [flatten(c) for c in configs.values()]
    keys = set().union(*flats) if flats else set()
    return {k for k in keys if any(f.get(k, KeyError) != flats[0].get(k, KeyError) for f in flats[1:])}


def check_one_factor(study: Any) -> None:
    """Runs of the same stage (at the same seed) may differ only in `factor_keys`; raise naming what else differs."""
    by_stage: dict[tuple[str, int | None], dict[str, dict]] = {}
    for run in study.runs.values():
        if run.ckpt:  # reused checkpoint: not trained here, nothing to compare
            continue
        for seed in study.seeds_of(run):
            # autoencoder runs (seed None) are compared with each other; compared runs seed by seed
            by_stage.setdefault((run.stage, seed), {})[study.instance_name(run, seed)] = run_config(study, run, seed)
    for (stage, _), configs in by_stage.items():
        stray = sorted(k for k in config_differences(configs) if not _covered(k, study.factor_keys))
        if stray:
            raise ValueError(
                f"study {study.name}: runs {sorted(configs)} of stage '{stage}' differ in {stray}, which are not "
                f"the study's factor ({study.factor}: factor_keys {study.factor_keys})"
            )


def check_final_evaluation(study: Any) -> None:
    """Every step-scheduled run must validate at its last step: its final value is the curve's end, and
    last.ckpt (written after each validation) must hold the finished model that other runs read."""
    for run in study.runs.values():
        if run.ckpt:
            continue
        for seed in study.seeds_of(run):
            trainer = run_config(study, run, seed).get("trainer") or {}
            steps, every = trainer.get("max_steps"), trainer.get("val_check_interval")
            if (isinstance(steps, int) and steps > 0 and isinstance(every, int) and not isinstance(every, bool)
                    and trainer.get("check_val_every_n_epoch", 1) is None and steps % every):
                raise ValueError(
                    f"study {study.name}: run '{run.name}' has trainer.max_steps {steps}, not a multiple of "
                    f"trainer.val_check_interval {every}: its last steps would be neither evaluated nor checkpointed"
                )
