"""`python tests/faults/encode_driver.py ARGS...`: `lafa encode ARGS` with a small test autoencoder in place of
load_autoencoder, for fault tests that need a real process (kill -9, a second writer, a tmpfs that fills up).

The checkpoint's file name picks the weights: a name starting with "b" gives other weights than any other name.
LAFA_TEST_SLOW=seconds sleeps in every encode call (a run long enough to be killed). "loading the model" is
printed when the model is loaded (tests assert that a refused run never got there)."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import lafa.stages.loading  # noqa: E402
from lafa.cli import main  # noqa: E402

RATIO, LATENT_DIM = 4, 16


class TinyAutoencoder(torch.nn.Module):
    """Average-pool by RATIO, then a fixed 2 -> LATENT_DIM map (its values from `seed`): latents 4x the bytes of
    the 16-bit audio, so a small filesystem fills up."""

    sample_rate, io_channels, latent_dim, downsampling_ratio = 44100, 2, LATENT_DIM, RATIO

    def __init__(self, seed: int = 0):
        super().__init__()
        self.register_buffer("weight", torch.randn(LATENT_DIM, 2, generator=torch.Generator().manual_seed(seed)))

    def encode(self, audio):  # (B, 2, S) -> (B, LATENT_DIM, S // RATIO)
        if os.environ.get("LAFA_TEST_SLOW"):
            time.sleep(float(os.environ["LAFA_TEST_SLOW"]))
        return torch.einsum("oc,bcn->bon", self.weight, torch.nn.functional.avg_pool1d(audio, RATIO))


def load(path, latent_dim=64):
    print("loading the model", flush=True)
    return TinyAutoencoder(seed=1 if Path(path).name.startswith("b") else 0)


if __name__ == "__main__":
    lafa.stages.loading.load_autoencoder = load
    sys.exit(main(["encode", *sys.argv[1:]]))
