"""lafa's SAO-1.0 VAE and DiT-SAO against the reference implementation (stable-audio-tools 0.0.20), side by side
on this CPU: the same random weights in both, outputs and gradients compared, then interleaved timings as ratios.

    bench/setup_reference.sh                      # once: the reference into bench/.ref-site (isolated)
    .venv/bin/python bench/bench_models.py [--quick] [--repeats 3] [--vae-frames 22] [--dit-frames 215]

The reference runs in a subprocess (bench/_reference_worker.py, PYTHONPATH=bench/.ref-site); each timed call
alternates lafa / reference (the order flips every round) so drift in a shared machine's load hits both alike.
Writes bench/results/models.json (machine, versions, settings, agreement, seconds, ratios lafa / reference).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from model_cases import Cases, measured_call, timed, vae_inputs  # the cases of both sides
from sizing import (  # bench/sizing.py (this script's folder is on sys.path)
    GIB,
    MemoryModel,
    WorkerDied,
    available_memory,
    check_case,
    estimate_seconds,
    frames_held,
    minutes,
)
from torch import nn

from lafa.models.dit import DiT
from lafa.models.oobleck import OobleckVAE
from lafa.models.vae_engine import InferenceVAE
from lafa.models.vae_inference import bf16_supported

ROOT = Path(__file__).resolve().parent.parent
REPLY_PREFIX = "@@reply "
SAMPLE_RATE = 44100
MAX_SECONDS = 512.0

# SAO-1.0's autoencoder (its model_config.json "model" section), as stable-audio-tools' factory reads it
SAO_AUTOENCODER_CONFIG = {
    "sample_rate": SAMPLE_RATE,
    "model": {
        "encoder": {"type": "oobleck", "config": {"in_channels": 2, "channels": 128, "c_mults": [1, 2, 4, 8, 16],
                                                  "strides": [2, 4, 4, 8, 8], "latent_dim": 128, "use_snake": True}},
        "decoder": {"type": "oobleck", "config": {"out_channels": 2, "channels": 128, "c_mults": [1, 2, 4, 8, 16],
                                                  "strides": [2, 4, 4, 8, 8], "latent_dim": 64, "use_snake": True,
                                                  "final_tanh": False}},
        "bottleneck": {"type": "vae"},
        "latent_dim": 64,
        "downsampling_ratio": 2048,
        "io_channels": 2,
    },
}


def dit_configs(dim: int, depth: int, heads: int, cond_dim: int) -> tuple[dict, dict]:
    """(lafa DiT (SAO blocks) kwargs, reference DiTWrapper kwargs) of one DiT, SAO-1.0's "diffusion" config at this size."""
    lafa = {"io_channels": 64, "dim": dim, "depth": depth, "heads": heads, "text_dim": cond_dim, "cond_dim": cond_dim,
            "max_seconds": MAX_SECONDS}
    ref = {"diffusion_objective": "v", "io_channels": 64, "embed_dim": dim, "depth": depth, "num_heads": heads,
           "cond_token_dim": cond_dim, "global_cond_dim": 2 * cond_dim, "project_cond_tokens": False,
           "transformer_type": "continuous_transformer"}
    return lafa, ref


def dit_key_to_reference(key: str) -> str:
    """A lafa DiT (SAO blocks) state-dict key -> the key of the same tensor in the worker's ReferenceSAO."""
    rules = [
        ("cond.timing.start.weights", "seconds_start.embedder.embedding.0.weights"),
        ("cond.timing.start.proj.", "seconds_start.embedder.embedding.1."),
        ("cond.timing.total.weights", "seconds_total.embedder.embedding.0.weights"),
        ("cond.timing.total.proj.", "seconds_total.embedder.embedding.1."),
        ("cond.timestep.fourier.weight", "model.model.timestep_features.weight"),
        ("cond.timestep.mlp.", "model.model.to_timestep_embed."),
        ("cond.to_cond_embed.", "model.model.to_cond_embed."),
        ("cond.to_global_embed.", "model.model.to_global_embed."),
        ("project_in.", "model.model.transformer.project_in."),
        ("project_out.", "model.model.transformer.project_out."),
        ("preprocess_conv.", "model.model.preprocess_conv."),
        ("postprocess_conv.", "model.model.postprocess_conv."),
        ("blocks.", "model.model.transformer.layers."),
    ]
    for old, new in rules:
        if key.startswith(old):
            key = new + key[len(old):]
            break
    else:
        raise KeyError(f"no reference name for lafa key {key!r}")
    for old, new in [(".self_norm.weight", ".pre_norm.gamma"), (".cross_norm.weight", ".cross_attend_norm.gamma"),
                     (".ff_norm.weight", ".ff_norm.gamma"), (".ff.proj_in.", ".ff.ff.0.proj."),
                     (".ff.proj_out.", ".ff.ff.2.")]:
        key = key.replace(old, new)
    return key


