"""VaeStage: the tiny config learns, EMA follows Stable Audio's warm-up, and fit -> test -> export works end to end."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from lightning.pytorch import Trainer
from vae_fixtures import SineData

from lafa.checkpoints import load_sao_vae
from lafa.models.autoencoder import VaeAutoencoder
from lafa.stages.ema import WarmupEMA
from lafa.stages.schedules import inverse_lr_factor
from lafa.stages.vae import VaeStage

REPO = Path(__file__).resolve().parents[2]


def tiny_init_args(**overrides) -> dict:
    """configs/vae.yaml overlaid with configs/tiny/vae.yaml, as `lafa fit` merges them."""
    args, model = {}, {}
    for name in ("configs/vae.yaml", "configs/tiny/vae.yaml"):
        layer = yaml.safe_load((REPO / name).read_text())["model"]["init_args"]
        model.update(layer.pop("model", {}))  # the model mapping merges key by key
        args.update(layer)
    return {**args, "model": model, **overrides}


def spectral(stage: VaeStage, audio: torch.Tensor) -> float:
    torch.manual_seed(123)  # the same posterior sample before and after
    with torch.no_grad():
        decoded, _ = stage.vae(audio)
        terms = stage.spectral_loss(decoded, audio)
    return float(terms["stft_sum_diff"] + 0.5 * (terms["stft_left"] + terms["stft_right"]))


def test_tiny_config_steps_lower_reconstruction_loss():
    torch.manual_seed(0)
    stage = VaeStage(**tiny_init_args())
    data = SineData(sample_size=4096, batch_size=2, n_train=2)
    audio = next(iter(data.train_dataloader()))["audio"]
    before = spectral(stage, audio)
    trainer = Trainer(max_steps=4, accelerator="cpu", logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)
    trainer.fit(stage, data)
    after = spectral(stage, audio)
    assert after < 0.8 * before, (before, after)
    print(f"spectral loss {before:.3f} -> {after:.3f}")
    assert isinstance(stage.as_autoencoder(), VaeAutoencoder) and stage.as_autoencoder().vae is stage.vae


def test_ema_follows_warmup_decay_on_generator_steps():
    """WarmupEMA: n = 0 copies, then decay_n = min(decay, 1 - (1 + n)^-power) (ema_pytorch), every 2nd step."""
    ema = WarmupEMA(decay=0.9999, power=0.75, every_n_steps=2)
    assert [ema.should_update(step_idx=k) for k in range(4)] == [True, False, True, False]
    assert not ema.should_update(epoch_idx=0)
    model = torch.nn.Linear(3, 2)
    averaged = torch.optim.swa_utils.AveragedModel(model, multi_avg_fn=ema._average, use_buffers=True)
    params = lambda m: torch.cat([p.detach().flatten() for p in m.parameters()])  # noqa: E731
    averaged.update_parameters(model)  # n = 0: the EMA becomes the weights
    torch.testing.assert_close(params(averaged.module), params(model), rtol=0, atol=0)
    old = params(averaged.module)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    averaged.update_parameters(model)  # n = 1: decay = min(0.9999, 1 - 2^-0.75)
    decay = 1 - 2 ** -0.75
    torch.testing.assert_close(params(averaged.module), decay * old + (1 - decay) * params(model))
    with pytest.raises(ValueError, match="decay"):
        WarmupEMA(decay=1.0)


def test_tiny_fit_keeps_the_ema_in_the_checkpoint(tmp_path):
    """Generator steps with WarmupEMA in the Trainer: a checkpoint written during training holds the averaged
    weights as its state_dict and the trained ones as `current_model_state`, and they differ (the EMA lags);
    when training ends the stage holds the averaged weights (what `as_autoencoder()` then gives)."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    torch.manual_seed(0)
    stage = VaeStage(model=dict(channels=2, c_mults=[1, 2], strides=[2, 2]), disc_filters=2, lr_warmup=0.0)
    trainer = Trainer(max_steps=6, accelerator="cpu", logger=False, enable_progress_bar=False,
                      enable_model_summary=False, limit_val_batches=0,
                      callbacks=[WarmupEMA(decay=0.9, power=0.75, every_n_steps=2),
                                 ModelCheckpoint(tmp_path, every_n_train_steps=6, save_top_k=-1, monitor=None)])
    trainer.fit(stage, SineData(sample_size=4096, batch_size=2, n_train=6))
    ckpt = torch.load(next(tmp_path.glob("*.ckpt")), weights_only=True)
    key = "vae.encoder.layers.0.weight_v"
    assert key in ckpt["state_dict"] and key in ckpt["current_model_state"]
    assert not torch.equal(ckpt["state_dict"][key], ckpt["current_model_state"][key])
    assert torch.equal(ckpt["state_dict"][key], stage.state_dict()[key])  # the stage ends on the averaged weights


