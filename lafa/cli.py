"""The `lafa` entry point: LightningCLI (fit, validate, test) plus the project's own subcommands
(`lafa/commands/<name>.py`, each with a `main(argv) -> int`).

`lafa test|validate --ckpt_path X` puts the config X stored (`lafa fit` writes it into every checkpoint) before
the user's arguments, which win; X a bundle folder or its Hub repo id builds the stage from the bundle and takes
the data from the user (docs/architecture.md, "Stages and checkpoints"; docs/bundles.md). Callbacks every
Lightning subcommand gets are in `ALWAYS_ON_CALLBACKS` (config key -> class: `--finite_guard.check_gradients
false`). A `LafaUserError` is one line on stderr and exit code 2 (`lafa.errors`), `--debug` shows the traceback;
Ctrl-C says what was kept and how to resume (exit code 130). Third-party chatter that says nothing about the
run (LightningCLI's `args` warning, Lightning's litlogger/litmodels adverts) is filtered by its exact text.
"""

from __future__ import annotations

import importlib
import logging
import shlex
import sys
import warnings
from pathlib import Path

from lafa.errors import USER_ERROR_EXIT, BadInput, LafaUserError  # noqa: F401 (re-exported)

PROJECT_COMMANDS = {
    "analyze": ("lafa.commands.analyze", "spectral slope, LPI, correlation maps, channel ablation of latents"),
    "encode": ("lafa.commands.encode", "pre-encode audio shards into latent shards with any autoencoder"),
    "export": ("lafa.commands.export", "write a stage checkpoint's (EMA) weights alone as safetensors"),
    "generate": ("lafa.commands.generate", "text-to-audio sampling from a DiT checkpoint"),
    "evaluate": ("lafa.commands.evaluate", "FD_openl3, KL_PaSST, CLAP score of a folder of audio"),
    "push": ("lafa.commands.push", "upload a bundle folder (lafa export --out DIR) to the Hugging Face Hub"),
    "study": ("lafa.commands.study", "run, resume, plan or report a study (a set of lafa fit runs)"),
}
LIGHTNING_COMMANDS = ("fit", "validate", "test")
# `predict` is Lightning's, and no lafa stage defines a prediction: refused in one line, not offered in the help
NOT_OFFERED = {"predict": "no lafa stage defines a prediction; use `lafa generate` (audio from a DiT), "
                          "`lafa encode` (latents of an autoencoder) or `lafa analyze` (latent statistics)"}
# what a Ctrl-C in a project subcommand keeps, and how to go on (the Lightning subcommands say it from the Trainer)
RESUME_HINTS = {
    "encode": "finished latent shards are kept; rerun the same command to encode the rest (finished ones are skipped)",
    "study": "finished runs are kept and an interrupted run resumes from its last.ckpt; rerun the same command",
    "generate": "clips written so far are kept; rerun the same command to write them all",
}
INTERRUPTED_EXIT = 130  # the shell's code for a command ended by SIGINT
_CKPT_SUBCOMMANDS = ("validate", "test", "predict")
# config key -> class of the callbacks every Lightning subcommand adds to its Trainer (add one line per callback)
ALWAYS_ON_CALLBACKS = {
    "finite_guard": "lafa.stages.finite.FiniteGuard",  # stop on NaN/inf loss, gradients or saved weights
    "seeding": "lafa.stages.seeding.RankSeedCallback",  # per-rank, per-batch draws: DDP ranks differ, resume is exact
}


def with_checkpoint_config(argv: list[str]) -> list[str]:
    """For validate/test/predict with --ckpt_path, put the checkpoint's own config first (user args win)."""
    if not argv or argv[0] not in _CKPT_SUBCOMMANDS:
        return argv
    ckpt_path = next(iter(_option_values(argv, "--ckpt_path")), None)
    if ckpt_path is None or ckpt_path in ("last", "best"):
        return argv
    from lafa.checkpoints import CHECKPOINT_CONFIG_KEY, read_checkpoint

    stored = read_checkpoint(ckpt_path).get(CHECKPOINT_CONFIG_KEY)  # refuses untrusted classes, NaN; read once
    if stored is None:
        if "--config" not in argv and not any(a.startswith("--config=") for a in argv):
            raise LafaUserError(f"{ckpt_path} carries no lafa config (not written by `lafa fit`?); pass --config too")
        return argv
    if not any(a.startswith("--trainer.logger") for a in argv):
        stored = _fresh_log_version(stored)
    return [argv[0], "--config", stored, *argv[1:]]  # jsonargparse takes a config's text as well as its path


