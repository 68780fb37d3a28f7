"""`lafa evaluate --generated DIR --reference DIR|STATS --out report.json`: FD_openl3, KL_PaSST and CLAP score of
any folder of audio (files named <prompt id>.<ext>), as Stability-AI's stable-audio-metrics computes them, from
local weight files; always also the offline fd_mel (log-mel Frechet distance, not FD_openl3). See docs/metrics.md."""

from __future__ import annotations

import json
from pathlib import Path

from jsonargparse import ActionYesNo, ArgumentParser

from lafa.metrics.batched import Batching
from lafa.metrics.generation import evaluate_folders, table_row


def read_prompts(path: str | Path) -> dict[str, str]:
    """prompts.json: {id: text}, or a list of {"id": ..., "prompt"/"caption"/"text": ...} records."""
    data = json.loads(Path(path).read_text())
    if isinstance(data, dict) and all(isinstance(v, str) for v in data.values()):
        return {str(k): v for k, v in data.items()}
    if isinstance(data, list):
        out = {}
        for i, rec in enumerate(data):
            text = next(
                (rec[k] for k in ("prompt", "caption", "text") if isinstance(rec, dict) and k in rec), None
            )
            if text is None or "id" not in rec:
                raise ValueError(f"{path}: record {i} needs 'id' and one of prompt/caption/text")
            out[str(rec["id"])] = text
        return out
    raise ValueError(f"{path}: expected {{id: text}} or a list of {{id, prompt}} records")


def main(argv: list[str]) -> int:
    parser = ArgumentParser(prog="lafa evaluate", description=__doc__)
    parser.add_argument("--config", action="config")
    parser.add_argument("--generated", type=str, required=True, help="folder of generated audio, <id>.wav")
    parser.add_argument(
        "--reference",
        type=str,
        required=True,
        help="folder of reference audio (<id>.<ext>) or a reference statistics file (.npz)",
    )
    parser.add_argument("--prompts", type=str, default=None, help="prompts.json for the CLAP score")
    parser.add_argument(
        "--openl3_weights", type=str, default=None, help="openl3_audio_mel256_{music,env}-v0_4_0.h5"
    )
    parser.add_argument("--passt_weights", type=str, default=None, help="passt-s-f128-p16-s10-ap.476-swa.pt")
    parser.add_argument(
        "--clap_dir", type=str, default=None, help="local HF CLAP directory (laion/clap-htsat-fused)"
    )
    parser.add_argument("--content_type", type=str, default="music", choices=["music", "env"])
    parser.add_argument(
        "--openl3_input_repr",
        type=str,
        default="mel256",
        choices=["mel256", "mel128", "linear"],
        help="OpenL3 input representation (the paper's FD_openl3: mel256); the weight file must hold it",
    )
    parser.add_argument("--openl3_embedding_size", type=int, default=512, choices=[512, 6144])
    parser.add_argument(
        "--openl3_channel_mode",
        type=str,
        default="stereo",
        choices=["stereo", "mono"],
        help="stable-audio-metrics path: stereo = batched, channels embedded separately (its published "
        "statistics); mono = its non-batched default, down-mixed (see docs/metrics.md)",
    )
    parser.add_argument(
        "--openl3_fft",
        type=str,
        default="reference",
        choices=["reference", "exact"],
        help="OpenL3 STFT: reference = TensorFlow 2.13's, bit for bit, as the reference code computes it; "
        "exact = torch.fft (differs by ~10%% in FD at 44.1 kHz, see docs/metrics.md)",
    )
    parser.add_argument(
        "--allow_random_weights",
        action=ActionYesNo,
        default=False,
        help="run metrics without weights on random-weight models (demo; NOT comparable)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--stats_cache", type=str, default=None, help="where to cache the reference statistics"
    )
    parser.add_argument(
        "--embedding_cache",
        type=str,
        default=None,
        help="folder of per-file OpenL3/PaSST embeddings keyed by file content and model (a set is embedded once)",
    )
    parser.add_argument("--openl3_batch_windows", type=int, default=64,
                        help="1 s OpenL3 windows per forward, across clips (docs/benchmarks.md, evaluation throughput)")
    parser.add_argument("--passt_batch_windows", type=int, default=8, help="10 s PaSST windows per forward")
    parser.add_argument("--clap_batch_clips", type=int, default=8, help="clips per CLAP audio forward")
    parser.add_argument("--decode_workers", type=int, default=1,
                        help="threads decoding/resampling files ahead of the models (0: in the main thread)")
    parser.add_argument("--per_clip", action=ActionYesNo, default=False,
                        help="embed every clip alone, decoded in the main thread (the unbatched path; same results)")
    parser.add_argument("--device", type=str, default=None, help="cuda or cpu (default: cuda when available)")
    parser.add_argument("--out", type=str, required=True, help="report .json")
    args = parser.parse_args(argv)
    result = evaluate_folders(
        args.generated,
        args.reference,
        prompts=read_prompts(args.prompts) if args.prompts else None,
        openl3_weights=args.openl3_weights,
        passt_weights=args.passt_weights,
        clap_dir=args.clap_dir,
        content_type=args.content_type,
        openl3_input_repr=args.openl3_input_repr,
        openl3_embedding_size=args.openl3_embedding_size,
        openl3_channel_mode=args.openl3_channel_mode,
        openl3_fft=args.openl3_fft,
        allow_random_weights=args.allow_random_weights,
        seed=args.seed,
        stats_cache=args.stats_cache,
        device=args.device,
        embedding_cache=args.embedding_cache,
        batching=Batching.per_clip() if args.per_clip else Batching(
            openl3_windows=args.openl3_batch_windows, passt_windows=args.passt_batch_windows,
            clap_clips=args.clap_batch_clips, workers=args.decode_workers),
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(table_row(result))
    for name, metric in result["metrics"].items():
        speed = metric.get("throughput")
        if speed and speed["clips_per_second"]:
            print(f"{name}: {speed['clips_embedded']} clips in {speed['seconds']:.1f} s "
                  f"({speed['clips_per_second']:.2f} clips/s)")  # fmt: skip
    for warning in result["warnings"]:
        print(f"WARNING {warning}")
    print(f"wrote {out}")
    return 0
