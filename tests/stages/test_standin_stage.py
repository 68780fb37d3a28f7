"""LatentTransformStage: the whitening it measures is the ZCA of the data, and a stage built inside another
stage (a rotation of a stand-in, as `lafa study` builds it) keeps its own hyperparameters."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
import yaml
from lafa_fixtures import ToneData
from lightning.pytorch.core.mixins.hparams_mixin import _given_hyperparameters_context

from lafa.checkpoints import CHECKPOINT_CONFIG_KEY
from lafa.models.autoencoder import LinearLatentAutoencoder
from lafa.stages.loading import load_autoencoder, load_stage
from lafa.stages.standin import LatentTransformStage

MEL = dict(n_fft=256, hop_length=128, n_mels=8, griffin_lim_iters=2)


def _fit(stage: LatentTransformStage, tmp_path: Path) -> None:
    L.Trainer(accelerator="cpu", max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
              enable_model_summary=False, default_root_dir=str(tmp_path), num_sanity_val_steps=0,
              limit_val_batches=1).fit(stage, datamodule=ToneData(n=8, samples=128 * 24))


def test_whitening_is_the_zca_of_the_training_frames_and_rotation_keeps_it_white(tmp_path: Path) -> None:
    torch.manual_seed(0)
    stage = LatentTransformStage(mel_args=MEL, whiten_eps=0.0, rotation_seed=3)
    _fit(stage, tmp_path)
    frames = torch.cat([stage._base_frames(b) for b in ToneData(n=8, samples=128 * 24).train_dataloader()])
    mean = frames.mean(0)
    cov = (frames - mean).T @ (frames - mean) / len(frames)
    evals, evecs = torch.linalg.eigh(cov)
    zca = evecs @ torch.diag(evals.rsqrt()) @ evecs.T  # independent: the closed form on the same frames
    assert torch.allclose(stage.matrix, stage.rotation @ zca, atol=1e-6 * zca.abs().max())
    mapped = (frames - mean) @ stage.matrix.T
    assert torch.allclose(mapped.T @ mapped / len(frames), torch.eye(8, dtype=torch.float64), atol=1e-6)
    assert isinstance(stage.as_autoencoder(), LinearLatentAutoencoder)


def test_a_stage_loaded_inside_a_cli_built_stage_keeps_its_own_hyperparameters(tmp_path: Path) -> None:
    """LightningCLI passes the stage it builds its hyperparameters through a context; the stand-in loaded as the
    base of a rotation stage (inside that context) must still get its own (the bug: it got the outer ones)."""
    torch.manual_seed(0)
    standin = LatentTransformStage(mel_args=MEL, rotation_seed=0)
    _fit(standin, tmp_path)
    config = {"model": {"class_path": "lafa.stages.standin.LatentTransformStage",
                        "init_args": {"mel_args": MEL, "rotation_seed": 0}}}
    ckpt = tmp_path / "standin.ckpt"
    torch.save({"state_dict": standin.state_dict(), CHECKPOINT_CONFIG_KEY: yaml.safe_dump(config)}, ckpt)
    outer = {"base": str(ckpt), "whiten": False, "rotation_seed": 1}
    with _given_hyperparameters_context(hparams=outer, instantiator="lightning.pytorch.cli.instantiate_module"):
        inner = load_stage(ckpt)  # what LatentTransformStage(**outer) does to build its base
        rotation = LatentTransformStage(**outer)
    assert (inner.hparams.base, inner.hparams.rotation_seed, inner.hparams.whiten) == ("log_mel", 0, True)
    assert rotation.hparams.rotation_seed == 1
    base = rotation.frozen.module
    assert isinstance(base, LinearLatentAutoencoder)
    assert torch.allclose(base.matrix, standin.matrix, rtol=1e-6)  # the stand-in's own whitening
    assert load_autoencoder(ckpt).latent_dim == 8