def randomize(model: nn.Module, seed: int) -> None:
    """Perturb every parameter so no path is trivially zero (zero-initialised outputs, unit norms, snake logs 0)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            if name.endswith((".alpha", ".beta")):  # SnakeBeta's log-parameters
                p.copy_(0.1 * noise)
            elif name.endswith("weight_g") or (p.ndim == 1 and "norm" in name):
                p.mul_(1 + 0.1 * noise)
            elif p.abs().max() == 0:
                p.copy_(0.02 * noise)


class Reference:
    """The reference worker subprocess: one JSON command per line, replies prefixed with REPLY_PREFIX.

    A worker that ends while it has a command (the kernel's out-of-memory killer, a crash) raises WorkerDied
    naming its exit signal or code, never a BrokenPipeError; `restart` starts a fresh one and replays the last
    setup_* command, so the bench can go on with its other cases."""

    def __init__(self, site: Path, threads: int, argv: list[str] | None = None) -> None:
        # the reference's isolated install, and this folder for the shared cases (model_cases.py, sizing.py)
        path = os.pathsep.join([str(site), str(ROOT / "bench")])
        self.env = dict(os.environ, PYTHONPATH=path, ENABLE_TORCH_COMPILE="0", OMP_NUM_THREADS=str(threads))
        self.argv = argv or [sys.executable, str(ROOT / "bench" / "_reference_worker.py"), str(threads)]
        self.setup: tuple[str, dict] | None = None
        self.deaths: list[str] = []
        self._start()

    def _start(self) -> None:
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                     env=self.env, cwd=ROOT)

    def __call__(self, cmd: str, **kwargs) -> dict:
        if cmd.startswith("setup_"):
            self.setup = (cmd, kwargs)
        try:
            self.proc.stdin.write(json.dumps({"cmd": cmd, **kwargs}) + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError, ValueError):  # the worker is gone (ValueError: its pipe was closed)
            raise self._died(cmd) from None
        for line in self.proc.stdout:
            if line.startswith(REPLY_PREFIX):
                reply = json.loads(line[len(REPLY_PREFIX):])
                if "error" in reply:
                    raise RuntimeError(f"reference worker, {cmd}: {reply['error']}")
                return reply
        raise self._died(cmd)

    def _died(self, cmd: str) -> WorkerDied:
        try:
            rc = self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            rc = None
        error = WorkerDied(cmd, rc)
        self.deaths.append(str(error))
        return error

    def restart(self) -> None:
        """A fresh worker with the last setup replayed (its model and inputs), after one has died."""
        self.close()
        self._start()
        if self.setup is not None:
            cmd, kwargs = self.setup
            self(cmd, **kwargs)

    def close(self) -> None:
        """Ask the worker to quit and wait for it; a worker that already ended is only reaped."""
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
                self.proc.stdin.close()
            except (BrokenPipeError, OSError, ValueError):
                pass
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            try:
                stream.close()
            except (BrokenPipeError, OSError, ValueError):
                pass


def agreement(a: dict, b: dict, key_map=lambda k: k) -> dict:
    """Max abs difference and max abs value for every tensor, and over all parameter gradients (relative)."""
    out = {}
    for k in a:
        if k == "grads":
            continue
        diff = (a[k].double() - b[k].double()).abs().max().item()
        out[k] = {"max_abs_diff": diff, "max_abs": a[k].abs().max().item()}
    worst, worst_key, only_lafa = 0.0, None, []
    for k, g in a["grads"].items():
        if key_map(k) not in b["grads"]:
            only_lafa.append(k)  # trained in lafa, a buffer in the reference
            continue
        ref = b["grads"][key_map(k)]
        rel = ((g.double() - ref.double()).abs().max() / ref.abs().max().clamp_min(1e-30)).item()
        if rel >= worst:
            worst, worst_key = rel, k
    out["grads"] = {"compared": len(a["grads"]) - len(only_lafa), "reference_grads": len(b["grads"]),
                    "lafa_only": only_lafa, "max_rel_diff": worst, "worst_param": worst_key}
    return out


def conv_flops(model: nn.Module, fn) -> int:
    """FLOPs (2 per multiply-add) of every lafa WNConv1d that `fn` runs, counted with forward hooks."""
    total = [0]

    def hook(m, inputs, output):
        w = m.weight()  # conv (out, in, k); transposed conv (in, out, k)
        positions = inputs[0].shape[-1] if m.transposed else output.shape[-1]
        total[0] += 2 * output.shape[0] * w.numel() * positions

    handles = [m.register_forward_hook(hook) for m in model.modules() if type(m).__name__ == "WNConv1d"]
    with torch.no_grad():
        fn()
    for h in handles:
        h.remove()
    return total[0]


def dit_flops(dim: int, depth: int, heads: int, cond_dim: int, frames: int, text_tokens: int, batch: int) -> int:
    """Analytic forward FLOPs of DiT-SAO (2 per multiply-add; matmuls and attention only, element-wise ops left out)."""
    n, c, f = frames + 1, text_tokens + 2, 256  # tokens with the global token; context tokens; Fourier features
    cond = (2 * (f + 1) * cond_dim + c * 2 * cond_dim**2 + 2 * cond_dim * dim + dim**2 + f * dim + dim**2
            + 64 * 64 * frames * 2 + 64 * dim * frames * 2)  # timing, cond MLP, global MLP, timestep MLP, convs, proj
    block = (n * 4 * dim**2 + 2 * n * n * dim  # self-attention: qkv + out, scores + values
             + n * 2 * dim**2 + c * 2 * cond_dim * cond_dim + 2 * n * c * dim  # cross: q + out, kv, attention
             + n * 12 * dim**2)  # SwiGLU x4: in (dim -> 8 dim), out (4 dim -> dim)
    return 2 * batch * (cond + depth * block)


def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "platform": platform.platform(),
            "load_average_at_start": list(os.getloadavg())}


def versions(site: Path) -> dict:
    ref = [d.version for d in importlib.metadata.distributions(path=[str(site)]) if d.metadata["Name"] ==
           "stable-audio-tools"]
    return {"python": platform.python_version(), "torch": torch.__version__,
            "lafa": importlib.metadata.version("lafa"), "stable-audio-tools": ref[0] if ref else None}


class LafaCases(Cases):
    """lafa's side of every case (bench/model_cases.py holds the cases, written once for both sides): the VAE's
    inference calls through `infer` (InferenceVAE, its CPU engine), its training calls and the DiT on `model`."""

    def __init__(self, model: nn.Module, inputs: dict, infer=None) -> None:
        self.model, self.inputs = model, inputs
        self.infer = model if infer is None else infer

    def encoder_out(self, audio: torch.Tensor) -> torch.Tensor:
        return self.infer.encoder_out(audio)

    def encode(self, audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.infer.encode(audio)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.infer.decode(z)

    def train_encode(self, audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model.encode(audio)

    def train_decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.model.decode(z)

    def dit(self, checkpointing: bool) -> torch.Tensor:
        self.model.checkpointing = checkpointing  # lafa's DiT checkpoints only in training
        i = self.inputs
        return self.model(i["x"], i["t"], i["text"], i["text_mask"], i["seconds_start"], i["seconds_total"])


def interleaved(cases: list[str], lafa: LafaCases, ref: Reference, rounds: int, warmup: int) -> dict:
    """Time each case once per round on each side, alternating which side goes first; warm-up rounds dropped."""
    samples = {c: {"lafa": [], "reference": []} for c in cases}
    for r in range(warmup + rounds):
        for case in cases:
            lafa.prepare(case)
            for side in ("lafa", "reference") if r % 2 == 0 else ("reference", "lafa"):
                seconds = (lafa.time(case, reps=1) if side == "lafa" else ref("time", case=case, reps=1))["seconds"][0]
                if r >= warmup:
                    samples[case][side].append(seconds)
                print(f"  round {r + 1 - warmup:>2} {case:<20} {side:<9} {seconds:8.3f} s"
                      + ("  (warm-up)" if r < warmup else ""), file=sys.stderr, flush=True)
    out = {}
    for case, s in samples.items():
        lm, rm = statistics.median(s["lafa"]), statistics.median(s["reference"])
        out[case] = {"lafa_s": lm, "reference_s": rm, "ratio": lm / rm,
                     "paired_ratio_median": statistics.median([a / b for a, b in zip(s["lafa"], s["reference"], strict=True)]),
                     "lafa_samples_s": s["lafa"], "reference_samples_s": s["reference"]}
    return out


def check(agree: dict, rtol: float, grad_rtol: float) -> bool:
    ok = all(v["max_abs_diff"] <= rtol * max(v["max_abs"], 1e-30) for k, v in agree.items() if k != "grads")
    return ok and agree["grads"]["max_rel_diff"] <= grad_rtol and agree["grads"]["compared"] > 0


def parse_matrix(spec: str) -> list[tuple[float, int]]:
    """'1x1,10x4' -> [(1.0 s, batch 1), (10.0 s, batch 4)]."""
    return [(float(a), int(b)) for a, b in (item.split("x") for item in spec.split(",") if item)]


def rel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).abs().max() / b.double().abs().max().clamp_min(1e-30)).item()


def matrix_sides(case: tuple[float, int, int], chunk_frames: int | None) -> list[str]:
    """The sides a matrix case times: lafa (chunked inference), the reference, and for clips longer than one
    window lafa on the whole clip too (the chunking overhead)."""
    frames = case[2]
    return ["lafa", "reference"] + (["lafa_whole"] if frames > (chunk_frames or frames) else [])


class MatrixGuard:
    """Memory checks and worker deaths of the inference matrix: which cases run, which were skipped or failed
    and why (reported in the JSON as {"status", "reason", ...})."""

    def __init__(self, ref: Reference, memory: MemoryModel, chunk_frames: int | None, overlap_frames: int,
                 memory_gib: float | None) -> None:
        self.ref, self.memory, self.chunk, self.overlap, self.memory_gib = ref, memory, chunk_frames, overlap_frames, memory_gib
        self.status: dict[tuple, dict] = {}  # case -> {"status": "skipped" | "failed", "reason", ...}
        self.admitted: set[tuple] = set()

    def held(self, side: str, case: tuple) -> int:
        return frames_held(side, case[2], case[1], self.chunk, self.overlap)

    def needs(self, case: tuple) -> dict[str, float]:
        return {side: self.memory.need(side, self.held(side, case)) for side in matrix_sides(case, self.chunk)}

    def runs(self, case: tuple) -> bool:
        """Whether the case (still) runs; the first time it is asked, its memory estimate is checked against the
        memory available now and a case that cannot fit is skipped."""
        if case in self.status:
            return False
        if case not in self.admitted:
            reason = check_case(self.needs(case), available_memory(self.memory_gib))
            if reason is not None:
                self.status[case] = {"status": "skipped", "reason": reason,
                                     "estimated_gib": {k: v / GIB for k, v in self.needs(case).items()}}
                print(f"  skipped {case[0]:g} s x {case[1]}: {reason}", file=sys.stderr, flush=True)
                return False
            self.admitted.add(case)
        return True

    def failed(self, case: tuple, error: WorkerDied) -> None:
        """The worker died in this case: report it with the signal, start a fresh worker for the other cases."""
        self.status[case] = {"status": "failed", "reason": str(error), "signal": error.signal,
                             "returncode": error.returncode}
        print(f"  failed {case[0]:g} s x {case[1]}: {error}; going on with a fresh worker", file=sys.stderr, flush=True)
        self.ref.restart()

    def observe(self, side: str, case: tuple, added_bytes: int | None) -> None:
        if added_bytes is not None:
            self.memory.observe(side, self.held(side, case), added_bytes)

    def reference(self, case: tuple, cmd: str, **kwargs) -> dict | None:
        """A reference command of one case; None (and the case marked failed) when the worker dies in it."""
        try:
            return self.ref(cmd, **kwargs)
        except WorkerDied as error:
            self.failed(case, error)
            return None


def bench_vae_matrix(ref: Reference, vae: OobleckVAE, tmp: Path, args, memory: MemoryModel | None = None) -> dict:
    """lafa's CPU inference engine (`InferenceVAE`: folded weight norm, fused SnakeBeta, packed convs, channels-last
    activations, tiled residual units, Winograd, chunks of 256 frames overlapping by 24) against the reference's whole-clip
    encode/decode, per clip length and batch: agreement at batch 1, then CPU and wall time interleaved per call
    (order flipped every round). Cases run smallest first; before each, its memory need (MemoryModel: measured
    on the cases before it) is checked against the memory available and a case that cannot fit is skipped; a
    case whose reference worker dies is reported failed with the worker's exit signal (bench/sizing.py)."""
    options = {"chunk_frames": args.vae_chunk_frames, "overlap_frames": args.vae_overlap_frames}
    engine = InferenceVAE(vae, **{k: v for k, v in options.items() if v is not None})
    cfg = engine.config
    chunk, overlap = cfg.chunk_frames, cfg.overlap_frames or 0
    cases = sorted([(sec, batch, round(sec * SAMPLE_RATE / vae.downsampling_ratio))
                    for sec, batch in parse_matrix(args.vae_matrix)], key=lambda c: (c[1] * c[2], c[1]))
    guard = MatrixGuard(ref, memory or MemoryModel(), chunk, overlap, getattr(args, "memory_gib", None))
    estimate = estimate_seconds(cases, lambda c: matrix_sides(c, chunk), args.warmup + args.repeats, args.threads)
    print(f"  {len(cases)} cases, about {minutes(estimate)} if all fit ({available_memory(guard.memory_gib) / GIB:.1f} "
          "GiB available now; each case is checked before it runs)", file=sys.stderr, flush=True)
    out = {"inference": dict(vars(cfg), dtype=str(cfg.dtype)), "cases": {},
           "estimated_seconds": estimate}
    with torch.no_grad():
        for case in cases:
            sec, batch, frames = case
            if batch != 1 or not guard.runs(case):
                continue
            audio, z = vae_inputs(frames, 1, 11)
            reply = guard.reference(case, "vae_matrix_outputs", frames=frames, batch=1, seed=11, path=str(tmp / "matrix.pt"))
            if reply is None:
                continue
            guard.observe("reference", case, reply.get("added_bytes"))
            theirs = torch.load(tmp / "matrix.pt")
            ours = {"encoder_raw": engine.encoder_out(audio), "decoded": engine.decode(z)}
            out["cases"][f"{sec:g}s_b1_agreement"] = {k: rel_diff(ours[k], theirs[k]) for k in ours}
            print(f"  agreement {sec:g} s: {out['cases'][f'{sec:g}s_b1_agreement']}", file=sys.stderr, flush=True)
    samples: dict[str, dict[str, list]] = {}
    # clips longer than a window: lafa's whole-clip inference too (its own packed caches), for the chunking
    # overhead = chunked CPU / whole-clip CPU
    models = {"lafa": engine, "lafa_whole": InferenceVAE(vae, **{**vars(cfg), "chunk_frames": None})}
    with torch.no_grad():
        for r in range(args.warmup + args.repeats):
            for case in cases:
                sec, batch, frames = case
                if not guard.runs(case):
                    continue
                audio, z = vae_inputs(frames, batch, 11)
                sides = matrix_sides(case, chunk)
                for op in ("encode", "decode"):
                    name = f"vae_{op}_{sec:g}s_b{batch}"
                    s = samples.setdefault(name, {side: [] for side in sides})
                    for side in sides if r % 2 == 0 else sides[::-1]:
                        if side != "reference":
                            m = models[side]
                            cpu, wall, added = measured_call(lambda a=audio, z=z, op=op, m=m: m.encode(a)
                                                             if op == "encode" else m.decode(z))
                        else:
                            reply = guard.reference(case, "time_vae", op=op, frames=frames, batch=batch, seed=11, reps=1)
                            if reply is None:
                                break
                            cpu, wall, added = reply["cpu"][0], reply["wall"][0], reply.get("added_bytes")
                        guard.observe(side, case, added)
                        if r >= args.warmup:
                            s[side].append((cpu, wall))
                        print(f"  round {r + 1 - args.warmup:>2} {name:<22} {side:<9} cpu {cpu:8.3f} s wall {wall:8.3f} s"
                              + ("  (warm-up)" if r < args.warmup else ""), file=sys.stderr, flush=True)
                    if case in guard.status:
                        break
    for case, status in guard.status.items():
        sec, batch, _ = case
        for op in ("encode", "decode"):
            samples.pop(f"vae_{op}_{sec:g}s_b{batch}", None)
            out["cases"][f"vae_{op}_{sec:g}s_b{batch}"] = status
    for name, s in samples.items():
        if not all(s.values()):  # no timed round (only warm-up asked for)
            continue
        med = {side: {"cpu_s": statistics.median(c for c, _ in v), "wall_s": statistics.median(w for _, w in v)}
               for side, v in s.items()}
        out["cases"][name] = {
            "status": "ok", "lafa": med["lafa"], "reference": med["reference"],
            "speedup_cpu": med["reference"]["cpu_s"] / med["lafa"]["cpu_s"],
            "speedup_wall": med["reference"]["wall_s"] / med["lafa"]["wall_s"],
            "paired_speedup_cpu_median": statistics.median(b[0] / a[0] for a, b in zip(s["lafa"], s["reference"],
                                                                                         strict=True)),
            "samples": s}
        if "lafa_whole" in med:
            out["cases"][name].update(lafa_whole=med["lafa_whole"],
                                      chunking_overhead_cpu=med["lafa"]["cpu_s"] / med["lafa_whole"]["cpu_s"])
    out["memory"] = {"bytes_per_frame": dict(guard.memory.bytes_per_frame), "measured": guard.memory.measured,
                     "available_gib_at_end": available_memory(guard.memory_gib) / GIB}
    return out


