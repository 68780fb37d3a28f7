"""A real 2-process DDP fit on CPU (gloo) over shards of uneven sample counts: both ranks take the same
number of steps (per-step sync_dist logging would hang otherwise; bounded by timeouts), see disjoint data
that together cover the split, and draw different noise, t, CFG drops and masks (RankSeedCallback)."""

import io
import json
import os
import socket
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pytest
import soundfile as sf
import torch

from lafa.data import AudioDataModule
from lafa.data.tario import add_member, atomic_tar
from lafa.diffusion.cfg import drop_mask
from lafa.diffusion.objectives import sample_t
from lafa.models.masking import ChannelSpanMasker
from lafa.stages.seeding import RankSeedCallback

ROOT = Path(__file__).resolve().parents[2]
SHARD_SIZES = [7, 3, 2]  # 12 samples; a shard-per-rank split would give the ranks 9 and 3


class Recorder(pl.LightningModule):
    """Records what each rank sees and draws, through the draws the stages make from the global RNG."""

    def __init__(self, out: str) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(()))
        self.out, self.seen = out, {"ids": [], "noise": [], "t": [], "drop": [], "mask": []}
        self.masker = ChannelSpanMasker(channels=8, ratio=0.5)

    def training_step(self, batch, batch_idx):
        b = len(batch["id"])
        self.seen["ids"] += batch["id"]
        self.seen["noise"].append(torch.randn(b, 3).tolist())
        self.seen["t"].append(sample_t(b, "logit_normal", self.device).tolist())
        self.seen["drop"].append(drop_mask(b, 0.5, self.device).tolist())
        self.seen["mask"].append(self.masker(b).tolist())
        loss = (self.w - batch["audio"].mean()) ** 2
        self.log("train/loss", loss, sync_dist=True, on_step=True)  # an all-reduce every step
        return loss

    def on_train_end(self) -> None:
        Path(self.out, f"rank{self.global_rank}.json").write_text(json.dumps(self.seen))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _shards(folder: Path) -> list[str]:
    folder.mkdir()
    n = 0
    for s, size in enumerate(SHARD_SIZES):
        with atomic_tar(folder / f"train-{s:06d}.tar") as tar:
            for _ in range(size):
                buf = io.BytesIO()
                sf.write(buf, np.full((3000, 2), 0.01 * (n + 1), np.float32), 44100, format="FLAC")
                add_member(tar, f"k{n:03d}.flac", buf.getvalue())
                add_member(tar, f"k{n:03d}.json", json.dumps({"caption": f"clip {n}", "total_samples": 3000}).encode())
                n += 1
    return [f"k{i:03d}" for i in range(n)]


def run_rank(shards: str, out: str) -> None:
    """One DDP rank (RANK, WORLD_SIZE, MASTER_* set by the test, as torchrun would)."""
    pl.seed_everything(0)  # every rank alike, as LightningCLI does
    dm = AudioDataModule(train_shards=shards, sample_size=1024, batch_size=2, num_workers=0, shuffle_buffer=4)
    trainer = pl.Trainer(accelerator="cpu", devices=2, num_nodes=1, max_epochs=1, logger=False,
                         strategy=pl.strategies.DDPStrategy(process_group_backend="gloo", timeout=timedelta(seconds=60)),
                         callbacks=[RankSeedCallback(), pl.callbacks.ModelCheckpoint(
                             dirpath=Path(out, "ckpt"), save_last=True, save_top_k=0, every_n_train_steps=2)],
                         enable_progress_bar=False,
                         enable_model_summary=False, num_sanity_val_steps=0, log_every_n_steps=1)
    trainer.fit(Recorder(out), datamodule=dm)


@pytest.mark.slow
def test_two_rank_ddp_epoch_is_balanced_disjoint_covering_and_draws_differ(tmp_path):
    ids = _shards(tmp_path / "shards")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = []
    for rank in range(2):
        env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{Path(__file__).parent}", "MASTER_ADDR": "127.0.0.1",
               "MASTER_PORT": str(port), "WORLD_SIZE": "2", "RANK": str(rank), "LOCAL_RANK": str(rank),
               "NODE_RANK": "0"}
        code = f"import test_ddp; test_ddp.run_rank({str(tmp_path / 'shards')!r}, {str(tmp_path)!r})"
        procs.append(subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True))
    outputs = []
    for p in procs:
        try:
            outputs.append(p.communicate(timeout=300)[0])
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            pytest.fail("the DDP run hung")
    assert all(p.returncode == 0 for p in procs), "\n".join(o[-2000:] for o in outputs)
    seen = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert len(seen[0]["ids"]) == len(seen[1]["ids"]) == 6  # 3 steps each, same count
    assert not set(seen[0]["ids"]) & set(seen[1]["ids"])  # disjoint
    assert sorted(seen[0]["ids"] + seen[1]["ids"]) == ids  # together the whole split
    for key in ("noise", "t", "drop", "mask"):
        assert seen[0][key] != seen[1][key], f"both ranks drew the same {key}"
    # the checkpoint rank 0 wrote after step 2 holds both ranks' stream positions
    ckpt = torch.load(tmp_path / "ckpt" / "last.ckpt", map_location="cpu", weights_only=False)
    ranks = ckpt["loops"]["fit_loop"]["state_dict"]["combined_loader"][0]["ranks"]
    assert [(r["epoch"], r["consumed"]) for r in ranks] == [(1, 2), (1, 2)]
