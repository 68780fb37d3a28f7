"""How every `lafa` Lightning subcommand's trainer writes and reads checkpoints (`whole_checkpoints`, `resume_path`).

Written whole or not at all (staged beside the target, fsynced, renamed over it: `last.ckpt` is replaced, never
rewritten in place; a failed save, e.g. a full disk, leaves earlier checkpoints intact and stops the run with one
line); read only through `lafa.checkpoints.read_checkpoint`, `--ckpt_path last` included (docs/faults.md).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins import TorchCheckpointIO

from lafa.checkpoint_files import record_files
from lafa.checkpoints import read_checkpoint
from lafa.errors import LafaUserError


def write_whole(path: str | Path, write: Callable[[IO[bytes]], Any]) -> None:
    """`write(file)` into a temporary file beside `path`, fsynced, then renamed to `path`; on any failure the
    temporary file is removed and `path` is as it was (an OSError, e.g. a full disk, is a `LafaUserError`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        cause = e if isinstance(e, OSError) else e.__cause__ or e.__context__  # torch.save wraps the OSError
        if isinstance(cause, OSError):
            raise LafaUserError(
                f"could not write {path} ({cause.strerror or cause}; {shutil.disk_usage(path.parent).free / 1e6:.1f} "
                f"MB free there): the run stopped; no partial file was left and the checkpoints already in "
                f"{path.parent} are intact; free space (or set the ModelCheckpoint's dirpath elsewhere) and resume "
                f"with --ckpt_path last") from e
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)  # the rename itself survives a crash
    os.fsync(dir_fd)
    os.close(dir_fd)


class WholeCheckpointIO(TorchCheckpointIO):
    def save_checkpoint(self, checkpoint: dict, path: str | Path, storage_options: Any = None) -> None:
        record_files(checkpoint, path)  # the files its config names: absolute path + content hash (moves are followed)
        write_whole(path, lambda f: torch.save(checkpoint, f))

    def load_checkpoint(self, path: str | Path, map_location: Any = None, weights_only: bool | None = None) -> dict:
        return read_checkpoint(path, keep=False)  # Lightning's restore is the last reader: nothing is kept


def _link_whole(trainer, filepath: str, linkpath: str) -> None:  # noqa: ANN001
    """ModelCheckpoint(save_last="link"): a new link renamed over `linkpath` (a whole copy where links fail)."""
    if trainer.is_global_zero and os.path.abspath(filepath) != os.path.abspath(linkpath):
        tmp = f"{linkpath}.link-tmp"
        try:
            Path(tmp).unlink(missing_ok=True)
            os.symlink(os.path.relpath(filepath, os.path.dirname(linkpath)), tmp)
            os.replace(tmp, linkpath)
        except OSError:
            with open(filepath, "rb") as src:
                write_whole(linkpath, lambda f: shutil.copyfileobj(src, f))
    trainer.strategy.barrier()


def whole_checkpoints(trainer):  # noqa: ANN001, ANN201
    """`trainer`, writing (and reading) its checkpoints as this module says, unless it was given another IO."""
    if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:
        trainer.strategy.checkpoint_io = WholeCheckpointIO()
    for callback in trainer.checkpoint_callbacks:
        if isinstance(callback, ModelCheckpoint):
            callback._link_checkpoint = _link_whole
    return trainer


def resume_path(trainer, ckpt_path: str | None, subcommand: str) -> str | None:  # noqa: ANN001
    """The file a subcommand's `--ckpt_path` names (`last`: the newest last*.ckpt of the trainer's
    ModelCheckpoints), read through lafa's checks before Lightning restores it; says what a fit resumes from."""
    if ckpt_path == "last":
        found = set().union(*(c._find_last_checkpoints(trainer) for c in trainer.checkpoint_callbacks
                              if isinstance(c, ModelCheckpoint)))
        for path in sorted(p for p in found if not os.path.exists(p)):
            raise LafaUserError(f"--ckpt_path last: {path} is a link to {os.readlink(path)}, which does not exist; "
                                f"resume from another checkpoint with --ckpt_path PATH, or remove {path} to start "
                                f"from step 0")
        if not found:
            if trainer.is_global_zero:
                print(f"lafa {subcommand}: --ckpt_path last: no last checkpoint yet, starting from step 0")
            return None
        ckpt_path = max(found, key=os.path.getmtime)
    if ckpt_path is None or ckpt_path in ("best", "hpc") or str(ckpt_path).startswith("registry"):
        return ckpt_path
    ckpt = read_checkpoint(ckpt_path)
    if trainer.is_global_zero and subcommand == "fit":
        target = f" -> {os.path.realpath(ckpt_path)}" if os.path.islink(ckpt_path) else ""
        print(f"lafa fit: resuming from {ckpt_path}{target} (epoch {ckpt.get('epoch')}, "
              f"step {ckpt.get('global_step')})")
    return ckpt_path