def bf16_error(vae: OobleckVAE, frames: int) -> dict:
    """bf16 inference against float32 on the bench's SAO weights (emulated where the CPU has no native bf16:
    the error is the arithmetic's, the speed would not be)."""
    audio, z = vae_inputs(frames, 1, 13)
    engine, bf16 = InferenceVAE(vae), InferenceVAE(vae, dtype=torch.bfloat16, allow_emulated_bf16=True)
    with torch.no_grad():
        ref_enc, ref_dec = engine.encode_mean(audio), engine.decode(z)
        enc, dec = bf16.encode_mean(audio), bf16.decode(z)
    return {"native_bf16": bf16_supported("cpu"), "frames": frames,
            "encode_mean_max_rel": rel_diff(enc, ref_enc), "decode_max_rel": rel_diff(dec, ref_dec),
            "decode_rms_rel": ((dec - ref_dec).pow(2).mean().sqrt() / ref_dec.pow(2).mean().sqrt()).item()}


def peak_matmul_flops(threads: int) -> float:
    """This CPU's fp32 matmul throughput (best of 5 2048^3 GEMMs): the denominator of the MFU figures."""
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    a @ b
    best = min(timed(lambda: a @ b)[1] for _ in range(5))
    return 2 * 2048**3 / best


def bench_vae(ref: Reference, tmp: Path, args) -> dict:
    vae = OobleckVAE()  # SAO-1.0 defaults: the same config as SAO_AUTOENCODER_CONFIG
    randomize(vae, seed=0)
    g = torch.Generator().manual_seed(1)
    samples = args.vae_frames * vae.downsampling_ratio
    inputs = {"audio": 0.3 * torch.randn(1, 2, samples, generator=g),
              "z": torch.randn(1, vae.latent_dim, args.vae_frames, generator=g), "seed": 7}
    torch.save(vae.state_dict(), tmp / "vae.pt")
    torch.save(inputs, tmp / "vae_inputs.pt")
    info = ref("setup_vae", config=SAO_AUTOENCODER_CONFIG, weights=str(tmp / "vae.pt"),
               inputs=str(tmp / "vae_inputs.pt"))
    lafa, plain = LafaCases(vae, inputs, InferenceVAE(vae)), LafaCases(vae, inputs)
    ref("outputs", path=str(tmp / "vae_ref_out.pt"))
    agree = agreement(lafa.outputs(), torch.load(tmp / "vae_ref_out.pt"))
    flops = {"vae_encode": conv_flops(vae, plain.vae_encode), "vae_decode": conv_flops(vae, plain.vae_decode)}
    timings = interleaved(["vae_encode", "vae_decode", "vae_train_step"], lafa, ref, args.repeats, args.warmup)
    for case, f in flops.items():
        timings[case].update(flops=f, lafa_flop_per_s=f / timings[case]["lafa_s"],
                             reference_flop_per_s=f / timings[case]["reference_s"])
    extra = {}
    if args.vae_matrix:
        print("VAE inference matrix (lafa's CPU inference engine vs reference whole clip)", file=sys.stderr, flush=True)
        extra["matrix"] = bench_vae_matrix(ref, vae, tmp, args)
    if args.bf16_frames:
        extra["bf16_error"] = bf16_error(vae, args.bf16_frames)
    return {**extra, "config": SAO_AUTOENCODER_CONFIG, "clip": {"samples": samples, "seconds": samples / SAMPLE_RATE,
            "channels": 2, "batch": 1, "latent_frames": args.vae_frames},
            "parameters": {"lafa": sum(p.numel() for p in vae.parameters()), "reference": info["parameters"]},
            "reference_load": {"missing_keys": info["missing_keys"], "unexpected_keys": info["unexpected_keys"]},
            "agreement": agree, "agree": check(agree, args.rtol, args.grad_rtol), "timings": timings}


