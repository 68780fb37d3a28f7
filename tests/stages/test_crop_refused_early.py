"""A VAE or LAFA stage whose audio crop is shorter than one latent frame is refused by `lafa fit` before any logger
or callback writes (issue 25: nothing half-written): the check runs in `prepare_data`, Lightning's first hook. It used
to run in `setup` only, after TensorBoard had made `version_0/` with an events file and LightningCLI its config.yaml."""

import subprocess
import sys
from pathlib import Path

import pytest
from lafa_fixtures import TINY_VAE, write_tiny_vae

from lafa.errors import USER_ERROR_EXIT

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("crop")
    proc = subprocess.run([sys.executable, "-m", "data_prep", "demo", "--out", str(root / "data" / "demo")], cwd=root,
                          capture_output=True, text=True, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    write_tiny_vae(root / "vae.safetensors")
    return root


STAGES = {
    "vae": (["configs/vae.yaml", "configs/tiny/vae.yaml"], [], 100, "one latent frame of the VAE (2048 samples)"),
    "lafa": (["configs/lafa.yaml", "configs/tiny/lafa.yaml"],
             ["--model.init_args.vae_ckpt", "vae.safetensors", "--model.init_args.vae_args", str(TINY_VAE)], 4,
             "one latent frame of the frozen VAE (8 samples)"),
}


@pytest.mark.parametrize("stage", list(STAGES))
def test_a_crop_shorter_than_a_latent_frame_leaves_nothing(demo, stage):
    configs, extra, crop, what = STAGES[stage]
    args = [a for c in configs for a in ("--config", str(REPO / c))]
    proc = subprocess.run([sys.executable, "-m", "lafa", "fit", *args, *extra, "--data.init_args.sample_size",
                           str(crop)], cwd=demo, capture_output=True, text=True,
                          env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == USER_ERROR_EXIT, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert f"lafa fit: error: data.init_args.sample_size: {crop} samples is shorter than {what}" in proc.stderr
    assert not (demo / "runs").exists()  # no version folder, config.yaml, events or checkpoint folder
