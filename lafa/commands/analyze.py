"""`lafa analyze`: spectral slope, LPI, their locality controls, correlation maps and channel ablation of
autoencoder latents and of the log-mel spectrogram of the same clips (Sec. 3, Appendices C and G), as one
JSON report, PNG figures and an HTML page.

    lafa analyze --ckpt_path runs/demo/vae/checkpoints/last.ckpt --label vae \
                 --ckpt_path runs/demo/lafa/checkpoints/last.ckpt --label lafa \
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
import yaml
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
from lafa.analysis.html import analysis_page, write_html
from lafa.analysis.mel import LogMel
from lafa.analysis.report import (
    AnalysisSettings,
    analyze_maps,
    build_report,
    measures_table,
    summarise,
    text_table,
    write_report,
)

STAGE_CONFIG_KEYS = ("model", "data", "trainer")
PAIRED_FLAGS = ("--ckpt_path", "--label")


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog="lafa analyze", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", action=ActionConfigFile, help="YAML with any of these options")
    p.add_argument("--stage_config", type=str | None, default=None,
                   help="a stage config (model/data/trainer YAML); --data defaults to its val shards")
    p.add_argument("--ckpt_path", type=str, nargs="+", default=[],
                   help="autoencoder(s): `lafa fit` VAE/LAFA checkpoint, Stable Audio Open weights, or a local "
                        "transformers EncodecModel/DacModel directory; repeatable; none: log-mel only")
    p.add_argument("--label", type=str, nargs="+", default=None, help="one name per --ckpt_path (default: from the path)")
    p.add_argument("--data", type=str | None, default=None, help="audio shards: path, brace pattern, glob or pipe: URL")
    p.add_argument("--audio", type=str, nargs="+", default=None,
                   help="audio files instead of shards: folder(s) (recursive), file(s) or glob(s)")
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
    p.add_argument("--batch_size", type=int, default=4)
    p.add_argument("--device", type=str, default="auto", help="auto, cpu, cuda, cuda:1, ...")
    p.add_argument("--steps", type=int | None, default=None, help="flow decoder steps for the ablation decode")
    p.add_argument("--ablation_clips", type=int, default=1, help="clips with an ablation grid (0: none)")
    p.add_argument("--ablation_seconds", type=float, default=5.0, help="excerpt length decoded in the ablation")
    p.add_argument("--ablation_noise_std", type=float, default=0.1, help="std of the noise replacing a channel")
    p.add_argument("--ablation_reference", type=Literal["ground_truth", "reconstruction"], default="ground_truth",
                   help="ground_truth (Appendix G) or reconstruction")
    p.add_argument("--listen_clips", type=int, default=2,
                   help="clips written as WAV for report.html: the input excerpt and each autoencoder's reconstruction")
    p.add_argument("--listen_seconds", type=float, default=5.0, help="length of those excerpts")
    p.add_argument("--seed", type=int, default=0)
    p.add_dataclass_arguments(AnalysisSettings, "analysis")
    p.add_class_arguments(LogMel, "mel", skip={"sample_rate"})
    return p


def normalise_argv(argv: list[str]) -> list[str]:
    """Repeated --ckpt_path/--label flags become one list each; a --config that is a stage config (it has
    model/data/trainer keys) becomes --stage_config."""
    out, paired = [], {flag: [] for flag in PAIRED_FLAGS}
    i = 0
    while i < len(argv):
        arg = argv[i]
        flag, _, inline = arg.partition("=")
        if flag in PAIRED_FLAGS:
            values = [inline] if inline else []
            i += 1
            while not inline and i < len(argv) and not argv[i].startswith("--"):
                values.append(argv[i])
                i += 1
            paired[flag] += values
            continue
        if flag == "--config" and (inline or i + 1 < len(argv)):
            path = inline or argv[i + 1]
            step = 1 if inline else 2
            if _is_stage_config(path):
                out += ["--stage_config", path]
            else:
                out += argv[i : i + step]
            i += step
            continue
        out.append(arg)
        i += 1
    for flag, values in paired.items():
        if values:
            out += [flag, *values]
    return out


def _is_stage_config(path: str) -> bool:
    try:
        config = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError):
        return False  # let jsonargparse report it
    return isinstance(config, dict) and any(k in config for k in STAGE_CONFIG_KEYS)


def shards_from_stage_config(path: str) -> str | list[str]:
    """The shards a stage config's AudioDataModule reads (data.init_args: val, else test, else train)."""
    config = yaml.safe_load(Path(path).read_text()) or {}
    args = (config.get("data") or {}).get("init_args") or {}
    for key in ("val_shards", "test_shards", "train_shards"):
        if args.get(key):
            return args[key]
    raise SystemExit(f"lafa analyze: {path} names no shards under data.init_args; pass --data")


def default_label(ckpt_path: str) -> str:
    """runs/demo/vae/checkpoints/last.ckpt -> vae; a model directory -> its name; other files -> their stem."""
    path = Path(ckpt_path)
    if path.is_dir():
        return path.resolve().name
    return path.parent.parent.name if path.parent.name == "checkpoints" else path.stem


def load_any_autoencoder(path: str, codec_latent: str):
    """A transformers codec directory, else `lafa.stages.loading.load_autoencoder` (lafa checkpoint, SAO weights)."""
    from lafa.analysis.codecs import is_transformers_codec, load_transformers_codec

    if is_transformers_codec(path):
        try:
            return load_transformers_codec(path, codec_latent)
        except (ValueError, ImportError) as exc:
            raise SystemExit(f"lafa analyze: {exc}") from exc
    if not Path(path).is_file():
        raise SystemExit(f"lafa analyze: {path} is neither a checkpoint file nor a transformers model directory")
    from lafa.stages.loading import load_autoencoder

    return load_autoencoder(path)