def dit_setup(ref: Reference, tmp: Path, dim: int, depth: int, heads: int, cond_dim: int, frames: int,
              text_tokens: int) -> tuple[LafaCases, dict]:
    lafa_cfg, ref_cfg = dit_configs(dim, depth, heads, cond_dim)
    model = DiT(block="sao", **lafa_cfg)
    randomize(model, seed=2)
    g = torch.Generator().manual_seed(3)
    inputs = {"x": torch.randn(1, 64, frames, generator=g), "t": torch.rand(1, generator=g),
              "text": torch.randn(1, text_tokens, cond_dim, generator=g),
              "text_mask": torch.ones(1, text_tokens, dtype=torch.bool),  # the reference ignores masks (0.0.20)
              "seconds_start": torch.tensor([3.0]), "seconds_total": torch.tensor([47.0]),
              "target": torch.randn(1, 64, frames, generator=g)}
    torch.save({dit_key_to_reference(k): v for k, v in model.state_dict().items()}, tmp / "dit.pt")
    torch.save(inputs, tmp / "dit_inputs.pt")
    info = ref("setup_dit", config=ref_cfg, max_seconds=MAX_SECONDS, weights=str(tmp / "dit.pt"),
               inputs=str(tmp / "dit_inputs.pt"))
    lafa = LafaCases(model, inputs)
    ref("outputs", path=str(tmp / "dit_ref_out.pt"))
    agree = agreement(lafa.outputs(), torch.load(tmp / "dit_ref_out.pt"), dit_key_to_reference)
    result = {"config": {"lafa": lafa_cfg, "reference": ref_cfg, "frames": frames, "text_tokens": text_tokens,
                         "context_tokens": text_tokens + 2, "batch": 1},
              "parameters": {"lafa": sum(p.numel() for p in model.parameters()), "reference": info["parameters"],
                             "reference_buffers": info["buffers"]},
              "reference_load": {"missing_keys": info["missing_keys"], "unexpected_keys": info["unexpected_keys"]},
              "agreement": agree}
    return lafa, result


