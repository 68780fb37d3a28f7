"""`lafa generate` refuses what it cannot do in one line (exit 2) before the model is loaded, and warns (one line)
past the crop length the DiT was trained on (issue 25). The model itself is replaced by a stand-in where only
the command's own logic is under test."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import soundfile as sf
import torch
import yaml

import lafa.stages.loading as loading
from lafa.checkpoints import CHECKPOINT_CONFIG_KEY
from lafa.commands.generate import clip_bytes, training_seconds
from lafa.errors import USER_ERROR_EXIT


def write_ckpt(path: Path, class_path: str, init_args: dict | None = None, data: dict | None = None) -> Path:
    config = {"model": {"class_path": class_path, "init_args": init_args or {}}}
    if data is not None:
        config["data"] = {"class_path": "lafa.data.AudioDataModule", "init_args": data}
    torch.save({"state_dict": {"w": torch.zeros(2)}, CHECKPOINT_CONFIG_KEY: yaml.safe_dump(config)}, path)
    return path


class StandInAutoencoder:
    sample_rate, io_channels, latent_dim, downsampling_ratio = 44100, 2, 64, 2048


class StandInStage:
    """What `lafa generate` uses of a DitStage."""

    autoencoder = StandInAutoencoder()

    def to(self, device):  # noqa: ANN001
        return self

    def generate(self, captions, seconds, seconds_start=0.0, decode_steps=None, seed=0, progress=False, **kw):
        return [torch.full((2, round(seconds * 44100)), 0.1) for _ in captions]


@pytest.fixture
def dit(tmp_path) -> Path:
    autoencoder = tmp_path / "vae.ckpt"
    autoencoder.write_bytes(b"stand-in")
    return write_ckpt(tmp_path / "dit.ckpt", "lafa.stages.dit.DitStage", {"autoencoder_ckpt": str(autoencoder)},
                      data={"sample_size": 65536})


@pytest.fixture
def loads(monkeypatch):
    """Records the checkpoints loaded, and loads the stand-in."""
    loaded = []

    def load_stage(path, **overrides):
        loaded.append(Path(path))
        return StandInStage()

    monkeypatch.setattr(loading, "load_stage", load_stage)
    return loaded


def refused(lafa, *args) -> str:
    code, _, lines = lafa("generate", *args)
    assert code == USER_ERROR_EXIT and len(lines) == 1 and lines[0].startswith("lafa generate: error: "), lines
    return lines[0].removeprefix("lafa generate: error: ")


def test_missing_and_wrong_checkpoints(lafa, tmp_path, loads):
    out = tmp_path / "a.wav"
    assert refused(lafa, "--ckpt_path", tmp_path / "nope.ckpt", "--prompt", "rain", "--out", out) == (
        f"--ckpt_path {tmp_path / 'nope.ckpt'}: no such file; give a checkpoint written by `lafa fit --config "
        "configs/dit_sao.yaml` (or dit_etta.yaml), e.g. runs/dit_sao/checkpoints/last.ckpt")
    vae = write_ckpt(tmp_path / "vae_stage.ckpt", "lafa.stages.vae.VaeStage")
    assert refused(lafa, "--ckpt_path", vae, "--prompt", "rain", "--out", out).startswith(
        f"--ckpt_path {vae}: is a VaeStage checkpoint, not a DiT stage; give a checkpoint written by `lafa fit")
    text = tmp_path / "notes.ckpt"
    text.write_text("not a checkpoint\n" * 10)
    assert "is not a PyTorch checkpoint" in refused(lafa, "--ckpt_path", text, "--prompt", "rain", "--out", out)
    assert not out.exists() and not loads


def test_moved_autoencoder_names_the_override(lafa, tmp_path, loads):
    dit = write_ckpt(tmp_path / "dit.ckpt", "lafa.stages.dit.DitStage", {"autoencoder_ckpt": "runs/gone/last.ckpt"})
    assert refused(lafa, "--ckpt_path", dit, "--prompt", "rain", "--out", tmp_path / "a.wav") == (
        f"runs/gone/last.ckpt: autoencoder file not found (model.init_args.autoencoder_ckpt of {dit}); pass "
        "--autoencoder_ckpt with the VAE or LAFA checkpoint (or SAO VAE weights) the DiT was trained on")
    assert not loads


@pytest.mark.parametrize("seconds", ["0", "-2", "1e-400"])
def test_seconds_must_be_positive(lafa, tmp_path, dit, loads, seconds):
    line = refused(lafa, "--ckpt_path", dit, "--prompt", "rain", "--seconds", seconds, "--out", tmp_path / "a.wav")
    assert line.startswith(f"--seconds {float(seconds):g}: the clip length must be a positive number of seconds; ")
    assert not loads


def test_lengths_it_cannot_allocate(lafa, tmp_path, dit, loads):
    line = refused(lafa, "--ckpt_path", dit, "--prompt", "rain", "--seconds", "1e9", "--out", tmp_path / "a.wav")
    assert line.startswith("--seconds 1e+09: 1 clip(s) of 1e+09 s need at least ")
    assert "for their latents and audio" in line and "GiB available; generate shorter clips, or fewer at once" in line
    assert not loads and not (tmp_path / "a.wav").exists()
    # the bound: latents while sampling and the audio, float32
    assert clip_bytes(10, 44100, 2, 64, 2048, 4) == 4 * 4 * (8 * 64 * 216 + 3 * 2 * 441000)


def test_past_the_training_length_warns_in_one_line(lafa, tmp_path, dit, loads):
    out = tmp_path / "a.wav"
    code, stdout, lines = lafa("generate", "--ckpt_path", dit, "--prompt", "rain", "--seconds", "3", "--out", out)
    assert code == 0 and loads == [dit]
    assert lines == ["lafa generate: warning: --seconds 3 is past the 1.49 s crops this DiT was trained on "
                     "(data.init_args.sample_size 65536 at 44100 Hz in its stored config); expect the audio to "
                     "degrade past 1.49 s"]
    assert sf.info(str(out)).frames == 3 * 44100
    assert stdout.count("device: ") == 1
    code, _, lines = lafa("generate", "--ckpt_path", dit, "--prompt", "rain", "--seconds", "1.4", "--out", out)
    assert code == 0 and lines == []
    assert training_seconds({"data": {"init_args": {"latent_size": 32}}}, 44100, 2048) == (
        32 * 2048 / 44100, "data.init_args.latent_size 32 frames of 2048 samples")


def test_prompt_file_writes_ids_that_evaluate_reads(lafa, tmp_path, dit, loads):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("rain on a roof\n\nwarm pad\n")
    out = tmp_path / "generated"
    code, stdout, lines = lafa("generate", "--ckpt_path", dit, "--prompts", prompts, "--seconds", "0.5",
                               "--batch_size", "1", "--out", out)
    assert code == 0 and not lines
    assert json.loads((out / "prompts.json").read_text()) == {"0000_rain_on_a_roof": "rain on a roof",
                                                             "0001_warm_pad": "warm pad"}
    assert sorted(p.name for p in out.glob("*.wav")) == ["0000_rain_on_a_roof.wav", "0001_warm_pad.wav"]


def test_arguments(lafa, tmp_path, dit, loads):
    out = tmp_path / "a.wav"
    assert refused(lafa, "--ckpt_path", dit, "--out", out) == (
        '--prompt/--prompts: give exactly one of them; add --prompt "rain on a roof" (one clip) or --prompts '
        "prompts.txt (a folder of clips)")
    assert refused(lafa, "--ckpt_path", dit, "--prompt", "x", "--seconds_start", "-1", "--out", out).startswith(
        "--seconds_start -1: must be >= 0 seconds; ")
    assert refused(lafa, "--ckpt_path", dit, "--prompts", tmp_path / "none.txt", "--out", out) == (
        f"--prompts {tmp_path / 'none.txt'}: no such file; give a text file with one prompt per line (or --prompt "
        "TEXT)")
    assert refused(lafa, "--ckpt_path", dit, "--prompt", "x", "--steps", "0", "--out", out) == (
        "--steps 0: must be at least 1; give a positive --steps")
    assert refused(lafa, "--ckpt_path", dit, "--prompt", "x", "--out", tmp_path) == (
        f"--out {tmp_path}: is a folder, and --prompt writes one file; give a file name, e.g. out.wav")
    assert not loads
