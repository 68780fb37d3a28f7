"""LatentLocalityCallback on a LAFA stage: the group-aware baselines use the LAFA encoder's own output group (as
`lafa analyze` does), and with at least 10 clips the interval bounds are logged."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from lafa_fixtures import TINY_VAE, ToneData, write_tiny_vae

from lafa.analysis.controls import locality_measures
from lafa.analysis.latent_report import output_group_size
from lafa.stages.callbacks import LatentLocalityCallback
from lafa.stages.lafa import LafaStage

TINY_MODEL = dict(lafa_channels=8, channel_group_size=4, encoder_dim=32, encoder_depth=1, encoder_heads=4,
                  decoder_dim=32, decoder_depth=1, decoder_heads=4)


def test_group_baselines_use_the_lafa_output_group(tmp_path: Path) -> None:
    vae = write_tiny_vae(tmp_path / "vae.safetensors")
    torch.manual_seed(0)
    stage = LafaStage(str(vae), vae_args=TINY_VAE, model=TINY_MODEL, eval_steps=[2], norm_batches=1,
                      num_audio_examples=0, posterior_samples=0)
    callback = LatentLocalityCallback(num_clips=12, window=12, permutations=6, bootstrap=20, log_figures=False,
                                      n_mels=8)
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=[callback])
    data = ToneData(n=12)
    trainer.validate(stage, datamodule=data)
    metrics = trainer.callback_metrics
    autoencoder = stage.as_autoencoder()
    # 16 input channels in groups of 4: 4 groups, so the 8 output channels come in 4 groups of 2
    assert output_group_size(autoencoder) == autoencoder.lafa.encoder.out_channels // autoencoder.lafa.encoder.groups
    group = output_group_size(autoencoder)
    assert group == 2
    clips = [b for batch in data.val_dataloader() for b in zip(batch["audio"], batch["keep"], strict=True)]
    with torch.no_grad():
        latents = [autoencoder.encode(a[None, :, : int(k.sum()) // 8 * 8])[0] for a, k in clips]
    direct = locality_measures(latents, window=12, permutations=6, bootstrap=20, seed=0, group_size=group)
    for name in ("lpi_group_order", "lpi_group_order_excess", "lpi_within_group_excess", "lpi_excess"):
        assert float(metrics[f"analysis/latent_{name}"]) == pytest.approx(direct[name]["value"], rel=1e-5, abs=1e-6)
    # 12 clips of 16 or 12 frames: LPI rests on >= 10 effective clips, so its bounds are logged
    assert direct["lpi"]["low"] is not None
    assert float(metrics["analysis/latent_lpi_low"]) == pytest.approx(direct["lpi"]["low"], rel=1e-5)
    other = locality_measures(latents, window=12, permutations=6, bootstrap=0, seed=0, group_size=4)
    assert other["lpi_group_order"]["value"] != pytest.approx(direct["lpi_group_order"]["value"], rel=1e-6)