def bench_dit(ref: Reference, tmp: Path, args) -> dict:
    lafa, result = dit_setup(ref, tmp, args.dit_dim, args.dit_depth, args.dit_heads, 768, args.dit_frames, 128)
    result["agree"] = check(result["agreement"], args.rtol, args.grad_rtol)
    cases = ["dit_forward", "dit_train_step"] + ([] if args.quick else ["dit_train_step_ckpt"])
    result["timings"] = interleaved(cases, lafa, ref, args.repeats, args.warmup)
    fwd = dit_flops(args.dit_dim, args.dit_depth, args.dit_heads, 768, args.dit_frames, 128, 1)
    for case, t in result["timings"].items():
        f = fwd if case == "dit_forward" else 3 * fwd  # backward ~ 2x forward; recompute not counted
        t.update(flops=f, lafa_flop_per_s=f / t["lafa_s"], reference_flop_per_s=f / t["reference_s"])
    result["forward_flops"] = fwd
    result["peak_matmul_flop_per_s"] = peak = peak_matmul_flops(args.threads)
    for t in result["timings"].values():
        t.update(lafa_mfu=t["lafa_flop_per_s"] / peak, reference_mfu=t["reference_flop_per_s"] / peak)
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny clip, 1-block DiT, 1 timed round")
    p.add_argument("--repeats", type=int, default=3, help="timed rounds (each: lafa and reference once per case)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--vae-frames", type=int, default=22, help="latent frames of the clip (x 2048 samples)")
    p.add_argument("--vae-matrix", default="1x1,1x4,10x1,10x4,30x1,30x4",
                   help="inference cases SECONDSxBATCH, comma-separated ('' skips)")
    p.add_argument("--vae-chunk-frames", type=int, default=None, help="lafa's inference window (default: lafa's)")
    p.add_argument("--vae-overlap-frames", type=int, default=None, help="lafa's window overlap (default: lafa's)")
    p.add_argument("--bf16-frames", type=int, default=4, help="clip of the bf16 error measurement (0 skips)")
    p.add_argument("--skip-dit", action="store_true", help="VAE only")
    p.add_argument("--dit-dim", type=int, default=768)
    p.add_argument("--dit-depth", type=int, default=4)
    p.add_argument("--dit-heads", type=int, default=12)
    p.add_argument("--dit-frames", type=int, default=215)
    p.add_argument("--rtol", type=float, default=1e-4, help="max |lafa - reference| / max |reference| of outputs")
    p.add_argument("--grad-rtol", type=float, default=1e-3, help="the same for every parameter gradient")
    p.add_argument("--ref-site", type=Path, default=ROOT / "bench" / ".ref-site")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "models.json")
    p.add_argument("--memory-gib", type=float, default=None,
                   help="memory the cases may use (default: MemAvailable, or the cgroup's headroom if smaller, "
                        "read before each case); a case whose estimate does not fit is skipped")
    args = p.parse_args()
    if args.quick:
        args.repeats, args.vae_frames, args.dit_depth, args.dit_frames = 1, 2, 1, 64
        args.vae_matrix, args.bf16_frames = "1x1", 2
    if not (args.ref_site / "stable_audio_tools").is_dir():
        sys.exit(f"reference not installed in {args.ref_site}: run bench/setup_reference.sh")
    torch.set_num_threads(args.threads)

    report = {"machine": machine(), "versions": versions(args.ref_site),
              "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
              "method": "same random weights in both; timings interleaved lafa/reference per call, order flipped "
                        "every round; medians over rounds after warm-up; ratio = lafa / reference (< 1: lafa faster)"}
    report["estimate"] = up_front_estimate(args)
    print(f"model benchmark: about {minutes(report['estimate']['seconds'])} on this machine "
          f"({report['estimate']['basis']}); {available_memory(args.memory_gib) / GIB:.1f} GiB available, "
          "checked before each case", file=sys.stderr, flush=True)
    ref = Reference(args.ref_site, args.threads)
    started = time.perf_counter()
    try:
        with tempfile.TemporaryDirectory() as d:
            tmp = Path(d)
            parts = [("vae", "VAE (SAO-1.0 Oobleck)", lambda: bench_vae(ref, tmp, args))]
            if not args.skip_dit:
                parts += [("dit_sao_width_check", "DiT-SAO at SAO width (numerics only: 1536 wide, 24 heads, 12 kv "
                           "heads, 1 block)", lambda: sao_width_check(ref, tmp, args)),
                          ("dit", "DiT-SAO (reduced)", lambda: bench_dit(ref, tmp, args))]
            for key, title, run in parts:
                print(title, file=sys.stderr, flush=True)
                try:
                    report[key] = run()
                except WorkerDied as error:  # reported, and the other parts still run on a fresh worker
                    report[key] = {"status": "failed", "reason": str(error), "signal": error.signal}
                    print(f"  {key} failed: {error}", file=sys.stderr, flush=True)
                    ref.restart()
    finally:
        ref.close()
    report["seconds_elapsed"] = time.perf_counter() - started
    finish(report, args)