def _fresh_log_version(stored: str) -> str:
    """A stored logger with a fixed version (a study run's `tb/`) would take this evaluation's scalars into the
    training curves a study reads (the last value logged at a step wins): the evaluation logs to a new version
    beside it instead. `--trainer.logger ...` on the command line is used as given."""
    import yaml

    config = yaml.safe_load(stored) or {}
    loggers = (config.get("trainer") or {}).get("logger")
    fixed = [lg["init_args"] for lg in (loggers if isinstance(loggers, list) else [loggers])
             if isinstance(lg, dict) and isinstance(lg.get("init_args"), dict)
             and lg["init_args"].get("version") is not None]
    for init_args in fixed:
        init_args["version"] = None
    return yaml.safe_dump(config, sort_keys=False) if fixed else stored


class _NoAdverts(logging.Filter):
    """Drops Lightning's litlogger/litmodels adverts (a `rank_zero_info` at every Trainer), nothing else."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not ("Tip:" in message and ("litlogger" in message or "litmodels" in message))


def quiet_third_party() -> None:
    """Filter, by their exact text, the third-party messages that say nothing about the run."""
    # lafa hands LightningCLI its own argv (after putting a checkpoint's config first): that is the intended use
    warnings.filterwarnings("ignore", message=r"LightningCLI's args parameter is intended to run from within Python")
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero",
                 "lightning_utilities.core.rank_zero"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _NoAdverts) for f in logger.filters):
            logger.addFilter(_NoAdverts())


def _option_values(argv: list[str], name: str) -> list[str]:
    """The values given to `--name` (as `--name X` or `--name=X`), in order."""
    values = []
    for i, arg in enumerate(argv):
        if arg == name and i + 1 < len(argv):
            values.append(argv[i + 1])
        elif arg.startswith(name + "="):
            values.append(arg.split("=", 1)[1])
    return values


_SPLIT_OF = {"validate": "val", "test": "test"}  # the data split each evaluation subcommand reads


def model_source(argv: list[str]) -> Path | None:
    """For validate/test: the bundle folder (or Stable Audio Open's files) `--ckpt_path` names (a folder, or a Hub
    repo id resolved through huggingface_hub's cache, `lafa.hub`), else None (a checkpoint file, `last`, or nothing
    given)."""
    given = _option_values(argv, "--ckpt_path")
    if not argv or argv[0] not in _SPLIT_OF or not given:
        return None
    value = given[0]
    from lafa import hub
    from lafa.bundles import is_bundle

    path = Path(value)
    if path.is_file() or not (path.is_dir() or hub.looks_like_repo_id(value)):
        return None  # a checkpoint, Lightning's `last`/`best`, or a missing file (`check_ckpt_path` says which)
    folder = hub.resolve(value)  # a repo id not in the cache offline: one line saying how to download it
    if is_bundle(folder) or hub.is_sao_folder(folder):  # SAO's own files: its VAE, tested as a VAE stage
        return folder
    raise BadInput(f"--ckpt_path {value}", "is a folder, but neither a checkpoint file nor a lafa bundle (config.json "
                   "+ model.safetensors)", "give a .ckpt written by `lafa fit`, a bundle folder written by `lafa "
                   "export --out DIR`, or a Hub repo id (a bundle, or stabilityai/stable-audio-open-1.0)")


def with_bundle_config(argv: list[str], folder: Path) -> list[str]:
    """validate/test of a bundle: the stage's config rebuilt from it first (user args win), `--ckpt_path` dropped
    (the weights come from the bundle after the stage is built: `lafa.stages.pretrained`)."""
    import yaml

    from lafa.stages.pretrained import stage_config

    return [argv[0], "--config", yaml.safe_dump(stage_config(folder), sort_keys=False),
            *_without_ckpt_path(argv[1:])]


def check_data_given(config, subcommand: str, bundle: Path | None, given: list[str]) -> None:  # noqa: ANN001
    """validate/test need the split's shards: none given, or a spec that matches no shard, is one line naming the
    option, before any model, Trainer or log folder is made."""
    split = _SPLIT_OF.get(subcommand)
    data = config.get("data") if split else None
    init_args = data.get("init_args") if data is not None else None
    key = f"{split}_shards"
    if split is None or (data is not None and (init_args is None or key not in init_args)):
        return
    if data is not None and init_args[key]:
        from lafa.data.stream import split_shards

        split_shards(init_args[key], split)  # the DataModule expands it the same way when it reads
        return
    if data is None and bundle is None:
        return  # a model that brings its own data (Lightning says what is missing)
    source = _option_values(given, "--ckpt_path")
    from lafa.bundles import is_bundle

    model = "a bundle" if bundle and is_bundle(bundle) else "Stable Audio Open's VAE"
    what = (f"not given: --ckpt_path {source[0]} is {model}, which holds a model, not a run's data" if bundle
            else "not given in the config or on the command line")
    raise BadInput(f"data.init_args.{key}", what, f"pass --data.init_args.{key} SPEC (a folder, glob or brace "
                                                  f"pattern of .tar shards) or --config data.yaml with a data: section")


def check_ckpt_path(argv: list[str]) -> None:
    """A `--ckpt_path` that names no file is one line before Lightning builds anything (no log folder is made)."""
    for value in _option_values(argv, "--ckpt_path"):
        if value in ("last", "best", "hpc") or value.startswith("registry") or Path(value).is_file():
            continue
        what = "is a folder, not a checkpoint file" if Path(value).is_dir() else "no such file"
        fix = ("give a .ckpt written by `lafa fit` (e.g. runs/<stage>/checkpoints/last.ckpt)"
               + (", or `--ckpt_path last` to resume the config's own last checkpoint" if argv[0] == "fit" else ""))
        raise BadInput(f"--ckpt_path {value}", what, fix)


def _without_ckpt_path(argv: list[str]) -> list[str]:
    """`argv` less any `--ckpt_path X` / `--ckpt_path=X`."""
    kept, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--ckpt_path":
            skip = True
        elif not arg.startswith("--ckpt_path="):
            kept.append(arg)
    return kept


def interrupted_message(trainer, subcommand: str, argv: list[str]) -> str:  # noqa: ANN001
    """What a Ctrl-C during a Lightning subcommand kept and how to go on."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    head = f"lafa {subcommand}: interrupted (Ctrl-C) at step {trainer.global_step}"
    if subcommand != "fit":
        return f"{head}; {subcommand} writes its metrics at the end, so nothing of it is kept; rerun the same command"
    saved = [(c._last_global_step_saved, c.last_model_path or c.best_model_path) for c in trainer.checkpoint_callbacks
             if isinstance(c, ModelCheckpoint) and (c.last_model_path or c.best_model_path)]
    saved = [(step, path) for step, path in saved if Path(path).is_file()]
    log_dir = getattr(trainer.logger, "log_dir", None) if trainer.logger else None
    logs = f"; logs in {log_dir}" if log_dir else ""
    if not saved:
        return (f"{head}; no checkpoint was written yet{logs}; rerun the same command to start again "
                "(the configs write last.ckpt every N steps: trainer.callbacks' every_n_train_steps)")
    step, path = max(saved)
    return (f"{head}; kept {path} (step {step}){logs}; resume with: "
            f"{shlex.join(['lafa', *_without_ckpt_path(argv), '--ckpt_path', path])}")


