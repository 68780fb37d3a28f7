"""LatentLocalityCallback inside a real Trainer: logged numbers equal a direct computation; TensorBoard figures."""

import pytest
import torch
from analysis_doubles import FrameProjectionStage
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.loggers import TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch.utils.data import DataLoader, Dataset

from lafa.analysis.controls import locality_measures
from lafa.analysis.locality import lpi
from lafa.stages.callbacks import LatentLocalityCallback

SR, RATIO = 8000, 16


class AudioClips(Dataset):
    def __init__(self, n: int = 6, samples: int = 1600) -> None:
        g = torch.Generator().manual_seed(0)
        self.audio = torch.randn(n, 2, samples, generator=g).cumsum(-1) * 0.01
        self.lengths = [samples - 160 * i for i in range(n)]

    def __len__(self) -> int:
        return len(self.audio)

    def __getitem__(self, i: int) -> dict:
        mask = torch.arange(self.audio.shape[-1]) < self.lengths[i]
        return {"audio": self.audio[i] * mask, "keep": mask}


class TinyStage(LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.stage = FrameProjectionStage(latent_dim=8, ratio=RATIO, sample_rate=SR, seed=3)
        self.w = torch.nn.Parameter(torch.zeros(1))

    def as_autoencoder(self):
        return self.stage.as_autoencoder()

    def training_step(self, batch, batch_idx):
        return (self.w - 1).square().sum()

    def validation_step(self, batch, batch_idx):
        pass

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_callback_logs_alpha_lpi_and_figures(tmp_path):
    data = AudioClips()
    callback = LatentLocalityCallback(num_clips=5, window=16)
    trainer = Trainer(max_epochs=1, limit_train_batches=1, accelerator="cpu", enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=1, log_every_n_steps=1,
                      logger=TensorBoardLogger(tmp_path, name="tb"), callbacks=[callback])
    stage = TinyStage()
    trainer.fit(stage, DataLoader(data, batch_size=2), DataLoader(data, batch_size=2))
    metrics = trainer.callback_metrics
    ae = stage.as_autoencoder()
    latents = [ae.encode(data[i]["audio"][None, :, : data.lengths[i] // RATIO * RATIO])[0] for i in range(5)]
    assert float(metrics["analysis/latent_lpi"]) == pytest.approx(lpi(latents), rel=1e-6)
    assert {"analysis/latent_alpha", "analysis/mel_alpha", "analysis/mel_lpi"} <= set(metrics)
    # the controls: the same numbers as a direct call with the callback's settings (window 16, seed 0)
    direct = locality_measures(latents, window=16, permutations=20, bootstrap=100, seed=0)
    for name in ("lpi_excess", "alpha_excess", "lpi_permuted", "participation_ratio", "pc_temporal_slope"):
        assert float(metrics[f"analysis/latent_{name}"]) == pytest.approx(direct[name]["value"], rel=1e-5, abs=1e-6)
        # 5 clips are fewer than the 10 effective clips an interval needs: no bounds logged, none computed
        assert direct[name]["low"] is None and f"analysis/latent_{name}_low" not in metrics
    assert {"analysis/mel_lpi_excess", "analysis/mel_eigen_decay_slope"} <= set(metrics)
    run = EventAccumulator(str(next((tmp_path / "tb").glob("version_*"))), size_guidance={"images": 0}).Reload()
    assert {"analysis/psd", "analysis/correlation", "analysis/permutation", "analysis/eigen"} <= set(run.Tags()["images"])
    assert len(run.Images("analysis/psd")) == 1  # the sanity check logs nothing


class ConstantStage(TinyStage):
    """An autoencoder whose latent is all zeros (as some stages are at init)."""

    def as_autoencoder(self):
        ae = self.stage.as_autoencoder()
        ae.proj.zero_()
        return ae


def test_a_constant_latent_warns_and_training_goes_on(tmp_path):
    data = AudioClips()
    trainer = Trainer(max_epochs=1, limit_train_batches=1, accelerator="cpu", enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0, logger=False,
                      callbacks=[LatentLocalityCallback(num_clips=3, window=16, bootstrap=0)])
    with pytest.warns(UserWarning, match="nothing logged at step 1: every channel is constant"):
        trainer.fit(ConstantStage(), DataLoader(data, batch_size=2), DataLoader(data, batch_size=2))
    assert trainer.state.finished and "analysis/latent_lpi" not in trainer.callback_metrics
