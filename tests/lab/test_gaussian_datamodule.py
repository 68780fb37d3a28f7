"""GaussianLatentDataModule: latent-shard batch format, seeded reproducibility, disjoint splits, YAML args."""

import math

import pytest
import torch
import yaml
from jsonargparse import ArgumentParser
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint

from lafa.data.gaussian_latents import GaussianLatentDataModule

ARGS = dict(channels=8, frames=16, train_examples=12, val_examples=6, test_examples=5, batch_size=4, seed=3)


def batches(loader) -> list[dict]:
    return list(loader)


def test_batches_have_the_latent_shard_format():
    dm = GaussianLatentDataModule(**ARGS, sample_rate=44100, downsampling_ratio=2048)
    batch = next(iter(dm.train_dataloader()))
    assert set(batch) == {"latent", "keep", "real_samples", "seconds_start", "seconds_total", "caption",
                          "id", "metadata"}
    assert batch["latent"].shape == (4, 8, 16) and batch["latent"].dtype == torch.float32
    assert batch["keep"].shape == (4, 16) and batch["keep"].dtype == torch.bool
    assert batch["keep"].all()
    assert batch["real_samples"].dtype == torch.int64 and batch["real_samples"].tolist() == [16 * 2048] * 4
    assert batch["seconds_total"].dtype == torch.float32
    assert batch["seconds_total"].tolist() == [math.ceil(16 * 2048 / 44100)] * 4
    assert batch["seconds_start"].tolist() == [0.0] * 4
    assert batch["caption"] == ["a gaussian latent"] * 4 and batch["id"][0] == "train-000000000"
    assert [len(b["id"]) for b in batches(dm.val_dataloader())] == [4, 2]
    assert sum(len(b["id"]) for b in batches(dm.test_dataloader())) == 5


def test_examples_do_not_depend_on_batch_size_or_workers():
    one = torch.cat([b["latent"] for b in batches(GaussianLatentDataModule(**ARGS).val_dataloader())])
    args = {**ARGS, "val_batch_size": 5, "num_workers": 2}
    other = torch.cat([b["latent"] for b in batches(GaussianLatentDataModule(**args).val_dataloader())])
    assert torch.equal(one, other)
    assert torch.equal(one[2], GaussianLatentDataModule(**ARGS).dataset("val")[2]["latent"])


def test_training_draws_fresh_examples_each_epoch_and_splits_are_disjoint():
    dm = GaussianLatentDataModule(**ARGS)
    loader = dm.train_dataloader()
    epoch0 = torch.cat([b["latent"] for b in batches(loader)])
    loader.sampler.set_epoch(1)
    epoch1 = torch.cat([b["latent"] for b in batches(loader)])
    loader.sampler.set_epoch(0)
    assert torch.equal(torch.cat([b["latent"] for b in batches(loader)]), epoch0)  # reproducible
    val = torch.cat([b["latent"] for b in batches(dm.val_dataloader())])
    test = torch.cat([b["latent"] for b in batches(dm.test_dataloader())])
    pool = torch.cat([epoch0, epoch1, val, test]).flatten(1)
    assert len(torch.unique(pool, dim=0)) == len(pool)  # no example twice across epochs and splits
    reseeded = GaussianLatentDataModule(**{**ARGS, "seed": 4}).dataset("val")[0]["latent"]
    assert not torch.equal(reseeded, val[0])


def test_constructor_arguments_come_from_yaml():
    parser = ArgumentParser()
    parser.add_class_arguments(GaussianLatentDataModule, "data")
    cfg = parser.parse_object(yaml.safe_load(
        "data: {channels: 16, frames: 8, spectrum: vae_like, noise_channels: 2, basis: rotated, temporal: power_law,"
        " temporal_exponent: 0.5, batch_size: 2}"))
    dm = parser.instantiate_classes(cfg).data
    assert dm.spec.spectrum == "vae_like" and dm.spec.basis == "rotated" and dm.spec.channels == 16
    assert next(iter(dm.train_dataloader()))["latent"].shape == (2, 16, 8)
    with pytest.raises(ValueError):
        GaussianLatentDataModule(spectrum="pink")


class Recorder(LightningModule):
    """Trains one parameter and records the ids of every training batch it takes."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.seen: list[str] = []

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        self.seen += batch["id"]
        return (self.w - batch["latent"].mean()).square()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def fit(tmp_path, max_steps: int, ckpt_path=None) -> list[str]:
    module = Recorder()
    checkpoint = ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=3, save_top_k=-1)
    Trainer(max_steps=max_steps, logger=False, callbacks=[checkpoint], enable_progress_bar=False,
            enable_model_summary=False, limit_val_batches=0, default_root_dir=tmp_path).fit(
        module, datamodule=GaussianLatentDataModule(**{**ARGS, "train_examples": 16}), ckpt_path=ckpt_path)
    return module.seen


def test_a_resumed_run_continues_the_training_stream_mid_epoch(tmp_path):
    whole = fit(tmp_path / "whole", 7)  # 4 batches per epoch: resume at step 3, mid-epoch 0
    first = fit(tmp_path / "parts", 3)
    rest = fit(tmp_path / "parts", 7, ckpt_path=str(tmp_path / "parts" / "epoch=0-step=3.ckpt"))
    assert first + rest == whole
    assert whole[12] == "train-000000012" and whole[16] == "train-000000016"  # epoch 1 draws new examples


def test_training_under_ddp_is_refused():
    dm = GaussianLatentDataModule(**ARGS)
    dm.trainer = type("TwoRanks", (), {"world_size": 2})()
    with pytest.raises(NotImplementedError, match="one process"):
        dm.train_dataloader()
