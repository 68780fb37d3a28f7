"""The `lafa` entry point: LightningCLI (fit, validate, test, predict) plus the project's own subcommands.

Lightning subcommands take YAML configs (`lafa fit --config configs/lafa.yaml --config configs/tiny/lafa.yaml`).
Every checkpoint written by a `lafa fit` run carries the merged config it was trained with, so
`lafa test --ckpt_path X` needs nothing else; a `--config` given after it still overrides any value.
Project subcommands live in `lafa/commands/<name>.py`, each with a `main(argv) -> int`.
"""

from __future__ import annotations

import atexit
import importlib
import os
import sys
import tempfile
from pathlib import Path

PROJECT_COMMANDS = {
    "analyze": ("lafa.commands.analyze", "spectral slope, LPI, correlation maps, channel ablation of latents"),
    "encode": ("lafa.commands.encode", "pre-encode audio shards into latent shards with any autoencoder"),
    "export": ("lafa.commands.export", "write a stage checkpoint's (EMA) weights alone as safetensors"),
    "generate": ("lafa.commands.generate", "text-to-audio sampling from a DiT checkpoint"),
    "evaluate": ("lafa.commands.evaluate", "FD_openl3, KL_PaSST, CLAP score of a folder of audio"),
    "study": ("lafa.commands.study", "run, resume, plan or report a study (a set of lafa fit runs)"),
}
CHECKPOINT_CONFIG_KEY = "lafa_config"
_CKPT_SUBCOMMANDS = ("validate", "test", "predict")


def read_checkpoint_config(ckpt_path: str | os.PathLike) -> str | None:
    """The YAML config a `lafa fit` run stored in its checkpoint, or None if the file has none."""
    import torch

    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True, mmap=True)
    if not isinstance(ckpt, dict):
        raise ValueError(f"{ckpt_path} is not a Lightning checkpoint (top level is {type(ckpt).__name__})")
    return ckpt.get(CHECKPOINT_CONFIG_KEY)


def _ckpt_path_arg(argv: list[str]) -> str | None:
    for i, arg in enumerate(argv):
        if arg == "--ckpt_path" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--ckpt_path="):
            return arg.split("=", 1)[1]
    return None


def with_checkpoint_config(argv: list[str]) -> list[str]:
    """For validate/test/predict with --ckpt_path, put the checkpoint's own config first (user args win)."""
    if not argv or argv[0] not in _CKPT_SUBCOMMANDS:
        return argv
    ckpt_path = _ckpt_path_arg(argv)
    if ckpt_path is None or ckpt_path in ("last", "best"):
        return argv
    if not Path(ckpt_path).is_file():
        raise SystemExit(f"lafa: checkpoint not found: {ckpt_path}")
    stored = read_checkpoint_config(ckpt_path)
    if stored is None:
        if "--config" not in argv and not any(a.startswith("--config=") for a in argv):
            raise SystemExit(
                f"lafa: {ckpt_path} carries no lafa config (not written by `lafa fit`?); pass --config too"
            )
        return argv
    fd, path = tempfile.mkstemp(prefix="lafa-ckpt-config-", suffix=".yaml")
    with os.fdopen(fd, "w") as f:
        f.write(stored)
    atexit.register(os.remove, path)  # the config is only read while the CLI parses its arguments
    return [argv[0], "--config", path, *argv[1:]]


def _lightning_cli(argv: list[str]) -> None:
    from lightning.pytorch import LightningDataModule, LightningModule
    from lightning.pytorch.cli import LightningCLI, SaveConfigCallback

    class ConfigInCheckpoint(SaveConfigCallback):
        """Writes config.yaml to the log dir (Lightning's behaviour) and the same YAML into every checkpoint."""

        def on_save_checkpoint(self, trainer, pl_module, checkpoint) -> None:  # noqa: ANN001
            checkpoint[CHECKPOINT_CONFIG_KEY] = self.parser.dump(self.config, skip_none=False)

    class LafaCLI(LightningCLI):
        def _parse_ckpt_path(self) -> None:
            # Lightning would re-apply the checkpoint's hyperparameters over the user's --model arguments;
            # a lafa checkpoint's whole config was already put first in argv, so user arguments must win.
            sub = self.config.get("subcommand")
            ckpt_path = self.config[sub].get("ckpt_path") if sub else None
            if ckpt_path and Path(ckpt_path).is_file() and read_checkpoint_config(ckpt_path) is not None:
                return
            super()._parse_ckpt_path()

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


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    if argv[0] in PROJECT_COMMANDS:
        module_name = PROJECT_COMMANDS[argv[0]][0]
        module = importlib.import_module(module_name)
        return int(module.main(argv[1:]) or 0)
    _lightning_cli(with_checkpoint_config(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
