"""`lafa analyze`: spectral slope, LPI, their locality controls, correlation maps and channel ablation of
autoencoder latents and of the log-mel spectrogram of the same clips (Sec. 3, Appendices C and G), as one
JSON report, PNG figures and an HTML page. Repeated --ckpt_path/--label/--audio append; any other option given
twice is refused.

examples:
  lafa analyze --ckpt_path runs/demo/vae/checkpoints/last.ckpt --label vae \\
      --ckpt_path runs/demo/lafa/checkpoints/last.ckpt --label lafa \\
      --data 'data/demo/shards/val-{000000..000001}.tar' --num_clips 200 --out runs/demo/analysis
  lafa analyze --audio ~/music --out runs/music-mel                      # log-mel only, no checkpoint
  lafa analyze --audio ~/music --ckpt_path models/encodec_24khz --out runs/encodec   # a transformers codec
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Literal

import torch
from jsonargparse import ActionConfigFile, ArgumentParser
from tqdm import tqdm

from lafa.analysis.ablation import channel_ablation
from lafa.analysis.figures import (
    ablation_figure,
    correlation_figure,
    eigen_figure,
    permutation_figure,
    psd_figure,
    save_figure,
)
from lafa.analysis.html import analysis_page, wav_bytes, write_html
from lafa.analysis.latent_report import (
    COLUMN_DEFINITIONS,
    AnalysisSettings,
    analyze_maps,
    baseline_table,
    build_report,
    headline_table,
    output_group_size,
    summarise,
    support_lines,
    text_table,
    write_report,
)
from lafa.audio import convert
from lafa.commands.analyze_argv import distinct_labels, normalise_argv, shards_from_stage_config
from lafa.commands.options import HelpFormatter, print_device
from lafa.devices import DEVICE_HELP, resolve_device
from lafa.errors import LafaUserError
from lafa.models.log_mel import LogMel


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog="lafa analyze", description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("-c", "--config", action=ActionConfigFile, help="YAML with any of these options")
    p.add_argument("--stage_config", type=str | None, default=None,
                   help="a stage config (model/data/trainer YAML); --data defaults to its val shards")
    p.add_argument("--ckpt_path", type=str, nargs="+", default=[],
                   help="autoencoder(s): `lafa fit` VAE/LAFA checkpoint, Stable Audio Open weights, or a local "
                        "transformers EncodecModel/DacModel directory; repeated flags append; none: log-mel only")
    p.add_argument("--label", type=str, nargs="+", default=None,
                   help="names the path(s) of the --ckpt_path right before it, one label per path; a path without "
                        "one is labelled from its path (runs/x/vae/checkpoints/last.ckpt: vae)")
    p.add_argument("--data", type=str | None, default=None, help="audio shards: path, brace pattern, glob or pipe: URL")
    p.add_argument("--audio", type=str, nargs="+", default=None,
                   help="audio files instead of shards: folder(s) (recursive), file(s) or glob(s); repeated "
                        "flags append")
    p.add_argument("--sample_rate", type=int | None, default=None,
                   help="rate the clips are read at and the mel computed at (default: the first autoencoder's, "
                        "else 44100); each autoencoder gets the clips resampled to its own rate")
    p.add_argument("--channels", type=int | None, default=None,
                   help="audio channels read (default: the most any autoencoder takes, else 2)")
    p.add_argument("--codec_latent", type=Literal["pre_quant", "quantized"], default="pre_quant",
                   help="latent of a transformers codec: encoder output or after the quantiser")
    p.add_argument("--num_clips", type=int, default=200, help="clips analysed (Sec. 3: 200)")
    p.add_argument("--seconds", type=float, default=30.0, help="clip length from each sample's start (Sec. 5: 30 s)")
    p.add_argument("--out", type=str, required=True, help="folder for report.json and the figures")
    p.add_argument("--batch_size", type=int, default=4,
                   help="clips encoded at once (clips of equal length only, so no padding enters an encoder)")
    p.add_argument("--device", type=str, default="auto", help=DEVICE_HELP)
    p.add_argument("--steps", type=int | None, default=None, help="flow decoder steps for the ablation decode")
    p.add_argument("--ablation_clips", type=int, default=1, help="clips with an ablation grid (0: none)")
    p.add_argument("--ablation_seconds", type=float, default=5.0, help="excerpt length decoded in the ablation")
    p.add_argument("--ablation_noise_std", type=float, default=0.1, help="std of the noise replacing a channel")
    p.add_argument("--ablation_reference", type=Literal["ground_truth", "reconstruction"], default="ground_truth",
                   help="ground_truth (Appendix G) or reconstruction")
    p.add_argument("--listen_clips", type=int, default=2,
                   help="clips written as WAV for report.html: the input excerpt and each autoencoder's reconstruction")
    p.add_argument("--listen_seconds", type=float, default=5.0, help="length of those excerpts")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the ablation noise and decodes, the baselines' permutations and the bootstrap")
    p.add_dataclass_arguments(AnalysisSettings, "analysis")
    p.add_class_arguments(LogMel, "mel", skip={"sample_rate"})
    return p


def load_any_autoencoder(path: str, codec_latent: str):
    """A transformers codec directory, else `lafa.stages.loading.load_autoencoder` (lafa checkpoint, bundle folder
    or Hub repo id, SAO weights)."""
    from lafa.analysis.codecs import is_transformers_codec, load_transformers_codec
    from lafa.bundles import is_bundle
    from lafa.hub import is_sao_folder, looks_like_repo_id

    if is_transformers_codec(path) and not is_bundle(path):
        try:
            return load_transformers_codec(path, codec_latent)
        except (ValueError, ImportError) as exc:
            raise LafaUserError(f"{path}: {exc}") from exc
    local = Path(path).is_file() or is_bundle(path) or is_sao_folder(Path(path))
    if not local and (Path(path).exists() or not looks_like_repo_id(path)):
        raise LafaUserError(f"--ckpt_path {path}: neither a checkpoint file nor a transformers model directory; "
                            "give a `lafa fit` VAE/LAFA checkpoint, SAO weights or a codec folder")
    from lafa.stages.loading import load_autoencoder

    return load_autoencoder(path)


def read_clips(data: str | list[str], num_clips: int, sample_rate: int, channels: int, seconds: float,
               ) -> list[tuple[str, torch.Tensor]]:
    """The first num_clips samples of the shards in order, each from its start, at most `seconds` long:
    (key, (channels, S_i) real audio) each. Decoding is lafa.data's validation path (no random crop)."""
    from webdataset.tariterators import tarfile_samples

    from lafa.data.datamodule import AudioDecoder
    from lafa.data.stream import expand_shards

    decoder = AudioDecoder(round(seconds * sample_rate), sample_rate, channels, seed=0, fresh_captions=False)
    clips = []
    with tqdm(total=num_clips, desc="reading clips", unit="clip") as bar:
        for sample in tarfile_samples({"url": u} for u in expand_shards(data)):
            example = decoder(sample, None, 0)
            real = int(example["keep"].sum())
            clips.append((example["id"], example["audio"][:, :real]))
            bar.update()
            if len(clips) == num_clips:
                break
    if not clips:
        raise LafaUserError(f"--data {data}: no samples in these shards; check the pattern")
    return clips


