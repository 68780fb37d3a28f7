"""`deep_merge` (lafa.study.merge) against jsonargparse's own `--config a --config b` merge, which `lafa fit` applies.

A study writes each run's merged config itself (fit.yaml) rather than building LightningCLI's parser in every
`lafa study` (it imports Lightning and every stage class: see lafa/study/merge.py's docstring for the cost). So the
two merges must not drift: for every run of every shipped study (alone and with its tiny overlay), the config
`run_config` merges equals what `lafa fit`'s parser makes of the same files and `set` values given as `--config`
(values compared with ==: jsonargparse writes 30 as 30.0 where the parameter is a float, and orders a dataclass's keys
by field, which `lafa fit` normalises the same way when it reads fit.yaml)."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest
import yaml

from lafa.cli import ALWAYS_ON_CALLBACKS
from lafa.study.merge import deep_merge, dotted_to_nested, resolve_refs, run_config
from lafa.study.spec import load_study

REPO = Path(__file__).resolve().parents[2]
STUDIES = sorted(p.stem for p in (REPO / "configs" / "studies").glob("*.yaml"))


@pytest.fixture(scope="module")
def fit_parser():
    """The `fit` subparser LightningCLI builds for `lafa fit` (lafa.cli: subclass mode, lafa's always-on callbacks)."""
    from lightning.pytorch import LightningDataModule, LightningModule
    from lightning.pytorch.cli import LightningCLI

    class Built(Exception):
        pass

    class ParserOnly(LightningCLI):
        def add_arguments_to_parser(self, parser) -> None:  # noqa: ANN001
            for key, class_path in ALWAYS_ON_CALLBACKS.items():
                module_name, _, name = class_path.rpartition(".")
                parser.add_lightning_class_args(getattr(importlib.import_module(module_name), name), key)

        def parse_arguments(self, parser, args) -> None:  # noqa: ANN001
            raise Built(parser)

    with pytest.raises(Built) as built:
        ParserOnly(LightningModule, LightningDataModule, subclass_mode_model=True, subclass_mode_data=True,
                   auto_configure_optimizers=False, args=["fit"])
    return built.value.args[0]._subcommands_action._name_parser_map["fit"]


def jsonargparse_merge(parser, files: list[str], *sets: dict) -> dict:  # noqa: ANN001
    """What `lafa fit --config f1 --config f2 ... --config <set as YAML> ...` parses, before defaults."""
    args = [a for f in files for a in ("--config", f)]
    args += [a for s in sets if s for a in ("--config", yaml.safe_dump(dotted_to_nested(s)))]
    config = parser.parse_args(args, defaults=False, _skip_validation=True).as_dict()
    config.pop("config", None)
    config.pop("__path__", None)
    return config


def test_a_changed_class_path_is_where_the_two_differ(fit_parser, tmp_path, monkeypatch):
    """The one rule deep_merge keeps simpler: on a new class_path it drops every old init_arg, jsonargparse keeps
    those the new class accepts. The shipped configs never rely on it (the test below)."""
    monkeypatch.chdir(tmp_path)
    base = {"trainer": {"logger": {"class_path": "lightning.pytorch.loggers.TensorBoardLogger",
                                   "init_args": {"save_dir": "runs/x", "name": "a"}}}}
    over = {"trainer": {"logger": {"class_path": "lightning.pytorch.loggers.CSVLogger"}}}
    for name, config in (("base.yaml", base), ("over.yaml", over)):
        Path(name).write_text(yaml.safe_dump(config))
    ours = deep_merge(base, over)["trainer"]["logger"]
    theirs = jsonargparse_merge(fit_parser, ["base.yaml", "over.yaml"])["trainer"]["logger"]
    assert ours == {"class_path": "lightning.pytorch.loggers.CSVLogger"}
    assert theirs["init_args"] == {"save_dir": "runs/x", "name": "a"}


@pytest.mark.slow
@pytest.mark.parametrize("name", STUDIES)
def test_run_configs_equal_jsonargparse_merge_on_the_shipped_studies(name, fit_parser, monkeypatch):
    monkeypatch.chdir(REPO)
    paper = REPO / "configs" / "studies" / f"{name}.yaml"
    tiny = REPO / "configs" / "tiny" / "studies" / f"{name}.yaml"
    seen = set()
    for variant in [[paper]] + ([[paper, tiny]] if tiny.exists() else []):
        study = load_study(variant)
        for run in study.runs.values():
            stage = study.stages[run.stage]
            key = json.dumps([stage.config, stage.set, run.set], sort_keys=True, default=str)
            if run.ckpt or key in seen:  # a reused checkpoint is not trained; one parse per distinct config
                continue
            seen.add(key)
            seed = study.seeds_of(run)[0]
            ours = run_config(study, run, seed)
            ours.pop("seed_everything", None)  # set by the study, not merged
            theirs = jsonargparse_merge(fit_parser, [str(c) for c in stage.config], stage.set,
                                        resolve_refs(study, run.set, seed))
            theirs.pop("seed_everything", None)
            assert ours == theirs, f"{variant} run {run.name}: deep_merge and jsonargparse's merge differ"
        assert seen, f"{variant}: no run compared"
