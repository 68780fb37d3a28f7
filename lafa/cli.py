"""The `lafa` entry point: LightningCLI (fit, validate, test, predict) plus the project's own subcommands.

Lightning subcommands take YAML configs (`lafa fit --config configs/lafa.yaml --config configs/tiny/lafa.yaml`).
Every checkpoint written by a `lafa fit` run carries the merged config it was trained with, so
`lafa test --ckpt_path X` needs nothing else; a `--config` given after it still overrides any value.
Project subcommands live in `lafa/commands/<name>.py`, each with a `main(argv) -> int`.

Callbacks every Lightning subcommand gets without listing them in a YAML are in `ALWAYS_ON_CALLBACKS` (config
key -> class); each one's init arguments are a config section of that name (`--finite_guard.check_gradients
false`). A checkpoint's stored config is data: it is checked against the trusted classes
(`lafa.config_trust`) before it reaches the parser; every checkpoint a subcommand reads (`--ckpt_path last`
included) is read and checked once (`lafa.checkpoints`) and written whole (`lafa.checkpoint_io`). Errors in what
the user gave (a file, a checkpoint, a stored config, a run that diverged) are a `LafaUserError`: one line on
stderr, exit code 2.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

from lafa.errors import USER_ERROR_EXIT, LafaUserError  # noqa: F401 (re-exported)

PROJECT_COMMANDS = {
    "analyze": ("lafa.commands.analyze", "spectral slope, LPI, correlation maps, channel ablation of latents"),
    "encode": ("lafa.commands.encode", "pre-encode audio shards into latent shards with any autoencoder"),
    "export": ("lafa.commands.export", "write a stage checkpoint's (EMA) weights alone as safetensors"),
    "generate": ("lafa.commands.generate", "text-to-audio sampling from a DiT checkpoint"),
    "evaluate": ("lafa.commands.evaluate", "FD_openl3, KL_PaSST, CLAP score of a folder of audio"),
    "push": ("lafa.commands.push", "upload a bundle folder (lafa export --out DIR) to the Hugging Face Hub"),
    "study": ("lafa.commands.study", "run, resume, plan or report a study (a set of lafa fit runs)"),
}
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
    given = [b for a, b in zip(argv, argv[1:], strict=False) if a == "--ckpt_path"]
    ckpt_path = (given + [a.split("=", 1)[1] for a in argv if a.startswith("--ckpt_path=")] + [None])[0]
    if ckpt_path is None or ckpt_path in ("last", "best"):
        return argv
    from lafa.checkpoints import CHECKPOINT_CONFIG_KEY, read_checkpoint

    stored = read_checkpoint(ckpt_path).get(CHECKPOINT_CONFIG_KEY)  # refuses untrusted classes, NaN; read once
    if stored is None:
        if "--config" not in argv and not any(a.startswith("--config=") for a in argv):
            raise LafaUserError(f"{ckpt_path} carries no lafa config (not written by `lafa fit`?); pass --config too")
        return argv
    return [argv[0], "--config", stored, *argv[1:]]  # jsonargparse takes a config's text as well as its path


def _lightning_cli(argv: list[str]) -> None:
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

        def instantiate_trainer(self, **kwargs):  # noqa: ANN003, ANN201
            return whole_checkpoints(super().instantiate_trainer(**kwargs))

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
        args=argv,
    )


def _usage() -> str:
    lines = ["lafa <subcommand> [options]", "", "Lightning subcommands: fit, validate, test, predict", "",
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
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    try:
        if argv[0] in PROJECT_COMMANDS:
            module_name = PROJECT_COMMANDS[argv[0]][0]
            module = importlib.import_module(module_name)
            return int(module.main(argv[1:]) or 0)
        _lightning_cli(with_checkpoint_config(argv))
    except Exception as e:  # re-raised unless it is, or was directly caused by, a user error
        user_error = _user_error(e)
        if user_error is None:
            raise
        print(f"lafa {argv[0]}: error: {' '.join(str(user_error).split())}", file=sys.stderr)
        return USER_ERROR_EXIT
    return 0


if __name__ == "__main__":
    sys.exit(main())
