"""Checkpoints written whole or not at all, and resumes that go through lafa's checks however they are named:
a disk that fills up during a save, an existing last.ckpt replaced (never rewritten in place), a dangling or
empty `last.ckpt` given as `--ckpt_path last`, and the line that says what a resume resumed from.

The small disk is a 2 MB tmpfs mounted for the test where the test runs as root; elsewhere the save's write
fails with ENOSPC part-way (simulated, said in the test's id)."""

from __future__ import annotations

import errno
import os
import subprocess
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
import yaml
from test_checkpoint_faults import lafa, lightning_console_on_stderr

from lafa.cli import USER_ERROR_EXIT, main

AT_STEP: dict[int, object] = {}  # global step -> what the AtStep callback does when that step's batch starts


class AtStep(pl.Callback):
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        action = AtStep.actions.pop(trainer.global_step, None)
        if action:
            action()

    actions = AT_STEP


@pytest.fixture(autouse=True)
def trust(monkeypatch) -> None:
    monkeypatch.setenv("LAFA_TRUSTED_CLASSES", "tests.cli_fixtures,test_checkpoint_writes")
    AT_STEP.clear()


def fit_config(root: Path, ckpt_dir: Path, save_last: bool | str = True, max_steps: int = 8) -> Path:
    config = {
        "model": {"class_path": "tests.cli_fixtures.LineModel"},
        "data": {"class_path": "tests.cli_fixtures.LineData"},  # 4 batches an epoch
        "trainer": {"max_steps": max_steps, "accelerator": "cpu", "default_root_dir": str(root), "logger": False,
                    "enable_progress_bar": False, "enable_model_summary": False,
                    "callbacks": [{"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                                   "init_args": {"dirpath": str(ckpt_dir), "save_last": save_last,
                                                 "every_n_train_steps": 2}},
                                  {"class_path": "test_checkpoint_writes.AtStep"}]},
    }
    path = root / f"fit-{max_steps}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def step(path: Path) -> int:
    return torch.load(path, weights_only=True)["global_step"]