@torch.no_grad()
def encode_clips(autoencoder, clips: list[torch.Tensor], batch_size: int, device: torch.device,
                 desc: str) -> list[torch.Tensor]:
    """(io, S_i) clips -> (C, S_i // ratio) latents, in the clips' order.

    Clips are cut to whole frames and batched only with clips of the same length, so no padding reaches
    an encoder that mixes frames (convolutions, attention)."""
    ratio = autoencoder.downsampling_ratio
    frames = [c.shape[-1] // ratio for c in clips]
    by_length: dict[int, list[int]] = {}
    for i, f in enumerate(frames):
        if f == 0:
            raise ValueError(f"clip {i} has {clips[i].shape[-1]} samples, less than one latent frame ({ratio})")
        by_length.setdefault(f, []).append(i)
    batches = [idx[j : j + batch_size] for idx in by_length.values() for j in range(0, len(idx), batch_size)]
    latents: list[torch.Tensor | None] = [None] * len(clips)
    for idx in tqdm(batches, desc=desc, unit="batch"):
        batch = torch.stack([clips[i][:, : frames[i] * ratio] for i in idx])  # (b, io, frames * ratio)
        z = autoencoder.encode(batch.to(device)).float().cpu()  # (b, C, frames)
        for k, i in enumerate(idx):
            latents[i] = z[k]
    return latents


@torch.no_grad()
def write_listening_clips(clips: list[tuple[str, torch.Tensor]], sample_rate: int, autoencoders: dict, args,
                          device: torch.device, folder: Path) -> tuple[dict[str, list[str]], dict[str, str]]:
    """WAV excerpts for the HTML page: the input of each of the first --listen_clips clips and each
    autoencoder's reconstruction decode(encode(x)) of it. Returns (group -> paths, path -> the clip it comes
    from: its source file or shard key)."""
    audio: dict[str, list[str]] = {}
    sources: dict[str, str] = {}
    for i, (key, clip) in enumerate(clips[: args.listen_clips]):
        excerpt = clip[:, : round(args.listen_seconds * sample_rate)]
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"reference_{i}.wav"
        path.write_bytes(wav_bytes(excerpt.numpy(), sample_rate))
        audio.setdefault("reference", []).append(str(path))
        sources[str(path)] = key
        for label, ae in autoencoders.items():
            x = convert(excerpt, sample_rate, ae.sample_rate, ae.io_channels)
            x = x[:, : x.shape[-1] // ae.downsampling_ratio * ae.downsampling_ratio]
            if x.shape[-1] == 0:
                continue
            y = ae.decode(ae.encode(x[None].to(device)), steps=args.steps)[0].float().cpu()
            path = folder / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', label)}_{i}.wav"
            path.write_bytes(wav_bytes(y.numpy(), ae.sample_rate))
            audio.setdefault(label, []).append(str(path))
            sources[str(path)] = key
    return audio, sources


def _analyze(label: str, maps: list[torch.Tensor], settings: AnalysisSettings, seed: int,
             group_size: int | None = None) -> dict:
    try:
        return analyze_maps(maps, settings, seed, group_size)
    except ValueError as exc:  # constant or non-finite latents, clips shorter than a window: name the representation
        raise LafaUserError(f"cannot analyse '{label}': {exc}") from exc


def print_summary(results: dict[str, dict], settings: AnalysisSettings) -> None:
    """The console's account: the measures, the baselines, what each rests on, warnings, the column legend."""
    summary = {k: summarise(r) for k, r in results.items()}
    print(text_table(*headline_table(summary)))
    print()
    print(text_table(*baseline_table(summary)))
    print()
    for label, r in results.items():
        for line in support_lines(label, r["controls"]):
            print(line)
    print(f"intervals: {settings.confidence:.0%} percentile bootstrap over clips ({settings.bootstrap} resamples), "
          f"only where at least {settings.min_clips} effective clips carry a measure; baselines: mean over "
          f"{settings.permutations} channel orders each; excess = measured - baseline")
    print("columns: " + "; ".join(f"{h}: {COLUMN_DEFINITIONS[h].split(':')[0].split(' (')[0]}"
                                  for h in ("PR", "eig. slope", "PC t-slope", "group order", "within group")))
    for label, r in results.items():
        for warning in r.get("warnings", []):
            print(f"warning: {label}: {warning}")


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(normalise_argv(argv))
    if args.label and len(args.label) != len(args.ckpt_path):  # only a --config can get here (normalise_argv pairs)
        raise LafaUserError(f"label: {len(args.label)} labels for {len(args.ckpt_path)} ckpt_path entries in the "
                            "config; give one label per path, or none")
    labels = args.label or distinct_labels(args.ckpt_path, [None] * len(args.ckpt_path))
    if "mel" in labels or len(set(labels)) != len(labels):
        raise LafaUserError(f"--label {' '.join(labels)}: labels must be distinct and not 'mel'; rename them")
    if args.data and args.audio:
        raise LafaUserError("--data and --audio: both given; pass --data (shards) or --audio (audio files), not both")
    data = args.data or (shards_from_stage_config(args.stage_config) if args.stage_config and not args.audio else None)
    if data is None and not args.audio:
        raise LafaUserError("no audio given; pass --data (audio shards), --audio (audio files) or a stage config "
                             "naming shards")
    if data is not None and Path(data).is_dir() and not any(Path(data).glob("*.tar")):
        raise LafaUserError(f"--data {data}: holds no .tar shards; for a folder of audio files use --audio {data}")
    settings = AnalysisSettings(**args.analysis.as_dict())
    device = resolve_device(args.device)
    print_device(device)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()

    autoencoders = {}
    for label, path in zip(labels, args.ckpt_path, strict=True):
        ae = load_any_autoencoder(path, args.codec_latent)
        autoencoders[label] = ae.to(device).eval() if isinstance(ae, torch.nn.Module) else ae
    first = next(iter(autoencoders.values()), None)
    sample_rate = args.sample_rate or (first.sample_rate if first is not None else 44100)
    channels = args.channels or max((a.io_channels for a in autoencoders.values()), default=2)
    skipped = []
    if args.audio:
        from lafa.analysis.audio_files import read_audio_clips

        clips, skipped = read_audio_clips(args.audio, args.num_clips, sample_rate, channels, args.seconds)
        for s in skipped:
            print(f"skipped {s['path']}: {s['reason']}")
        if not clips:
            raise LafaUserError(f"--audio {' '.join(args.audio)}: no usable audio file ({len(skipped)} skipped, "
                                 "reasons above); give folders or files of audio")
    else:
        clips = read_clips(data, args.num_clips, sample_rate, channels, args.seconds)
    audio = [c for _, c in clips]

    mel_settings = args.mel.as_dict()
    mel = LogMel(sample_rate=sample_rate, **mel_settings)
    results = {"mel": _analyze("mel", [mel(a[None])[0] for a in audio], settings, args.seed)}
    for label, ae in autoencoders.items():
        own = [convert(a, sample_rate, ae.sample_rate, ae.io_channels) for a in audio]
        latents = encode_clips(ae, own, args.batch_size, device, f"encoding ({label})")
        results[label] = _analyze(label, latents, settings, args.seed, output_group_size(ae))
    print_summary(results, settings)

    panels = {k: {**r, "lam": settings.lam} for k, r in results.items()}  # lam: correlation_figure's titles
    figures = {name: str(save_figure(draw(panels), out / f"{name}.png")) for name, draw in (
        ("psd", psd_figure), ("correlation", correlation_figure), ("permutation", permutation_figure),
        ("eigen", eigen_figure))}
    ablation = {}
    for label, ae in autoencoders.items():
        ae_mel = mel if ae.sample_rate == sample_rate else LogMel(sample_rate=ae.sample_rate, **mel_settings)
        excerpt = round(args.ablation_seconds * ae.sample_rate)
        for i, (key, clip) in enumerate(clips[: args.ablation_clips]):
            clip = convert(clip, sample_rate, ae.sample_rate, ae.io_channels)
            res = channel_ablation(ae, clip[:, :excerpt].to(device), ae_mel, args.ablation_noise_std,
                                   args.ablation_reference, args.batch_size, args.steps, args.seed + i)
            name = f"ablation_{label}_{i}"
            figures[name] = str(save_figure(ablation_figure(res["residuals"].numpy(), f"{label} ({key})"),
                                            out / f"{name}.png"))
            ablation.setdefault(label, []).append({"clip": key, "energy": res["energy"].tolist(),
                                                   "baseline_energy": float(res["baseline"].abs().mean())})

    report = build_report(results, settings, {
        "ckpt_path": dict(zip(labels, args.ckpt_path, strict=True)), "data": data, "audio": args.audio,
        "num_clips": len(clips), "seconds": args.seconds, "sample_rate": sample_rate, "channels": channels,
        "codec_latent": args.codec_latent, "mel": mel_settings,
        "autoencoders": {label: {"class": type(ae).__name__, "sample_rate": ae.sample_rate,
                                 "io_channels": ae.io_channels, "latent_dim": ae.latent_dim,
                                 "downsampling_ratio": ae.downsampling_ratio} for label, ae in autoencoders.items()},
        "ablation": {"noise_std": args.ablation_noise_std, "reference": args.ablation_reference,
                     "seconds": args.ablation_seconds, "steps": args.steps},
    })
    listened, sources = write_listening_clips(clips, sample_rate, autoencoders, args, device, out / "audio")
    report.update(ablation=ablation, clips=[key for key, _ in clips], skipped=skipped, audio=listened,
                  audio_sources=sources, html=str(out / "report.html"), figures=figures,
                  seconds_elapsed=round(time.time() - started, 2))
    path = write_report(report, out / "report.json")
    write_html(analysis_page(json.loads(path.read_text())), report["html"])
    print(f"report: {path}\npage:   {report['html']}")
    return 0
