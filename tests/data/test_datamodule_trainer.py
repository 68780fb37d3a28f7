"""The AudioDataModule inside a Lightning Trainer: fit and validate consume the documented batches."""

import json

import lightning.pytorch as pl
import numpy as np
import soundfile as sf
import torch

from data_prep.items import folder_item_id
from data_prep.process import ChunkSettings
from data_prep.shards import BuildSettings, build
from data_prep.sources import read_folder
from lafa.data import AudioDataModule


class Recorder(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(()))
        self.train_ids, self.val_ids, self.shapes = [], [], set()

    def training_step(self, batch, batch_idx):
        self.train_ids += batch["id"]
        self.shapes.add((tuple(batch["audio"].shape), tuple(batch["keep"].shape)))
        masked = (batch["audio"] * batch["keep"][:, None]).pow(2).mean()
        return (self.w - masked) ** 2

    def validation_step(self, batch, batch_idx):
        self.val_ids += batch["id"]

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_trainer_fit_two_epochs_with_workers(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(10):  # 8 train clips in 2 shards of 4: each of 2 workers makes 2 full batches of 2
        sf.write(src / f"x{i}.wav", np.full((3000, 2), 0.05 + 0.01 * i, np.float32), 44100, subtype="PCM_16")
        (src / f"x{i}.json").write_text(json.dumps({"genre": "g", "split": "train" if i < 8 else "val"}))
    build(read_folder(src), BuildSettings(out=tmp_path / "shards", shard_bytes=25_000, jobs=1,
                                          chunk=ChunkSettings(min_clip_seconds=0.0)), [], {})  # 68 ms clips
    assert len(list((tmp_path / "shards").glob("train-*.tar"))) == 2
    dm = AudioDataModule(train_shards=str(tmp_path / "shards" / "train-*.tar"),
                         val_shards=str(tmp_path / "shards" / "val-*.tar"), sample_size=4096, batch_size=2,
                         num_workers=2)
    model = Recorder()
    trainer = pl.Trainer(max_epochs=2, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
    trainer.fit(model, datamodule=dm)
    assert model.shapes == {((2, 2, 4096), (2, 4096))}
    key = [f"folder_{folder_item_id(f'x{i}.wav')}_000" for i in range(10)]
    assert sorted(model.train_ids) == sorted(2 * key[:8])  # each epoch sees all
    assert model.train_ids[:8] != model.train_ids[8:]  # reshuffled for the second epoch
    assert sorted(model.val_ids) == sorted(2 * key[8:])
