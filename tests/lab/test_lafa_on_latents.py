"""LafaStage without a VAE (vae_ckpt null) trains on the lab's latent batches; its weights are LAFA's alone."""

import pytest
import torch
from lightning.pytorch import Trainer

from lafa.data.gaussian_latents import GaussianLatentDataModule
from lafa.stages.lafa import LafaStage

MODEL = dict(preset="tiny", lafa_channels=8, channel_group_size=4, encoder_dim=16, decoder_dim=16,
             encoder_heads=2, decoder_heads=2)


def test_needs_latent_channels():
    with pytest.raises(ValueError, match="latent_channels"):
        LafaStage(vae_ckpt=None, model=MODEL)


def test_trains_on_latent_batches_and_reloads(tmp_path):
    dm = GaussianLatentDataModule(channels=8, frames=16, basis="rotated", train_examples=16, val_examples=64,
                                  batch_size=4, val_batch_size=64, seed=3)
    stage = LafaStage(vae_ckpt=None, latent_channels=8, model=MODEL, eval_steps=[2], lr=1e-3, warmup_steps=1)
    trainer = Trainer(max_steps=3, logger=False, enable_progress_bar=False, enable_model_summary=False,
                      num_sanity_val_steps=0, default_root_dir=tmp_path, limit_val_batches=1,
                      val_check_interval=3, check_val_every_n_epoch=None)
    trainer.fit(stage, datamodule=dm)
    logged = {k: float(v) for k, v in trainer.callback_metrics.items()}
    assert "val/k2/latent_rel_mse" in logged and not any("/vae/" in k for k in logged)  # no audio metrics
    # rel = mse / the batch's mean channel variance; that variance tends to tr K_chan / C = 1 (the lab's scale)
    variance = logged["val/k2/latent_mse"] / logged["val/k2/latent_rel_mse"]
    assert variance == pytest.approx(1.0, abs=0.2)
    assert float(stage.lafa.normalizer.count) > 0  # validation measured Y's statistics
    loaded = LafaStage(vae_ckpt=None, latent_channels=8, model=MODEL).eval()
    loaded.load_state_dict(stage.state_dict(), strict=True)  # no VAE weights in it, none expected
    z = dm.spec.sample(2, torch.Generator().manual_seed(0)).float()
    torch.testing.assert_close(loaded.lafa.encode(z), stage.eval().lafa.encode(z))
