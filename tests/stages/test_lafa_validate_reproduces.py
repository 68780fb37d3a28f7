"""`lafa validate` on a checkpoint reproduces the validation figures its training logged (issue 22): fit a tiny
LAFA with `lafa fit` (one thread), read the figures its last validation logged, run `lafa validate --ckpt_path`
on the checkpoint saved after that validation (two threads) and compare."""

from __future__ import annotations

import csv
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from lafa_fixtures import TINY_VAE, write_tiny_vae

REPO = Path(__file__).resolve().parents[2]
TINY_MODEL = dict(lafa_channels=8, channel_group_size=4, encoder_dim=32, encoder_depth=2, encoder_heads=4,
                  decoder_dim=32, decoder_depth=2, decoder_heads=4)
FIGURES = ("val/k2/latent_rel_mse", "val/k1/latent_rel_mse", "val/k2/posterior_rel_mse", "val/loss",
           "val/k2/mel_distance")


def _printed(stdout: str) -> dict[str, float]:
    """The metrics table Lightning prints after `validate`: '│ name │ value │' rows."""
    return {m.group(1): float(m.group(2)) for m in re.finditer(r"│\s*(val/\S+)\s*│\s*([-+0-9.eE]+)\s*│", stdout)}


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])
def test_validate_reproduces_the_logged_validation(tmp_path: Path, precision: str) -> None:
    vae = write_tiny_vae(tmp_path / "vae.safetensors")
    config = {
        "seed_everything": 0,
        "model": {"class_path": "lafa.stages.lafa.LafaStage",
                  "init_args": {"vae_ckpt": str(vae), "vae_args": TINY_VAE, "model": TINY_MODEL, "lr": 2e-3,
                                "warmup_steps": 1, "norm_batches": 1, "eval_steps": [1, 2], "posterior_samples": 3,
                                "num_audio_examples": 0}},
        "data": {"class_path": "lafa_fixtures.ToneData", "init_args": {"n": 8}},
        "trainer": {"max_steps": 6, "val_check_interval": 2, "accelerator": "cpu", "precision": precision,
                    "enable_progress_bar": False, "num_sanity_val_steps": 0,
                    "logger": {"class_path": "lightning.pytorch.loggers.CSVLogger",
                               "init_args": {"save_dir": str(tmp_path / "logs"), "name": "", "version": "fit"}},
                    "callbacks": [
                        {"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",  # after each validation
                         "init_args": {"dirpath": str(tmp_path / "ckpt"), "save_last": True,
                                       "monitor": "val/k2/mel_distance", "save_top_k": 1}},
                        {"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",  # at train batch end too
                         "init_args": {"dirpath": str(tmp_path / "ckpt"), "save_last": True, "save_top_k": 0,
                                       "every_n_train_steps": 1, "enable_version_counter": False}}]},
    }
    (tmp_path / "fit.yaml").write_text(yaml.safe_dump(config))
    env = {"PYTHONPATH": f"{REPO}:{REPO / 'tests' / 'stages'}", "PATH": "/usr/bin:/bin",
           "LAFA_TRUSTED_CLASSES": "lafa_fixtures"}

    def lafa(threads: int, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "lafa", *args], cwd=tmp_path, capture_output=True, text=True,
                              env={**env, "OMP_NUM_THREADS": str(threads)})

    fit = lafa(1, "fit", "--config", str(tmp_path / "fit.yaml"))
    assert fit.returncode == 0, fit.stderr[-3000:]
    rows = [r for r in csv.DictReader((tmp_path / "logs" / "fit" / "metrics.csv").open()) if r.get(FIGURES[0])]
    logged = {k: float(rows[-1][k]) for k in FIGURES}
    assert len(rows) == 3 and rows[-1]["step"] == "5"  # validations at steps 2, 4 and 6 (logged as step - 1)
    validate = lafa(2, "validate", "--ckpt_path", str(tmp_path / "ckpt" / "last.ckpt"), "--trainer.logger", "false")
    assert validate.returncode == 0, validate.stderr[-3000:]
    printed = _printed(validate.stdout)
    for name in FIGURES:
        assert printed[name] == pytest.approx(logged[name], rel=1e-5, abs=1e-7), (name, printed[name], logged[name])
