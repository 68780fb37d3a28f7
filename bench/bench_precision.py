"""Does CPU-scale training run faster in bf16-mixed than in fp32 on this machine? The decision behind the tiny
configs' `trainer.precision` (configs/tiny/*.yaml), measured, not assumed.

    .venv/bin/python bench/bench_precision.py [--rounds 5] [--threads 2]

Times one training step (forward, loss, backward, AdamW step) of each tiny config's model at its batch and clip
size, in float32 and under `torch.autocast("cpu", dtype=torch.bfloat16)` (what Lightning's `bf16-mixed` does on
CPU), interleaved per round with the order flipped every round; medians of CPU time and wall time after one
warm-up round. Writes bench/results/precision.json with the CPU's bf16 capability, ratios bf16 / fp32 and the
verdict per model (bf16-mixed only where its median CPU time is at least 5% lower and it won every round).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from lafa.models.dit import DiT
from lafa.models.lafa import Lafa
from lafa.models.oobleck import OobleckVAE
from lafa.models.vae_inference import bf16_supported

ROOT = Path(__file__).resolve().parent.parent


def vae_case():
    """configs/tiny/vae.yaml: channels 8, batch 2 x 16384 samples (reconstruction + KL; no GAN losses)."""
    model = OobleckVAE(channels=8)
    audio = 0.3 * torch.randn(2, 2, 16384)

    def loss():
        z, kl = model.encode(audio)
        return (model.decode(z) - audio).abs().mean() + 1e-4 * kl
    return model, loss


def lafa_case():
    """configs/tiny/lafa.yaml: dims 64, depth 2, 4 heads, batch 4 x 16 latent frames of 64 channels."""
    model = Lafa(encoder_dim=64, encoder_depth=2, encoder_heads=4, decoder_dim=64, decoder_depth=2, decoder_heads=4)
    z0 = torch.randn(4, 64, 16)
    mask = torch.rand(4, 64) < 0.5

    def loss():
        return model.loss(z0, mask)
    return model, loss


def dit_case():
    """configs/tiny/dit_sao.yaml: dim 64, depth 2, 4 heads, cond 64, batch 4 x 32 frames, 32 text tokens."""
    model = DiT(block="sao", io_channels=64, dim=64, depth=2, heads=4, text_dim=384, cond_dim=64)
    x, target = torch.randn(4, 64, 32), torch.randn(4, 64, 32)
    t, text = torch.rand(4), torch.randn(4, 32, 384)
    text_mask = torch.ones(4, 32, dtype=torch.bool)
    start, total = torch.zeros(4), torch.full((4,), 1.5)

    def loss():
        return (model(x, t, text, text_mask, start, total) - target).pow(2).mean()
    return model, loss


CASES = {"vae": vae_case, "lafa": lafa_case, "dit_sao": dit_case}


def step(model, loss, opt, bf16: bool) -> tuple[float, float]:
    t0, c0 = time.perf_counter(), time.process_time()
    opt.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        value = loss()
    value.backward()
    opt.step()
    return time.process_time() - c0, time.perf_counter() - t0


def verdict(median_ratio: float, paired: list[float]) -> str:
    """bf16-mixed only for a clear win: median CPU time >= 5% lower and faster in every interleaved round."""
    return "bf16-mixed" if median_ratio < 0.95 and all(r < 1 for r in paired) else "32-true"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=3, help="steps per timed sample")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "precision.json")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    report = {"machine": {"cpu": next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text()
                                       .splitlines() if ln.startswith("model name")), platform.processor()),
                          "cores": os.cpu_count(), "native_bf16": bf16_supported("cpu"),
                          "load_average_at_start": list(os.getloadavg())},
              "versions": {"python": platform.python_version(), "torch": torch.__version__},
              "settings": {k: str(v) for k, v in vars(args).items()}, "cases": {}}
    for name in args.cases:
        model, loss = CASES[name]()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        samples = {"fp32": [], "bf16": []}
        for r in range(args.rounds + 1):
            for mode in ("fp32", "bf16") if r % 2 == 0 else ("bf16", "fp32"):
                cpu = wall = 0.0
                for _ in range(args.steps):
                    c, w = step(model, loss, opt, mode == "bf16")
                    cpu, wall = cpu + c, wall + w
                if r > 0:  # round 0 is the warm-up
                    samples[mode].append((cpu / args.steps, wall / args.steps))
                print(f"  {name:<8} round {r} {mode}: cpu {cpu / args.steps:.4f} s wall {wall / args.steps:.4f} s",
                      file=sys.stderr, flush=True)
        med = {m: {"cpu_s": statistics.median(c for c, _ in s), "wall_s": statistics.median(w for _, w in s)}
               for m, s in samples.items()}
        ratio = med["bf16"]["cpu_s"] / med["fp32"]["cpu_s"]
        paired = [b[0] / f[0] for f, b in zip(samples["fp32"], samples["bf16"], strict=True)]
        report["cases"][name] = {**med, "bf16_over_fp32_cpu": ratio, "paired_cpu_ratios": paired,
                                 "bf16_over_fp32_wall": med["bf16"]["wall_s"] / med["fp32"]["wall_s"],
                                 "verdict": verdict(ratio, paired), "samples": samples}
        print(f"{name:<8} fp32 {med['fp32']['cpu_s']:.4f} s  bf16 {med['bf16']['cpu_s']:.4f} s CPU  "
              f"bf16/fp32 {ratio:.2f} -> {report['cases'][name]['verdict']}")
    report["machine"]["load_average_at_end"] = list(os.getloadavg())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
