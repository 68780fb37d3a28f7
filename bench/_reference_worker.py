"""Reference side of bench/bench_models.py: stable-audio-tools 0.0.20 models, driven over stdin/stdout.

Runs only as a subprocess with PYTHONPATH=bench/.ref-site (bench/setup_reference.sh installs it there), so the
reference never enters lafa's own imports. One JSON command per stdin line; each reply is one stdout line that
starts with REPLY_PREFIX (the reference prints notices on import; those lines are not replies).

Commands: setup_vae, setup_dit (build, load a state dict, keep the inputs), outputs (save outputs and gradients),
time (run one case `reps` times, reply with the seconds), quit.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time

import torch
from sizing import peak_reset, resident  # bench/sizing.py: this script's folder is on sys.path
from torch import nn

REPLY_PREFIX = "@@reply "

with contextlib.redirect_stdout(sys.stderr):  # its import notices (flash_attn missing) must not reach the protocol
    from stable_audio_tools.models.autoencoders import create_autoencoder_from_config
    from stable_audio_tools.models.conditioners import NumberConditioner
    from stable_audio_tools.models.diffusion import DiTWrapper


class ReferenceSAO(nn.Module):
    """SAO-1.0's DiT as stable-audio-tools wires it: two NumberConditioners (seconds_start, seconds_total, 0..512)
    give one cross-attention token each after the prompt tokens and, concatenated, the global condition
    (ConditionedDiffusionModelWrapper.get_conditioning_inputs); the DiT is its DiTWrapper."""

    def __init__(self, dit_config: dict, max_seconds: float) -> None:
        super().__init__()
        cond_dim = dit_config["cond_token_dim"]
        self.seconds_start = NumberConditioner(cond_dim, 0, max_seconds)
        self.seconds_total = NumberConditioner(cond_dim, 0, max_seconds)
        self.model = DiTWrapper(**dit_config)

    def forward(self, x, t, text, seconds_start, seconds_total, use_checkpointing: bool):
        start, _ = self.seconds_start(seconds_start.tolist(), device=x.device)  # (B, 1, cond_dim)
        total, _ = self.seconds_total(seconds_total.tolist(), device=x.device)
        cross = torch.cat((text, start, total), dim=1)  # (B, L + 2, cond_dim)
        global_cond = torch.cat((start, total), dim=-1).squeeze(1)  # (B, 2 cond_dim)
        return self.model(x, t, cross_attn_cond=cross, global_cond=global_cond, use_checkpointing=use_checkpointing)


class Worker:
    def __init__(self) -> None:
        self.kind = None
        self.model = None
        self.inputs = {}

    def setup_vae(self, config: dict, weights: str, inputs: str) -> dict:
        self.kind = "vae"
        self.model = create_autoencoder_from_config(config)
        return self._load(weights, inputs)

    def setup_dit(self, config: dict, max_seconds: float, weights: str, inputs: str) -> dict:
        self.kind = "dit"
        self.model = ReferenceSAO(config, max_seconds)
        return self._load(weights, inputs)

    def _load(self, weights: str, inputs: str) -> dict:
        missing, unexpected = self.model.load_state_dict(torch.load(weights), strict=False)
        self.inputs = torch.load(inputs)
        return {
            "parameters": sum(p.numel() for p in self.model.parameters()),
            "buffers": sum(b.numel() for b in self.model.buffers()),
            "missing_keys": list(missing),
            "unexpected_keys": list(unexpected),
        }

    # one call of each timed case; the same calls as lafa's side in bench_models.py
    def vae_encode(self) -> torch.Tensor:
        with torch.no_grad():
            return self.model.encode(self.inputs["audio"])

    def vae_decode(self) -> torch.Tensor:
        with torch.no_grad():
            return self.model.decode(self.inputs["z"])

    def vae_train_step(self) -> torch.Tensor:
        self.model.zero_grad(set_to_none=True)
        z, info = self.model.encode(self.inputs["audio"], return_info=True)
        recon = self.model.decode(z)
        loss = recon.pow(2).mean() + 1e-4 * info["kl"]
        loss.backward()
        return loss

    def _dit(self, use_checkpointing: bool) -> torch.Tensor:
        i = self.inputs
        return self.model(i["x"], i["t"], i["text"], i["seconds_start"], i["seconds_total"], use_checkpointing)

    def dit_forward(self) -> torch.Tensor:
        with torch.no_grad():
            return self._dit(False)

    def _dit_step(self, use_checkpointing: bool) -> torch.Tensor:
        self.model.zero_grad(set_to_none=True)
        loss = (self._dit(use_checkpointing) - self.inputs["target"]).pow(2).mean()
        loss.backward()
        return loss

    def dit_train_step(self) -> torch.Tensor:
        return self._dit_step(False)

    def dit_train_step_ckpt(self) -> torch.Tensor:
        return self._dit_step(True)

    def outputs(self, path: str) -> dict:
        """Deterministic outputs and the parameter gradients of one training step, saved to `path`."""
        out = {}
        if self.kind == "vae":
            with torch.no_grad():
                out["encoder_raw"] = self.model.encoder(self.inputs["audio"])
                torch.manual_seed(self.inputs["seed"])
                out["z"], info = self.model.encode(self.inputs["audio"], return_info=True)
                out["kl"] = info["kl"]
                out["decoded"] = self.model.decode(self.inputs["z"])
            torch.manual_seed(self.inputs["seed"])
            out["loss"] = self.vae_train_step().detach()
        else:
            self.model.eval()
            out["output"] = self.dit_forward()
            self.model.train()
            out["loss"] = self.dit_train_step().detach()
        out["grads"] = {k: p.grad.clone() for k, p in self.model.named_parameters() if p.grad is not None}
        torch.save(out, path)
        return {"saved": path}

    def vae_inputs(self, frames: int, batch: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The matrix cases' inputs, generated from the seed exactly as bench_models.vae_inputs does."""
        key = (frames, batch, seed)
        if self.inputs.get("matrix_key") != key:
            g = torch.Generator().manual_seed(seed)
            audio = 0.3 * torch.randn(batch, 2, frames * 2048, generator=g)
            z = torch.randn(batch, 64, frames, generator=g)
            self.inputs.update(matrix_key=key, matrix=(audio, z))
        return self.inputs["matrix"]

    def time_vae(self, op: str, frames: int, batch: int, seed: int, reps: int) -> dict:
        """Encode (sampling bottleneck) or decode of the (frames, batch) input: CPU and wall seconds per call, and
        the most resident memory a call added (bytes; None where the peak cannot be reset)."""
        self.model.eval()
        audio, z = self.vae_inputs(frames, batch, seed)
        cpu, wall, added = [], [], []
        with torch.no_grad():
            for _ in range(reps):
                measured = peak_reset()
                before = resident()[0]
                c0, t0 = time.process_time(), time.perf_counter()
                self.model.encode(audio) if op == "encode" else self.model.decode(z)
                cpu.append(time.process_time() - c0)
                wall.append(time.perf_counter() - t0)
                if measured:
                    added.append(resident()[1] - before)
        return {"cpu": cpu, "wall": wall, "added_bytes": max(added) if added else None}

    def vae_matrix_outputs(self, frames: int, batch: int, seed: int, path: str) -> dict:
        """The encoder's raw output and the decoding of the matrix inputs, saved for the agreement check."""
        self.model.eval()
        audio, z = self.vae_inputs(frames, batch, seed)
        measured = peak_reset()
        before = resident()[0]
        with torch.no_grad():
            torch.save({"encoder_raw": self.model.encoder(audio), "decoded": self.model.decode(z)}, path)
        return {"saved": path, "added_bytes": resident()[1] - before if measured else None}

    def time(self, case: str, reps: int) -> dict:
        if self.kind == "dit":
            self.model.train(case != "dit_forward")
        else:
            self.model.eval()  # the VAE has no dropout or norm statistics; eval as lafa's side
        fn = getattr(self, case)
        seconds = []
        for _ in range(reps):
            t0 = time.perf_counter()
            fn()
            seconds.append(time.perf_counter() - t0)
        return {"seconds": seconds}


def main() -> None:
    torch.set_num_threads(int(sys.argv[1]) if len(sys.argv) > 1 else 2)
    worker = Worker()
    for line in sys.stdin:
        msg = json.loads(line)
        cmd = msg.pop("cmd")
        if cmd == "quit":
            break
        try:
            reply = getattr(worker, cmd)(**msg)
        except Exception as e:  # reported to the parent, which raises with it
            reply = {"error": f"{type(e).__name__}: {e}"}
        print(REPLY_PREFIX + json.dumps(reply), flush=True)


if __name__ == "__main__":
    main()