def test_inverse_lr_schedule():
    assert inverse_lr_factor(0, 200000, 0.5, 0.0) == 1.0
    assert abs(inverse_lr_factor(200000, 200000, 0.5, 0.0) - 2 ** -0.5) < 1e-12  # inv_gamma steps: (1/2)^power
    assert abs(inverse_lr_factor(0, 200000, 0.5, 0.999) - 0.001) < 1e-12  # exponential warm-up from 1 - 0.999


def _lafa(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {"PYTHONPATH": f"{REPO}:{REPO / 'tests' / 'stages'}", "PATH": "/usr/bin:/bin",
           "LAFA_TRUSTED_CLASSES": "vae_fixtures"}  # the test data module a stored config may name
    return subprocess.run([sys.executable, "-m", "lafa", *args], cwd=cwd, env=env, capture_output=True, text=True)


@pytest.mark.slow
def test_fit_test_export_end_to_end(tmp_path):
    """lafa fit (base + tiny config, synthetic data), lafa test from the checkpoint alone, lafa export."""
    override = {
        "trainer": {"max_steps": 2, "val_check_interval": 2, "enable_progress_bar": False,
                    "logger": {"class_path": "lightning.pytorch.loggers.TensorBoardLogger",
                               "init_args": {"save_dir": str(tmp_path / "logs"), "name": ""}},
                    "callbacks": [{"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                                   "init_args": {"dirpath": str(tmp_path / "ckpt"), "save_last": True}}]},
        "data": {"class_path": "vae_fixtures.SineData",
                 "init_args": {"sample_size": 4096, "batch_size": 2, "n_train": 2, "n_eval": 2}},
    }
    (tmp_path / "override.yaml").write_text(yaml.safe_dump(override))
    fit = _lafa(["fit", "--config", str(REPO / "configs/vae.yaml"), "--config", str(REPO / "configs/tiny/vae.yaml"),
                 "--config", str(tmp_path / "override.yaml")], cwd=tmp_path)
    assert fit.returncode == 0, fit.stderr[-3000:]
    ckpt = tmp_path / "ckpt" / "last.ckpt"
    test = _lafa(["test", "--ckpt_path", str(ckpt)], cwd=tmp_path)
    assert test.returncode == 0, test.stderr[-3000:]
    for metric in ("test/stft_distance", "test/mel_distance", "test/si_sdr"):
        assert metric in test.stdout
    assert list((tmp_path / "logs").rglob("events.out.tfevents.*"))  # audio examples and spectrograms logged

    out = tmp_path / "vae.safetensors"
    export = _lafa(["export", "--ckpt_path", str(ckpt), "--out", str(out)], cwd=tmp_path)
    assert export.returncode == 0, export.stderr[-3000:]
    state = torch.load(ckpt, weights_only=True)["state_dict"]
    vae = load_sao_vae(out, latent_dim=64)  # architecture read from the file's shapes
    for k, v in vae.state_dict().items():  # the checkpoint's state_dict holds the EMA weights (WarmupEMA)
        assert torch.equal(v, state[f"vae.{k}"]), k


def test_pretrained_weights_start_fine_tuning(tmp_path):
    from lafa.checkpoints import save_vae_safetensors
    from lafa.models.oobleck import OobleckVAE

    small = dict(model=dict(channels=2, c_mults=[1, 2], strides=[2, 2], latent_dim=4), disc_filters=2)
    torch.manual_seed(5)
    source = OobleckVAE(channels=2, c_mults=(1, 2), strides=(2, 2), latent_dim=4)
    path = save_vae_safetensors(source, tmp_path / "vae.safetensors")
    stage = VaeStage(**small, pretrained=str(path))
    stage.setup("fit")
    for k, v in source.state_dict().items():
        assert torch.equal(stage.vae.state_dict()[k], v), k
    with pytest.raises(ValueError, match="latent size 4"):
        VaeStage(**{**small, "model": {**small["model"], "latent_dim": 8}}, pretrained=str(path)).setup("fit")
