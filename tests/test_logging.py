"""Weights & Biases as the alternative logger (issue 24): configs/loggers/wandb.yaml on a stage config runs
offline and its run folder holds what TensorBoard gets: metrics, audio clips and figures (lafa.stages.media)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]


def test_media_helpers_skip_loggers_without_media() -> None:
    import torch
    from lightning.pytorch.loggers import CSVLogger

    from lafa.stages.media import log_audio, log_image, media_loggers

    csv = CSVLogger("unused")
    assert media_loggers([csv]) == [] and media_loggers(None) == []
    log_audio([csv], "x", torch.zeros(2, 100), 0, 44100)  # nothing to do, nothing raised
    log_image([csv], "x", torch.zeros(4, 4), 0)


@pytest.mark.slow
def test_wandb_overlay_logs_metrics_audio_and_figures_offline(tmp_path: Path) -> None:
    pytest.importorskip("wandb")
    override = {
        "trainer": {"max_steps": 2, "val_check_interval": 2, "enable_progress_bar": False,
                    "logger": {"init_args": {"save_dir": str(tmp_path / "logs")}},
                    "callbacks": [{"class_path": "lafa.stages.callbacks.LatentLocalityCallback",
                                   "init_args": {"num_clips": 4, "window": 8, "permutations": 2}},
                                  {"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                                   "init_args": {"dirpath": str(tmp_path / "ckpt"), "save_last": True}}]},
        "data": {"class_path": "vae_fixtures.SineData",
                 "init_args": {"sample_size": 32768, "batch_size": 2, "n_train": 2, "n_eval": 4}},
    }
    (tmp_path / "override.yaml").write_text(yaml.safe_dump(override))
    env = {"PYTHONPATH": f"{REPO}:{REPO / 'tests' / 'stages'}", "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
           "HOME": str(tmp_path), "LAFA_TRUSTED_CLASSES": "vae_fixtures", "WANDB_MODE": "offline",
           "WANDB_SILENT": "true", "WANDB_DISABLE_GIT": "true"}
    configs = ["configs/vae.yaml", "configs/tiny/vae.yaml", "configs/loggers/wandb.yaml", str(tmp_path / "override.yaml")]
    fit = subprocess.run([sys.executable, "-m", "lafa", "fit", *[a for c in configs for a in ("-c", c)]],
                         cwd=REPO, env=env, capture_output=True, text=True)
    assert fit.returncode == 0, fit.stderr[-3000:]
    runs = list((tmp_path / "logs" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, list((tmp_path / "logs").rglob("*"))
    media = runs[0] / "files" / "media"
    audio = sorted(str(p.relative_to(media / "audio")) for p in (media / "audio").rglob("*.wav"))
    images = sorted(str(p.relative_to(media / "images")) for p in (media / "images").rglob("*.png"))
    assert any(name.startswith("val/example_0/real") for name in audio), audio
    assert any(name.startswith("val/example_0/reconstruction") for name in audio), audio
    assert any(name.startswith("val/example_0/spectrogram") for name in images), images
    assert any(name.startswith("analysis/psd") for name in images), (images, fit.stderr[-2000:])  # the callback
    assert (runs[0] / f"run-{runs[0].name.rsplit('-', 1)[1]}.wandb").is_file()  # metrics: the run's log
    assert not (tmp_path / "logs" / "events.out.tfevents").exists()
