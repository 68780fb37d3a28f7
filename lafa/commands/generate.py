"""`lafa generate`: text-to-audio from a DiT checkpoint (DiT sampling, then the autoencoder's decoder).

    lafa generate --ckpt_path runs/dit/checkpoints/last.ckpt --prompt "warm analog synth pad" \
        --seconds 10 --steps 50 --cfg_scale 7 --out out.wav
    lafa generate --ckpt_path X --prompts prompts.txt --out generated/     # one prompt per line

A prompt file writes `<out>/<index>_<slug>.wav` for each line and `<out>/prompts.json` (file -> prompt).
Clips are 44.1 kHz stereo (the autoencoder's rate and channels), exactly `seconds` long, conditioned on
seconds_total = ceil(seconds) and `--seconds_start` (Stable Audio's timing, as in training). `--seed` seeds
every draw on a CPU generator (the DiT's initial noise, then LAFA's decoder noise): a seed gives the same clips
on every device. Batch i of `--batch_size` prompts uses seed + i.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from jsonargparse import ArgumentParser
from tqdm import tqdm

from lafa.audio import save_audio


def read_prompts(path: str | Path) -> list[str]:
    """Non-empty lines of a text file, or the strings of a JSON list."""
    path = Path(path)
    if not path.is_file():
        raise SystemExit(f"lafa generate: prompt file not found: {path}")
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        prompts = json.loads(text)
        if not isinstance(prompts, list) or not all(isinstance(p, str) for p in prompts):
            raise SystemExit(f"lafa generate: {path} must hold a JSON list of strings")
    else:
        prompts = [line.strip() for line in text.splitlines() if line.strip()]
    if not prompts:
        raise SystemExit(f"lafa generate: {path} holds no prompts")
    return prompts


def _slug(text: str, n: int = 40) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")[:n] or "prompt"


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="lafa generate", description=__doc__)
    parser.add_argument("--config", action="config")
    parser.add_argument("--ckpt_path", type=str, required=True, help="a `lafa fit` checkpoint of the DiT stage")
    parser.add_argument("--prompt", type=str | None, default=None, help="one prompt (writes --out as a file)")
    parser.add_argument("--prompts", type=str | None, default=None, help="text file, one prompt per line")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each clip")
    parser.add_argument("--seconds_start", type=float, default=0.0,
                        help="timing condition: where in a source file the clip starts (training crops start mid-file)")
    parser.add_argument("--steps", type=int | None, default=None, help="sampler steps (default: the stage's)")
    parser.add_argument("--cfg_scale", type=float | None, default=None, help="guidance (default: the stage's)")
    parser.add_argument("--sampler", type=str | None, default=None, help="euler|heun (rf), dpmpp_2m|ddim (v)")
    parser.add_argument("--decode_steps", type=int | None, default=None, help="LAFA flow-decoder steps")
    parser.add_argument("--seed", type=int, default=0,
                        help="seeds every draw (DiT noise, LAFA decoder noise) on a CPU generator: same on every device")
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--autoencoder_ckpt", type=str | None, default=None,
                        help="use this autoencoder file instead of the one the checkpoint names")
    parser.add_argument("--device", type=str, default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=str, required=True, help="output .wav (--prompt) or folder (--prompts)")
    return parser


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    if (args.prompt is None) == (args.prompts is None):
        raise SystemExit("lafa generate: give exactly one of --prompt or --prompts")
    if args.seconds <= 0:
        raise SystemExit(f"lafa generate: --seconds must be positive, got {args.seconds}")
    if args.seconds_start < 0:
        raise SystemExit(f"lafa generate: --seconds_start must be >= 0, got {args.seconds_start}")
    if not Path(args.ckpt_path).is_file():
        raise SystemExit(f"lafa generate: checkpoint not found: {args.ckpt_path}")
    from lafa.stages.loading import load_stage

    overrides = {"autoencoder_ckpt": args.autoencoder_ckpt} if args.autoencoder_ckpt else {}
    stage = load_stage(args.ckpt_path, **overrides).to(args.device)
    if not hasattr(stage, "generate"):
        raise SystemExit(f"lafa generate: {args.ckpt_path} is a {type(stage).__name__} checkpoint, not a DiT stage")
    prompts = [args.prompt] if args.prompt is not None else read_prompts(args.prompts)
    sample_rate = stage.autoencoder.sample_rate
    kwargs = dict(steps=args.steps, cfg_scale=args.cfg_scale, sampler=args.sampler)

    clips = []
    for i in tqdm(range(0, len(prompts), args.batch_size), desc="generate", disable=len(prompts) <= args.batch_size):
        batch = prompts[i: i + args.batch_size]
        clips += stage.generate(batch, args.seconds, args.seconds_start, decode_steps=args.decode_steps, seed=args.seed + i,
                                progress=len(prompts) <= args.batch_size, **kwargs)
    if args.prompt is not None:
        save_audio(args.out, clips[0], sample_rate)
        print(f"wrote {args.out} ({args.seconds:g} s, {sample_rate} Hz, {clips[0].shape[0]} channels)")
        return 0
    out = Path(args.out)
    names = {}
    for i, (prompt, clip) in enumerate(zip(prompts, clips, strict=True)):
        name = f"{i:04d}_{_slug(prompt)}.wav"
        save_audio(out / name, clip, sample_rate)
        names[name] = prompt
    (out / "prompts.json").write_text(json.dumps(names, indent=2))
    print(f"wrote {len(clips)} clips to {out}")
    return 0
