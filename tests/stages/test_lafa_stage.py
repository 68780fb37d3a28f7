"""LafaStage: a frozen VAE that never changes, a loss that falls, evaluation at 1/2/10 decoder steps with the
latent statistics measured on data, and `lafa fit` / `lafa test` from the stored config."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml
from lafa_fixtures import TINY_VAE, ToneData, write_tiny_vae

from lafa.diffusion.objectives import masked_mse_pooled
from lafa.models.autoencoder import Autoencoder, LafaAutoencoder
from lafa.stages.lafa import LafaStage, _channel_variance
from lafa.stages.loading import load_autoencoder, load_stage

TINY_MODEL = dict(lafa_channels=8, channel_group_size=2, encoder_dim=32, encoder_depth=2, encoder_heads=4,
                  decoder_dim=32, decoder_depth=2, decoder_heads=4)
TINY = dict(model=TINY_MODEL, lr=2e-3, warmup_steps=1, norm_batches=2, eval_steps=[1, 2, 10])
REPO = Path(__file__).resolve().parents[2]


def _trainer(root: Path, **kwargs) -> L.Trainer:
    defaults = dict(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                    enable_model_summary=False, default_root_dir=str(root), num_sanity_val_steps=0)
    return L.Trainer(**{**defaults, **kwargs})


@pytest.fixture(scope="module")
def vae_file(tmp_path_factory) -> Path:
    return write_tiny_vae(tmp_path_factory.mktemp("vae") / "vae.safetensors")


def _fixed_loss(stage: LafaStage, batch: dict, draws: int = 8) -> float:
    """The training objective on one batch, averaged over fixed masks/t/noise draws."""
    stage.eval()
    z0, keep = stage._latents(batch)
    total = 0.0
    with torch.no_grad():
        for i in range(draws):
            gen = torch.Generator().manual_seed(100 + i)
            total += float(stage.lafa.loss(z0, stage.lafa.masker(z0.shape[0], gen), keep, gen))
    return total / draws


def _tiny_config_args() -> dict:
    """The model init_args of configs/lafa.yaml overlaid by configs/tiny/lafa.yaml (the `model` mapping key by key,
    as jsonargparse merges it)."""
    args, model = {}, {}
    for name in ("lafa.yaml", "tiny/lafa.yaml"):
        layer = yaml.safe_load((REPO / "configs" / name).read_text())["model"]["init_args"]
        model.update(layer.pop("model", {}))
        args.update(layer)
    return {**args, "model": model}


def test_tiny_config_lowers_the_loss_and_leaves_the_vae_alone(vae_file: Path, tmp_path: Path) -> None:
    """The tiny config's model and optimiser settings, on the test VAE and synthetic tones."""
    torch.manual_seed(0)
    args = {**_tiny_config_args(), "vae_ckpt": str(vae_file), "vae_args": TINY_VAE}
    assert args["lr"] == 1.0e-3 and args["model"]["preset"] == "tiny"  # the overlay was applied
    stage = LafaStage(**args)
    assert stage.lafa.encoder.blocks[0].time_attn.to_qkv.in_features == 64  # the tiny preset's width
    vae_before = {k: v.clone() for k, v in stage.vae.state_dict().items()}
    data = ToneData()
    batch = next(iter(data.train_dataloader()))
    z0, keep = stage._latents(batch)
    stage.lafa.input_normalizer.accumulate(z0, keep)  # what the first training step would measure
    stage.lafa.input_normalizer.commit()
    before = _fixed_loss(stage, batch)
    _trainer(tmp_path, max_steps=200, limit_val_batches=0).fit(stage, datamodule=data)
    assert not stage.vae.training  # Lightning's train() does not reach the frozen VAE
    assert all(p.grad is None and not p.requires_grad for p in stage.vae.parameters())
    assert all(torch.equal(v, vae_before[k]) for k, v in stage.vae.state_dict().items())  # bit-identical
    optimised = {id(p) for group in stage.optimizers().optimizer.param_groups for p in group["params"]}
    assert optimised == {id(p) for p in stage.lafa.parameters()}
    after = _fixed_loss(stage, batch)
    assert after < 0.6 * before, (before, after)
    # and it reconstructs: the 2-step round trip beats predicting each channel's mean (relative MSE < 1)
    with torch.no_grad():
        z_hat = stage.lafa.decode(stage.lafa.encode(z0, keep), 2, keep, torch.Generator().manual_seed(0))
    rel = float(masked_mse_pooled(z_hat, z0, keep) / _channel_variance(z0, keep))
    assert rel < 1.0, rel


