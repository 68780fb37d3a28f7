"""Reference side of bench/bench_models.py: stable-audio-tools 0.0.20 models, driven over stdin/stdout.

Runs only as a subprocess with PYTHONPATH=bench/.ref-site (bench/setup_reference.sh installs it there), so the
reference never enters lafa's own imports. One JSON command per stdin line; each reply is one stdout line that
starts with REPLY_PREFIX (the reference prints notices on import; those lines are not replies).

Commands: setup_vae, setup_dit (build, load a state dict, keep the inputs), outputs (save outputs and gradients),
time (run one case `reps` times, reply with the seconds), time_vae and vae_matrix_outputs (the inference
matrix), quit. The cases themselves are bench/model_cases.py's, shared with lafa's side.
"""

from __future__ import annotations

import contextlib
import json
import sys

import torch
from model_cases import Cases, measured_call, time_calls, vae_inputs  # bench/ on PYTHONPATH
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


class Worker(Cases):
    """The reference's side of every case (bench/model_cases.py holds the cases, written once for both sides)."""

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

    # the reference's calls: its encode/decode serve both inference and training
    def encoder_out(self, audio: torch.Tensor) -> torch.Tensor:
        return self.model.encoder(audio)

    def encode(self, audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z, info = self.model.encode(audio, return_info=True)
        return z, info["kl"]

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.model.decode(z)

    train_encode, train_decode = encode, decode

    def dit(self, checkpointing: bool) -> torch.Tensor:
        i = self.inputs
        return self.model(i["x"], i["t"], i["text"], i["seconds_start"], i["seconds_total"], checkpointing)

    # protocol commands beyond the cases' own `time`
    def outputs(self, path: str) -> dict:  # type: ignore[override]
        """The cases' outputs and gradients, saved to `path` for the parent."""
        torch.save(super().outputs(), path)
        return {"saved": path}

    def vae_inputs(self, frames: int, batch: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The matrix cases' inputs (model_cases.vae_inputs, as lafa's side), kept while the case stays."""
        key = (frames, batch, seed)
        if self.inputs.get("matrix_key") != key:
            self.inputs.update(matrix_key=key, matrix=vae_inputs(frames, batch, seed))
        return self.inputs["matrix"]

    def time_vae(self, op: str, frames: int, batch: int, seed: int, reps: int) -> dict:
        """Encode (sampling bottleneck) or decode of the (frames, batch) input: CPU and wall seconds per call, and
        the most resident memory a call added."""
        self.model.eval()
        audio, z = self.vae_inputs(frames, batch, seed)
        with torch.no_grad():
            return time_calls(lambda: self.encode(audio) if op == "encode" else self.decode(z), reps)

    def vae_matrix_outputs(self, frames: int, batch: int, seed: int, path: str) -> dict:
        """The encoder's raw output and the decoding of the matrix inputs, saved for the agreement check."""
        self.model.eval()
        audio, z = self.vae_inputs(frames, batch, seed)
        with torch.no_grad():
            added = measured_call(lambda: torch.save({"encoder_raw": self.encoder_out(audio), "decoded": self.decode(z)},
                                                     path))[2]
        return {"saved": path, "added_bytes": added}


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