def sao_width_check(ref: Reference, tmp: Path, args) -> dict:
    _, sao_width = dit_setup(ref, tmp, 1536, 1, 24, 768, 32, 16)
    sao_width["agree"] = check(sao_width["agreement"], args.rtol, args.grad_rtol)
    return sao_width


def up_front_estimate(args) -> dict:
    """The run's length before it starts: the batch-1 parts as measured on 2 idle cores (docs/benchmarks.md:
    ~3 min with 5 rounds, ~40 s --quick) scaled by rounds, and the inference matrix from its seconds per frame."""
    chunk, overlap = args.vae_chunk_frames or 256, args.vae_overlap_frames or 24  # lafa's default window
    cases = [(sec, batch, round(sec * SAMPLE_RATE / 2048)) for sec, batch in parse_matrix(args.vae_matrix)]
    model, available = MemoryModel(), available_memory(args.memory_gib)
    unlikely = {f"{c[0]:g}x{c[1]}": reason for c in cases if (reason := check_case(
        {side: model.need(side, frames_held(side, c[2], c[1], chunk, overlap)) for side in matrix_sides(c, chunk)},
        available)) is not None}
    rounds = args.warmup + args.repeats
    fixed = (40.0 if args.quick else 180.0 * rounds / 6) * 2 / max(1, min(args.threads, 2))
    fitting = [c for c in cases if f"{c[0]:g}x{c[1]}" not in unlikely]
    matrix = estimate_seconds(fitting, lambda c: matrix_sides(c, chunk), rounds, args.threads)
    skipped = f"; likely skipped for memory: {', '.join(unlikely)}" if unlikely else ""
    return {"seconds": fixed + matrix, "batch1_seconds": fixed, "matrix_seconds": matrix, "likely_skipped": unlikely,
            "basis": f"batch-1 parts ~{minutes(fixed)}, inference matrix ~{minutes(matrix)} at the seconds per frame "
                     f"measured on 2 idle cores; a loaded machine takes longer{skipped}"}