def test_validation_measures_statistics_and_reports_every_step_count(vae_file: Path, tmp_path: Path) -> None:
    torch.manual_seed(0)
    stage = LafaStage(str(vae_file), vae_args=TINY_VAE, **TINY)
    data = ToneData()
    metrics = _trainer(tmp_path).validate(stage, datamodule=data)[0]
    for steps in (1, 2, 10):
        for name in ("latent_mse", "stft_distance", "mel_distance", "si_sdr"):
            assert f"val/k{steps}/{name}" in metrics
    assert {"val/loss", "val/vae/mel_distance"} <= set(metrics)
    # the stored statistics are those of the unmasked LAFA latent on the first norm_batches batches
    stage.eval()
    ys = []
    with torch.no_grad():
        for batch in list(data.val_dataloader())[:2]:
            z, keep = stage._latents(batch)
            ys.append(stage.lafa.encode(z, keep).transpose(1, 2)[keep])  # (real frames, C)
    values = torch.cat(ys).double()
    norm = stage.lafa.normalizer
    assert norm.count.item() == values.numel()
    assert torch.allclose(norm.mean, values.mean().float().expand(8, 1), atol=1e-5)
    assert torch.allclose(norm.std, values.std(unbiased=False).float().expand(8, 1), atol=1e-5)
    autoencoder = stage.as_autoencoder()
    assert isinstance(autoencoder, LafaAutoencoder) and isinstance(autoencoder, Autoencoder)
    audio = next(iter(data.val_dataloader()))["audio"]
    with torch.no_grad():
        y = autoencoder.encode(audio)
        assert y.shape == (4, 8, 16)
        assert abs(float(y.mean())) < 0.5  # normalised (the statistics came from the same kind of audio)
        assert autoencoder.decode(y, steps=2).shape == audio.shape


@pytest.mark.parametrize("switches", [dict(decoder="vit"), dict(mask_site="latent", span=False, causal=False),
                                      dict(mask_mode="prefix", mask_site="latent"),
                                      dict(mask_ratio=0.0, p_all=0.0, spectrum_weight=0.1, spectrum_window=8)])
def test_ablation_switches_train_and_evaluate(vae_file: Path, tmp_path: Path, switches: dict) -> None:
    """Table 6's ViT-MSE decoder and the Proposition-1 / Table-5 switches run end to end."""
    torch.manual_seed(0)
    stage = LafaStage(str(vae_file), vae_args=TINY_VAE, **{**TINY, "model": {**TINY_MODEL, **switches}})
    trainer = _trainer(tmp_path, max_steps=2, limit_val_batches=1)
    trainer.fit(stage, datamodule=ToneData(n=8))  # one epoch of 2 steps, then validation
    keys = set(trainer.callback_metrics)
    assert ("val/vit/mel_distance" in keys) == (switches.get("decoder") == "vit")
    assert ("val/k2/mel_distance" in keys) == (switches.get("decoder") != "vit")
    assert ("val/k2/posterior_rel_mse" in keys) == (switches.get("decoder") != "vit")
    assert ("val/spectrum_loss" in keys) == ("spectrum_weight" in switches)


