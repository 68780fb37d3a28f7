"""`lafa evaluate`: FD_openl3, KL_PaSST and CLAP score of any folder of audio (files named <id>.<ext>), as
Stability-AI's stable-audio-metrics computes them, from local weight files; always also the offline fd_mel
(log-mel Frechet distance, not FD_openl3). See docs/metrics.md.

examples:
  lafa evaluate --generated runs/x/generated --reference data/test_audio --out report.json
  lafa evaluate --generated runs/x/generated --reference data/test_audio --prompts runs/x/prompts.json \\
      --openl3_weights openl3_audio_mel256_music-v0_4_0.h5 --passt_weights passt-s-f128-p16-s10-ap.476-swa.pt \\
      --clap_dir clap-htsat-fused/ --stats_cache ref_stats.npz --out report.json
  lafa evaluate --generated runs/y/generated --reference ref_stats.npz --out y.json   # cached reference

Every input is checked before anything is embedded: the folders, their ids (a generated and a reference file
pair by id), the prompts, the weight files, and every audio file, decoded in full. Sets whose ids only partly
match are refused unless --allow_unpaired; the console says what each metric uses and why a metric is not
computed. The options below are evaluate_folders' arguments (lafa.metrics.generation), plus batching and --out.
"""

from __future__ import annotations

import inspect
import json
import os
from pathlib import Path

from jsonargparse import ActionYesNo, ArgumentParser

from lafa.commands.options import add_yes_no_flags, command_parser, parse
from lafa.errors import BadInput
from lafa.metrics.batched import Batching
from lafa.metrics.folders import read_prompts
from lafa.metrics.generation import evaluate_folders, table_row

__all__ = ["build_parser", "main", "read_prompts"]

FLAGS = ["allow_random_weights", "allow_unpaired"]
NOT_OPTIONS = {"batching", "log"}  # evaluate_folders arguments the command line sets through the options below
BATCHING_OPTIONS = {  # option -> (Batching field, help)
    "openl3_batch_windows": ("openl3_windows", "1 s OpenL3 windows per forward, across clips (docs/benchmarks.md, "
                                               "evaluation throughput)"),
    "passt_batch_windows": ("passt_windows", "10 s PaSST windows per forward, across clips"),
    "clap_batch_clips": ("clap_clips", "clips per CLAP audio forward"),
    "decode_workers": ("workers", "threads decoding and resampling files ahead of the models (0: in the main "
                                  "thread)"),
}


def build_parser() -> ArgumentParser:
    parser = command_parser("lafa evaluate", __doc__)
    parser.add_function_arguments(evaluate_folders, skip=NOT_OPTIONS | set(FLAGS))
    add_yes_no_flags(parser, evaluate_folders, FLAGS)
    defaults = Batching()
    for option, (field, help_) in BATCHING_OPTIONS.items():
        parser.add_argument(f"--{option}", type=int, default=getattr(defaults, field), help=help_)
    parser.add_argument("--per_clip", action=ActionYesNo, default=False,
                        help="embed every clip alone, decoded in the main thread (the unbatched path; same results)")
    parser.add_argument("--out", type=str, required=True, help="the report to write (.json)")
    return parser


def _check_out(out: Path) -> None:
    if out.is_dir():
        raise BadInput(f"--out {out}", "is a folder", "give the report's file name, e.g. --out report.json")
    parent = next((p for p in out.parents if p.exists()), Path("."))
    if not parent.is_dir() or not os.access(parent, os.W_OK):
        raise BadInput(f"--out {out}", f"{parent} is not a writable folder", "write the report somewhere else")


def main(argv: list[str]) -> int:
    args = parse(build_parser(), argv).as_dict()
    out = Path(args["out"])
    _check_out(out)
    batching = Batching.per_clip() if args["per_clip"] else Batching(
        **{field: args[option] for option, (field, _) in BATCHING_OPTIONS.items()})
    arguments = {k: args[k] for k in inspect.signature(evaluate_folders).parameters if k in args}
    result = evaluate_folders(**arguments, batching=batching)  # it resolves and prints the device
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(result, indent=2))
    os.replace(tmp, out)
    print(table_row(result))
    for name, metric in result["metrics"].items():
        speed = metric.get("throughput")
        if speed and speed["clips_per_second"]:
            print(f"{name}: {speed['clips_embedded']} clips in {speed['seconds']:.1f} s "
                  f"({speed['clips_per_second']:.2f} clips/s)")  # fmt: skip
        elif "skipped" in metric:
            print(f"{name}: n/a: {metric['skipped']}")
    for warning in result["warnings"]:
        print(f"WARNING {warning}")
    print(f"wrote {out}")
    return 0