def finish(report: dict, args) -> None:
    report["machine"]["load_average_at_end"] = list(os.getloadavg())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print_table(report)
    print(f"wrote {args.out}")


def print_table(report: dict) -> None:
    for part in ("vae", "dit_sao_width_check", "dit"):
        if report.get(part, {}).get("status") == "failed":
            print(f"{part}: failed: {report[part]['reason']}")
    vae = report.get("vae", {})
    matrix = vae.get("matrix", {}).get("cases", {})
    if matrix:
        print(f"{'inference case':<24}{'lafa cpu':>10}{'ref cpu':>10}{'x cpu':>7}{'lafa wall':>11}{'ref wall':>10}"
              f"{'x wall':>8}")
        for case, t in matrix.items():
            if "agreement" in case:
                print(f"{case:<24} max rel diff {t}")
                continue
            if t.get("status") in ("skipped", "failed"):
                print(f"{case:<24} {t['status']}: {t['reason']}")
                continue
            print(f"{case:<24}{t['lafa']['cpu_s']:>10.3f}{t['reference']['cpu_s']:>10.3f}{t['speedup_cpu']:>7.2f}"
                  f"{t['lafa']['wall_s']:>11.3f}{t['reference']['wall_s']:>10.3f}{t['speedup_wall']:>8.2f}"
                  + (f"  chunked/whole cpu {t['chunking_overhead_cpu']:.3f}" if "chunking_overhead_cpu" in t else ""))
    if "bf16_error" in vae:
        print(f"bf16 vs fp32: {vae['bf16_error']}")
    print(f"{'case':<22}{'lafa s':>10}{'ref s':>10}{'lafa/ref':>10}{'paired':>9}{'lafa GF/s':>11}{'ref GF/s':>10}")
    for part in ("vae", "dit"):
        if "timings" not in report.get(part, {}):
            continue
        for case, t in report[part]["timings"].items():
            gf = (f"{t['lafa_flop_per_s'] / 1e9:>11.2f}{t['reference_flop_per_s'] / 1e9:>10.2f}"
                  if "flops" in t else "")
            print(f"{case:<22}{t['lafa_s']:>10.3f}{t['reference_s']:>10.3f}{t['ratio']:>10.3f}"
                  f"{t['paired_ratio_median']:>9.3f}{gf}")
    for part in ("vae", "dit_sao_width_check", "dit"):
        if "agreement" not in report.get(part, {}):
            continue
        a = report[part]["agreement"]
        worst = max((v["max_abs_diff"] / max(v["max_abs"], 1e-30), k) for k, v in a.items() if k != "grads")
        print(f"{part}: agree={report[part]['agree']} worst output rel diff {worst[0]:.2e} ({worst[1]}), "
              f"grads max rel diff {a['grads']['max_rel_diff']:.2e} over {a['grads']['compared']} tensors")
    if "seconds_elapsed" in report:
        print(f"took {minutes(report['seconds_elapsed'])} (estimated {minutes(report['estimate']['seconds'])})")


if __name__ == "__main__":
    main()