def test_posterior_mean_is_the_mean_of_independent_decodes(vae_file: Path, tmp_path: Path) -> None:
    """val/k2/posterior_rel_mse = MSE of the mean of `posterior_samples` 2-step decodes, drawn from the batch's
    generator after the logged decodes, over the channel variance; the other metrics do not depend on it."""
    torch.manual_seed(0)
    stage = LafaStage(str(vae_file), vae_args=TINY_VAE, **{**TINY, "eval_steps": [2], "posterior_samples": 3})
    data = ToneData(n=4)
    metrics = _trainer(tmp_path).validate(stage, datamodule=data)[0]
    batch = next(iter(data.val_dataloader()))
    stage.eval()
    with torch.no_grad():
        z0, keep = stage._latents(batch)
        gen = torch.Generator().manual_seed(stage.hparams.seed)  # batch 0's draws: mask, loss, decodes
        mask = stage.lafa.masker(4, gen)
        stage.lafa.loss(z0, mask, keep, gen)
        y = stage.lafa.encode(z0, keep)
        decodes = [stage.lafa.decode(y, 2, keep, gen) for _ in range(3)]
    variance = _channel_variance(z0, keep)
    first = float(masked_mse_pooled(decodes[0], z0, keep) / variance)
    mean = float(masked_mse_pooled(torch.stack(decodes).mean(0), z0, keep) / variance)
    assert metrics["val/k2/latent_rel_mse"] == pytest.approx(first, rel=1e-5)
    assert metrics["val/k2/posterior_rel_mse"] == pytest.approx(mean, rel=1e-5)
    again = LafaStage(str(vae_file), vae_args=TINY_VAE, **{**TINY, "eval_steps": [2], "posterior_samples": 0})
    again.load_state_dict(stage.state_dict())
    metrics0 = _trainer(tmp_path).validate(again, datamodule=data)[0]
    assert "val/k2/posterior_rel_mse" not in metrics0
    assert metrics0["val/k2/latent_rel_mse"] == metrics["val/k2/latent_rel_mse"]


@pytest.mark.slow
def test_lafa_fit_and_test_from_the_checkpoint(vae_file: Path, tmp_path: Path, monkeypatch) -> None:
    """`lafa fit --config` writes a checkpoint that `lafa test --ckpt_path` and `load_autoencoder` rebuild."""
    config = {
        "model": {"class_path": "lafa.stages.lafa.LafaStage",
                  "init_args": {"vae_ckpt": str(vae_file), "vae_args": TINY_VAE, **TINY}},
        "data": {"class_path": "lafa_fixtures.ToneData", "init_args": {"n": 8}},
        "trainer": {"max_steps": 4, "val_check_interval": 2, "accelerator": "cpu", "logger": False,
                    "enable_progress_bar": False, "num_sanity_val_steps": 0,
                    "callbacks": [{"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                                   "init_args": {"dirpath": str(tmp_path / "ckpt"), "save_last": True}}]},
    }
    (tmp_path / "fit.yaml").write_text(yaml.safe_dump(config))
    monkeypatch.setenv("LAFA_TRUSTED_CLASSES", "lafa_fixtures")  # the test data module a stored config may name
    env = {"PYTHONPATH": f"{REPO}:{REPO / 'tests' / 'stages'}", "PATH": "/usr/bin:/bin",
           "LAFA_TRUSTED_CLASSES": "lafa_fixtures"}

    def lafa(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "lafa", *args], cwd=tmp_path, env=env, capture_output=True,
                              text=True)

    fit = lafa("fit", "--config", str(tmp_path / "fit.yaml"))
    assert fit.returncode == 0, fit.stderr[-3000:]
    ckpt = tmp_path / "ckpt" / "last.ckpt"
    test = lafa("test", "--ckpt_path", str(ckpt))
    assert test.returncode == 0, test.stderr[-3000:]
    assert "test/k2/mel_distance" in test.stdout
    stage = load_stage(ckpt)
    assert stage.lafa.normalizer.count.item() > 0  # measured at the last validation, stored in the checkpoint
    assert isinstance(load_autoencoder(ckpt), LafaAutoencoder)
