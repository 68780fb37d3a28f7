"""The timed cases of bench/bench_models.py, written once for both sides.

lafa's side (`bench_models.LafaCases`) and the reference worker (`bench/_reference_worker.py`, a subprocess
with PYTHONPATH=bench/.ref-site plus this folder) subclass `Cases` and give only their own model calls
(encode, decode, the DiT forward); every case, the agreement outputs, the matrix inputs and the measured call
are here, so both sides time and compare exactly the same steps. Imports torch and bench/sizing.py only:
never lafa, never stable-audio-tools.
"""

from __future__ import annotations

import time

import torch
from sizing import peak_reset, resident  # bench/sizing.py: this folder is on sys.path on both sides
from torch import nn


def vae_inputs(frames: int, batch: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The inference matrix's inputs: audio (batch, 2, frames * 2048) and latents (batch, 64, frames) from the seed."""
    g = torch.Generator().manual_seed(seed)
    return 0.3 * torch.randn(batch, 2, frames * 2048, generator=g), torch.randn(batch, 64, frames, generator=g)


def timed(fn) -> tuple[float, float]:
    """(CPU s, wall s) of one call."""
    c0, t0 = time.process_time(), time.perf_counter()
    fn()
    return time.process_time() - c0, time.perf_counter() - t0


def measured_call(fn) -> tuple[float, float, int | None]:
    """(CPU s, wall s, resident bytes the call added at its peak, None where the peak cannot be reset)."""
    measured = peak_reset()
    before = resident()[0]
    cpu, wall = timed(fn)
    return cpu, wall, (resident()[1] - before if measured else None)


def time_calls(fn, reps: int) -> dict:
    """CPU and wall seconds of `reps` calls of `fn`, and the most resident memory a call added (bytes; None
    where the peak cannot be reset)."""
    cpu, wall, added = [], [], []
    for _ in range(reps):
        c, w, a = measured_call(fn)
        cpu.append(c)
        wall.append(w)
        if a is not None:
            added.append(a)
    return {"cpu": cpu, "wall": wall, "added_bytes": max(added) if added else None}


class Cases:
    """Every timed case and the agreement outputs over one side's model calls.

    A side sets `model` (the nn.Module trained and whose gradients are compared) and `inputs` (the saved
    inputs: audio, z, seed for the VAE; x, t, text, seconds_start, seconds_total, target for the DiT), and
    implements the calls below."""

    model: nn.Module
    inputs: dict

    # the side's own calls
    def encoder_out(self, audio: torch.Tensor) -> torch.Tensor:
        """The encoder's raw output (B, 2 * latent, frames): mean and scale before the bottleneck."""
        raise NotImplementedError

    def encode(self, audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Inference encode with the sampling bottleneck: (latent (B, 64, frames), KL)."""
        raise NotImplementedError

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Inference decode: (B, 64, frames) -> (B, 2, frames * 2048)."""
        raise NotImplementedError

    def train_encode(self, audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The training path's encode (autograd through the model): (latent, KL)."""
        raise NotImplementedError

    def train_decode(self, z: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def dit(self, checkpointing: bool) -> torch.Tensor:
        """The DiT's output (B, 64, frames) on the saved inputs."""
        raise NotImplementedError

    # the cases
    def vae_encode(self) -> torch.Tensor:
        with torch.no_grad():
            return self.encode(self.inputs["audio"])[0]

    def vae_decode(self) -> torch.Tensor:
        with torch.no_grad():
            return self.decode(self.inputs["z"])

    def vae_train_step(self) -> torch.Tensor:
        self.model.zero_grad(set_to_none=True)
        z, kl = self.train_encode(self.inputs["audio"])
        loss = self.train_decode(z).pow(2).mean() + 1e-4 * kl
        loss.backward()
        return loss

    def dit_forward(self) -> torch.Tensor:
        with torch.no_grad():
            return self.dit(False)

    def _dit_step(self, checkpointing: bool) -> torch.Tensor:
        self.model.zero_grad(set_to_none=True)
        loss = (self.dit(checkpointing) - self.inputs["target"]).pow(2).mean()
        loss.backward()
        return loss

    def dit_train_step(self) -> torch.Tensor:
        return self._dit_step(False)

    def dit_train_step_ckpt(self) -> torch.Tensor:
        return self._dit_step(True)

    def prepare(self, case: str) -> None:
        """Training mode for the DiT's training steps only (the VAE has no dropout or norm statistics)."""
        self.model.train(case.startswith("dit_train"))

    def time(self, case: str, reps: int) -> dict:
        """Wall seconds of `reps` calls of one case."""
        self.prepare(case)
        fn = getattr(self, case)
        return {"seconds": [timed(fn)[1] for _ in range(reps)]}

    def outputs(self) -> dict:
        """Deterministic outputs and the parameter gradients of one training step (VAE: encoder output, sampled
        latent and KL under the saved seed, decoding; DiT: the eval forward)."""
        out = {}
        self.model.eval()
        if "audio" in self.inputs:
            with torch.no_grad():
                out["encoder_raw"] = self.encoder_out(self.inputs["audio"])
                torch.manual_seed(self.inputs["seed"])
                out["z"], out["kl"] = self.encode(self.inputs["audio"])
                out["decoded"] = self.decode(self.inputs["z"])
            torch.manual_seed(self.inputs["seed"])
            out["loss"] = self.vae_train_step().detach()
        else:
            out["output"] = self.dit_forward()
            self.model.train()
            out["loss"] = self.dit_train_step().detach()
        out["grads"] = {k: p.grad.clone() for k, p in self.model.named_parameters() if p.grad is not None}
        return out