@pytest.fixture
def tmpfs(tmp_path):
    """A folder on a 2 MB tmpfs of its own: a small disk, and another filesystem than the temporary folder's."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mount = ["mount", "-t", "tmpfs", "-o", "size=2M", "tmpfs", str(disk)]
    if os.geteuid() != 0 or subprocess.run(mount, capture_output=True).returncode:
        pytest.skip("mounting a tmpfs needs root (the simulated variant runs instead)")
    yield disk
    subprocess.run(["umount", str(disk)], check=True)


@pytest.fixture(params=["tmpfs", "simulated"])
def small_disk(request, tmp_path, monkeypatch):
    """(a folder on a small filesystem, fill(): the next checkpoint save finds it full)."""
    if request.param == "tmpfs":
        disk = request.getfixturevalue("tmpfs")

        def fill() -> None:
            try:
                with open(disk / "filler", "wb") as f:
                    while True:
                        f.write(b"\0" * 65536)
            except OSError as e:
                assert e.errno == errno.ENOSPC
        return disk, fill
    from lafa.checkpoint_io import WholeCheckpointIO, write_whole

    def full(self, checkpoint, path, storage_options=None) -> None:
        def write(f) -> None:
            f.write(b"PK\x03\x04" + b"\0" * 4096)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        write_whole(path, write)

    return tmp_path, lambda: monkeypatch.setattr(WholeCheckpointIO, "save_checkpoint", full)


@pytest.mark.parametrize("save_last", [True, "link"])
def test_disk_full_during_a_save_stops_with_one_line_and_keeps_the_last_checkpoint(tmp_path, small_disk, save_last,
                                                                                   capsys) -> None:
    disk, fill = small_disk
    ckpt = disk / "ckpt"
    AT_STEP[3] = fill  # after the step-2 checkpoint: the step-4 save finds the disk full
    code, line = lafa(["fit", "--config", str(fit_config(tmp_path, ckpt, save_last))], capsys)
    assert code == USER_ERROR_EXIT
    assert line.startswith(f"lafa fit: error: could not write {ckpt / 'epoch=0-step=4.ckpt'} (No space left on device")
    assert f"the run stopped; no partial file was left and the checkpoints already in {ckpt} are intact" in line
    assert sorted(os.listdir(ckpt)) == ["epoch=0-step=2.ckpt", "last.ckpt"]  # no temporary file, no partial one
    assert step(ckpt / "epoch=0-step=2.ckpt") == step(ckpt / "last.ckpt") == 2
    assert (ckpt / "last.ckpt").is_symlink() == (save_last == "link")


def test_last_ckpt_is_replaced_never_rewritten_in_place(tmp_path, tmpfs, capsys) -> None:
    """A reader holding the previous last.ckpt (here a hard link to it) still reads it whole after the next save:
    lafa renames a new file over it (Lightning copied into it in place where its temporary folder was on another
    filesystem). `save_last: link` renames a new link over the old one."""
    ckpt = tmpfs / "ckpt"
    held = tmpfs / "held.ckpt"
    AT_STEP[3] = lambda: os.link(ckpt / "last.ckpt", held)
    code, _ = lafa(["fit", "--config", str(fit_config(tmp_path, ckpt, True, max_steps=4))], capsys)
    assert code == 0
    assert step(ckpt / "last.ckpt") == 4 and step(held) == 2
    assert not [p for p in os.listdir(ckpt) if p.endswith("tmp")]


def fit_last(tmp_path: Path, max_steps: int, capsys) -> tuple[int, str, str]:
    """`lafa fit --ckpt_path last` in this process: (exit code, stdout, the one `lafa` line on stderr or "")."""
    capsys.readouterr()
    with lightning_console_on_stderr():
        code = main(["fit", "--config", str(fit_config(tmp_path, tmp_path / "ckpt", "link", max_steps)),
                     "--ckpt_path", "last"])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.startswith("lafa ")]
    assert len(lines) <= 1, err
    return code, out, lines[0] if lines else ""


def test_a_resume_says_which_checkpoint_it_resumed_from(tmp_path, capsys) -> None:
    ckpt = tmp_path / "ckpt"
    code, out, _ = fit_last(tmp_path, 6, capsys)  # nothing to resume yet: said, and trained from step 0
    assert code == 0 and "lafa fit: --ckpt_path last: no last checkpoint yet, starting from step 0" in out
    code, out, _ = fit_last(tmp_path, 8, capsys)
    assert code == 0
    assert f"lafa fit: resuming from {ckpt / 'last.ckpt'} -> {ckpt / 'epoch=1-step=6.ckpt'} (epoch 1, step 6)" in out
    assert step(ckpt / "last.ckpt") == 8


@pytest.mark.parametrize("damage", ["dangling link", "empty file"])
def test_a_damaged_last_ckpt_is_refused_not_restarted_over(tmp_path, damage, capsys) -> None:
    """Lightning skipped a dangling last.ckpt (training from step 0 and overwriting it, exit 0) and raised a bare
    EOFError on an empty one; `--ckpt_path last` now gets the checks an explicit path gets."""
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    last = ckpt / "last.ckpt"
    if damage == "dangling link":
        os.symlink("epoch=3-step=14.ckpt", last)
        says = (f"lafa fit: error: --ckpt_path last: {last} is a link to epoch=3-step=14.ckpt, which does not exist; "
                f"resume from another checkpoint with --ckpt_path PATH, or remove {last} to start from step 0")
    else:
        last.write_bytes(b"")
        says = (f"lafa fit: error: {last} is empty (0 bytes): the copy or the save was interrupted; copy it again or "
                f"use another checkpoint")
    code, _, line = fit_last(tmp_path, 6, capsys)
    assert (code, line) == (USER_ERROR_EXIT, says)
    assert os.listdir(ckpt) == ["last.ckpt"]  # nothing trained, nothing written
    assert os.readlink(last) == "epoch=3-step=14.ckpt" if damage == "dangling link" else last.stat().st_size == 0