def _lightning_cli(argv: list[str], given: list[str] | None = None, bundle: Path | None = None) -> None:
    from lightning.pytorch import LightningDataModule, LightningModule
    from lightning.pytorch.cli import LightningCLI, SaveConfigCallback

    from lafa.checkpoint_io import resume_path, whole_checkpoints
    from lafa.checkpoints import CHECKPOINT_CONFIG_KEY, read_checkpoint

    class ConfigInCheckpoint(SaveConfigCallback):
        """Writes config.yaml to the log dir (Lightning's behaviour) and the same YAML into every checkpoint."""

        def on_save_checkpoint(self, trainer, pl_module, checkpoint) -> None:  # noqa: ANN001
            checkpoint[CHECKPOINT_CONFIG_KEY] = self.parser.dump(self.config, skip_none=False)

    class LafaCLI(LightningCLI):
        def add_arguments_to_parser(self, parser) -> None:  # noqa: ANN001
            for key, class_path in ALWAYS_ON_CALLBACKS.items():
                module_name, _, name = class_path.rpartition(".")
                parser.add_lightning_class_args(getattr(importlib.import_module(module_name), name), key)

        def _parse_ckpt_path(self) -> None:
            # Lightning would re-apply the checkpoint's hyperparameters over the user's --model arguments;
            # a lafa checkpoint's whole config was already put first in argv, so user arguments must win.
            # Any checkpoint (fit resumes too) is first refused if it names untrusted classes or holds NaN/inf.
            sub = self.config.get("subcommand")
            ckpt_path = self.config[sub].get("ckpt_path") if sub else None
            if not (ckpt_path and Path(ckpt_path).is_file() and CHECKPOINT_CONFIG_KEY in read_checkpoint(ckpt_path)):
                super()._parse_ckpt_path()

        def before_instantiate_classes(self) -> None:
            check_data_given(self.config[self.subcommand], self.subcommand, bundle, given or argv)

        def instantiate_classes(self) -> None:
            super().instantiate_classes()
            if bundle is not None:  # the stage was built from the bundle's config: now its weights
                from lafa.stages.pretrained import load_stage_weights

                load_stage_weights(self.model, bundle)

        def instantiate_trainer(self, **kwargs):  # noqa: ANN003, ANN201
            return whole_checkpoints(super().instantiate_trainer(**kwargs))

        def _run_subcommand(self, subcommand: str) -> None:
            try:
                super()._run_subcommand(subcommand)
            except SystemExit:  # Lightning's answer to Ctrl-C: a graceful shutdown, then exit(1)
                if not self.trainer.interrupted:
                    raise
                print(interrupted_message(self.trainer, subcommand, given or argv), file=sys.stderr)
                raise SystemExit(INTERRUPTED_EXIT) from None

        def _prepare_subcommand_kwargs(self, subcommand: str) -> dict:
            kwargs = super()._prepare_subcommand_kwargs(subcommand)
            if "ckpt_path" in kwargs:  # `last` too: read through lafa's checks, and said where it resumes from
                kwargs["ckpt_path"] = resume_path(self.trainer, kwargs["ckpt_path"], subcommand)
            return kwargs

    LafaCLI(
        LightningModule,
        LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        save_config_callback=ConfigInCheckpoint,
        save_config_kwargs={"overwrite": True},
        auto_configure_optimizers=False,
        parser_kwargs={"prog": "lafa"},
        args=argv,
    )


