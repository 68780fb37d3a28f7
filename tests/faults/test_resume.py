"""Exact resume: a `lafa fit` on the shipped tiny VAE config, SIGKILLed mid-epoch and resumed from the
last.ckpt its shipped periodic ModelCheckpoint wrote, ends with the same weights and optimizer state as an
uninterrupted run, bitwise (CPU). The kill is a real SIGKILL of the training process."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pytest
import soundfile as sf
import torch
import yaml

from data_prep.process import ChunkSettings
from data_prep.shards import BuildSettings, build
from data_prep.sources import read_folder

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = sorted((ROOT / "configs").glob("*.yaml")) + sorted((ROOT / "configs" / "tiny").glob("*.yaml"))


class KillAtBatch(pl.Callback):
    """SIGKILLs its own process when training batch `at` (counted over the whole run) starts."""

    def __init__(self, at: int) -> None:
        self.at = at

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.fit_loop.epoch_loop.total_batch_idx == self.at:
            os.kill(os.getpid(), signal.SIGKILL)


def _corpus(root: Path) -> None:
    """7 train clips in 3 shards (uneven), 2 val: data/demo/shards as the tiny configs name it."""
    src = root / "src"
    src.mkdir()
    rng = np.random.default_rng(0)
    for i in range(9):
        x = (0.2 * rng.standard_normal((20000, 2))).astype(np.float32)
        sf.write(src / f"n{i}.wav", x, 44100, subtype="PCM_16")
        (src / f"n{i}.json").write_text(json.dumps({"genre": "noise", "split": "train" if i < 7 else "val"}))
    build(read_folder(src), BuildSettings(out=root / "data/demo/shards", shard_bytes=60_000, jobs=1,
                                          chunk=ChunkSettings()), [], {})


def _fit(cwd: Path, *extra: str, expect_kill: bool = False) -> None:
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{Path(__file__).parent}",
           "LAFA_TRUSTED_CLASSES": "test_resume"}  # the kill callback the test adds is a class a stored config names
    cmd = [sys.executable, "-m", "lafa", "fit", "--config", str(ROOT / "configs/vae.yaml"),
           "--config", str(ROOT / "configs/tiny/vae.yaml"), "--trainer.max_steps", "8",
           "--trainer.enable_progress_bar", "false",
           "--data.init_args.num_workers", "2", "--data.init_args.shuffle_buffer", "4",
           "--data.init_args.sample_size", "8192", *extra]
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    if expect_kill:
        assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    else:
        assert proc.returncode == 0, proc.stderr[-3000:]


def _tensors(obj, prefix=""):
    """Every tensor in a checkpoint's state_dict and optimizer states, by path."""
    if isinstance(obj, torch.Tensor):
        yield prefix, obj
    elif isinstance(obj, dict):
        for k in sorted(obj, key=str):
            yield from _tensors(obj[k], f"{prefix}/{k}")
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from _tensors(v, f"{prefix}/{i}")


@pytest.mark.slow
def test_killed_and_resumed_fit_ends_with_the_uninterrupted_weights(tmp_path):
    for name in ("straight", "killed"):
        (tmp_path / name).mkdir()
        _corpus(tmp_path / name)
    ckpt = Path("runs/demo/vae/checkpoints/last.ckpt")
    _fit(tmp_path / "straight")
    # 7 samples, batch 2, 2 workers (3 + 4 samples): 3 batches per epoch; the kill at batch 5 is in epoch 2, after the
    # step-4 checkpoint, so the resumed run replays batches 5-7 from the middle of an epoch
    _fit(tmp_path / "killed", "--trainer.callbacks+=test_resume.KillAtBatch", "--trainer.callbacks.at=5",
         expect_kill=True)
    saved = torch.load(tmp_path / "killed" / ckpt, map_location="cpu", weights_only=False)
    assert saved["global_step"] == 4
    position = saved["loops"]["fit_loop"]["state_dict"]["combined_loader"][0]["ranks"][0]
    assert (position["epoch"], position["consumed"]) == (2, 1)  # 3 batches an epoch: mid-epoch 2
    _fit(tmp_path / "killed", "--ckpt_path", str(ckpt))
    a = torch.load(tmp_path / "straight" / ckpt, map_location="cpu", weights_only=False)
    b = torch.load(tmp_path / "killed" / ckpt, map_location="cpu", weights_only=False)
    assert a["global_step"] == b["global_step"] == 8
    ta = dict(_tensors({"model": a["state_dict"], "optim": a["optimizer_states"]}))
    tb = dict(_tensors({"model": b["state_dict"], "optim": b["optimizer_states"]}))
    assert ta.keys() == tb.keys() and len(ta) > 50
    differ = [k for k in ta if not torch.equal(ta[k], tb[k])]
    assert not differ, f"{len(differ)} of {len(ta)} tensors differ, e.g. {differ[:5]}"
    assert not list((tmp_path / "killed" / ckpt.parent).glob("last-v*.ckpt"))  # one last.ckpt, the newest


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(ROOT)))
def test_shipped_configs_write_last_ckpt_every_n_steps_whatever_the_monitor(path):
    callbacks = ((yaml.safe_load(path.read_text()) or {}).get("trainer") or {}).get("callbacks")
    if callbacks is None:
        pytest.skip("an overlay that keeps the base config's callbacks")
    periodic = [c["init_args"] for c in callbacks if c["class_path"].endswith("ModelCheckpoint")
                and c["init_args"].get("every_n_train_steps") and not c["init_args"].get("monitor")
                and c["init_args"].get("save_last")]
    assert periodic, f"{path}: no ModelCheckpoint saving last.ckpt every N train steps without a monitor"