def for_autoencoder(audio: torch.Tensor, sample_rate: int, ae) -> torch.Tensor:
    """A clip as read -> the channels and rate the autoencoder takes."""
    from lafa.audio import convert

    return convert(audio, sample_rate, ae.sample_rate, ae.io_channels)


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
            real = int(example["padding_mask"].sum())
            clips.append((example["id"], example["audio"][:, :real]))
            bar.update()
            if len(clips) == num_clips:
                break
    if not clips:
        raise SystemExit(f"lafa analyze: no samples in {data}")
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
                          device: torch.device, folder: Path) -> dict[str, list[str]]:
    """WAV excerpts for the HTML page: the input of each of the first --listen_clips clips and each
    autoencoder's reconstruction decode(encode(x)) of it. Returns group -> paths."""
    from lafa.analysis.html import wav_bytes

    audio: dict[str, list[str]] = {}
    for i, (_, clip) in enumerate(clips[: args.listen_clips]):
        excerpt = clip[:, : round(args.listen_seconds * sample_rate)]
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"reference_{i}.wav"
        path.write_bytes(wav_bytes(excerpt.numpy(), sample_rate))
        audio.setdefault("reference", []).append(str(path))
        for label, ae in autoencoders.items():
            x = for_autoencoder(excerpt, sample_rate, ae)
            x = x[:, : x.shape[-1] // ae.downsampling_ratio * ae.downsampling_ratio]
            if x.shape[-1] == 0:
                continue
            y = ae.decode(ae.encode(x[None].to(device)), steps=args.steps)[0].float().cpu()
            path = folder / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', label)}_{i}.wav"
            path.write_bytes(wav_bytes(y.numpy(), ae.sample_rate))
            audio.setdefault(label, []).append(str(path))
    return audio


def _analyze(label: str, maps: list[torch.Tensor], settings: AnalysisSettings, seed: int) -> dict:
    try:
        return analyze_maps(maps, settings, seed)
    except ValueError as exc:  # constant or non-finite latents, clips shorter than a window: name the representation
        raise SystemExit(f"lafa analyze: cannot analyse '{label}': {exc}") from exc


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(normalise_argv(argv))
    labels = args.label or [default_label(p) for p in args.ckpt_path]
    if len(labels) != len(args.ckpt_path):
        raise SystemExit(f"lafa analyze: {len(args.ckpt_path)} --ckpt_path but {len(labels)} --label")
    if "mel" in labels or len(set(labels)) != len(labels):
        raise SystemExit(f"lafa analyze: labels must be distinct and not 'mel': {labels}")
    if args.data and args.audio:
        raise SystemExit("lafa analyze: pass --data (shards) or --audio (audio files), not both")
    data = args.data or (shards_from_stage_config(args.stage_config) if args.stage_config and not args.audio else None)
    if data is None and not args.audio:
        raise SystemExit("lafa analyze: pass --data (audio shards), --audio (audio files) or a stage config naming shards")
    if data is not None and Path(data).is_dir() and not any(Path(data).glob("*.tar")):
        raise SystemExit(f"lafa analyze: {data} holds no .tar shards; for a folder of audio files use --audio {data}")
    settings = AnalysisSettings(**args.analysis.as_dict())
    device = resolve_device(args.device)
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
            raise SystemExit(f"lafa analyze: no usable audio file in {args.audio} ({len(skipped)} skipped)")
    else:
        clips = read_clips(data, args.num_clips, sample_rate, channels, args.seconds)
    audio = [c for _, c in clips]

    mel_settings = args.mel.as_dict()
    mel = LogMel(sample_rate=sample_rate, **mel_settings)
    results = {"mel": _analyze("mel", [mel(a[None])[0] for a in audio], settings, args.seed)}
    for label, ae in autoencoders.items():
        own = [for_autoencoder(a, sample_rate, ae) for a in audio]
        latents = encode_clips(ae, own, args.batch_size, device, f"encoding ({label})")
        results[label] = _analyze(label, latents, settings, args.seed)
    print(text_table(*measures_table({k: summarise(r) for k, r in results.items()})))
    print(f"[{settings.confidence:.0%} bootstrap intervals over {len(clips)} clips ({settings.bootstrap} resamples); "
          f"perm. = mean over {settings.permutations} random channel orders; excess = measured - perm.]")

    figures = {"psd": str(save_figure(psd_figure(results), out / "psd.png")),
               "correlation": str(save_figure(
                   correlation_figure({k: {**r, "lam": settings.lam} for k, r in results.items()}),
                   out / "correlation.png")),
               "permutation": str(save_figure(permutation_figure(results), out / "permutation.png")),
               "eigen": str(save_figure(eigen_figure(results), out / "eigen.png"))}
    ablation = {}
    for label, ae in autoencoders.items():
        ae_mel = mel if ae.sample_rate == sample_rate else LogMel(sample_rate=ae.sample_rate, **mel_settings)
        excerpt = round(args.ablation_seconds * ae.sample_rate)
        for i, (key, clip) in enumerate(clips[: args.ablation_clips]):
            clip = for_autoencoder(clip, sample_rate, ae)
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
    report["ablation"] = ablation
    report["clips"] = [key for key, _ in clips]
    report["skipped"] = skipped
    report["audio"] = write_listening_clips(clips, sample_rate, autoencoders, args, device, out / "audio")
    report["html"] = str(out / "report.html")
    report["figures"] = figures
    report["seconds_elapsed"] = round(time.time() - started, 2)
    path = write_report(report, out / "report.json")
    write_html(analysis_page(json.loads(path.read_text())), report["html"])
    print(f"report: {path}\npage:   {report['html']}")
    return 0