def _usage() -> str:
    lines = ["lafa <subcommand> [options]   (`lafa <subcommand> --help` lists its options; --debug shows tracebacks)",
             "", "Lightning subcommands (a stage's YAML config, or a checkpoint):",
             "  fit       train a stage: lafa fit -c configs/vae.yaml [-c configs/tiny/vae.yaml]",
             "  validate  validation metrics of a checkpoint: lafa validate --ckpt_path X",
             "  test      test metrics of a checkpoint: lafa test --ckpt_path X",
             "            (X a bundle folder or Hub repo id: add --data.init_args.test_shards SPEC, or val_shards)", "",
             "Project subcommands:"]
    lines += [f"  {name:<9} {help_}" for name, (_, help_) in PROJECT_COMMANDS.items()]
    return "\n".join(lines)


def _user_error(error: BaseException | None) -> LafaUserError | None:
    """`error` or the first of its direct causes (`raise ... from`) that is a LafaUserError: jsonargparse wraps
    what a class raises while it is instantiated from a config."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, LafaUserError):
            return error
        seen.add(id(error))
        error = error.__cause__
    return None


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    quiet_third_party()
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    sub = argv[0]
    try:
        if sub in NOT_OFFERED:
            raise BadInput(sub, "not offered by lafa", NOT_OFFERED[sub])
        if sub in PROJECT_COMMANDS:
            module = importlib.import_module(PROJECT_COMMANDS[sub][0])
            return int(module.main(argv[1:]) or 0)
        if sub not in LIGHTNING_COMMANDS:
            raise BadInput(sub, "not a lafa subcommand",
                           f"use one of {', '.join([*LIGHTNING_COMMANDS, *PROJECT_COMMANDS])} (see `lafa --help`)")
        bundle = model_source(argv)
        if bundle is None:
            check_ckpt_path(argv)
        _lightning_cli(with_checkpoint_config(argv) if bundle is None else with_bundle_config(argv, bundle),
                       given=argv, bundle=bundle)
    except KeyboardInterrupt:
        if debug:
            raise
        hint = RESUME_HINTS.get(sub, "rerun the same command")
        print(f"lafa {sub}: interrupted (Ctrl-C); {hint}", file=sys.stderr)
        return INTERRUPTED_EXIT
    except Exception as e:  # re-raised unless it is, or was directly caused by, a user error
        user_error = _user_error(e)
        if user_error is None or debug:
            raise
        print(f"lafa {sub}: error: {' '.join(str(user_error).split())}", file=sys.stderr)
        return USER_ERROR_EXIT
    return 0


if __name__ == "__main__":
    sys.exit(main())
