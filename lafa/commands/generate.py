"""`lafa generate`: text-to-audio from a DiT checkpoint (DiT sampling, then the autoencoder's decoder).

examples:
  lafa generate --ckpt_path runs/dit_sao/checkpoints/last.ckpt --prompt "warm analog synth pad" --seconds 10 \\
      --steps 50 --cfg_scale 7 --out out.wav
  lafa generate --ckpt_path runs/dit_sao/checkpoints/last.ckpt --prompts prompts.txt --out generated/
  lafa evaluate --generated generated/ --reference data/test_audio --prompts generated/prompts.json --out r.json

A prompt file (one prompt per line, or a JSON list of strings) writes `<out>/<index>_<slug>.wav` for each prompt
and `<out>/prompts.json` ({id: prompt}, the id being the file name without .wav, as `lafa evaluate --prompts`
reads it). Clips are the autoencoder's rate and channels (44.1 kHz stereo), exactly `--seconds` long,
conditioned on seconds_total = ceil(seconds) and `--seconds_start` (Stable Audio's timing, as in training).
`--seed` seeds every draw on a CPU generator (the DiT's initial noise, then LAFA's decoder noise): a seed gives
the same clips on every device; batch i of `--batch_size` prompts uses seed + i.

Before the model is loaded: --seconds must be positive, one batch's latents and audio must fit in the memory
available (a lower bound: the networks' activations come on top), and a length past the crops the DiT was
trained on (its checkpoint's stored data config) is warned about.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
from pathlib import Path

import torch
from jsonargparse import ArgumentParser
from tqdm import tqdm

from lafa.audio import SAMPLE_RATE, save_audio
from lafa.checkpoint_files import missing_files, override_files
from lafa.checkpoints import CHECKPOINT_CONFIG_KEY, parse_yaml, read_checkpoint, stored_stage
from lafa.commands.options import command_parser, parse, print_device
from lafa.devices import DEVICE_HELP, resolve_device
from lafa.errors import BadInput, LafaUserError
from lafa.hub import looks_like_repo_id

DIT_CONFIGS = "`lafa fit --config configs/dit_sao.yaml` (or dit_etta.yaml)"
SAMPLER_COPIES = 8  # latent-sized tensors alive while sampling: noise, x, doubled CFG input and output, ...
AUDIO_COPIES = 3  # audio-sized tensors per clip: the decoder's output, its float32 copy on CPU, the saved array


def read_prompts(path: str | Path) -> list[str]:
    """Non-empty lines of a text file, or the strings of a JSON list."""
    path = Path(path)
    where = f"--prompts {path}"
    if not path.is_file():
        raise BadInput(where, "no such file", "give a text file with one prompt per line (or --prompt TEXT)")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise BadInput(where, f"not UTF-8 text ({e})", "give a text file with one prompt per line") from e
    if path.suffix == ".json":
        try:
            prompts = json.loads(text)
        except json.JSONDecodeError as e:
            raise BadInput(where, f"not JSON ({e})", 'write a JSON list of strings: ["rain", "a synth pad"]') from e
        if not isinstance(prompts, list) or not all(isinstance(p, str) for p in prompts):
            raise BadInput(where, "not a JSON list of strings", 'write ["rain", "a synth pad"], or a text file')
    else:
        prompts = [line.strip() for line in text.splitlines() if line.strip()]
    if not prompts:
        raise BadInput(where, "holds no prompts", "write one prompt per line")
    return prompts


def _slug(text: str, n: int = 40) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")[:n] or "prompt"


def build_parser() -> ArgumentParser:
    parser = command_parser("lafa generate", __doc__)
    parser.add_argument("--ckpt_path", type=str, required=True,
                        help=f"a checkpoint of the DiT stage, written by {DIT_CONFIGS}; or a DiT bundle folder "
                             f"(`lafa export --out DIR`) or its Hugging Face Hub repo id")
    parser.add_argument("--prompt", type=str | None, default=None, help="one prompt (writes --out as a file)")
    parser.add_argument("--prompts", type=str | None, default=None,
                        help="text file, one prompt per line, or a JSON list of strings (writes --out as a folder)")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each clip in seconds (> 0)")
    parser.add_argument("--seconds_start", type=float, default=0.0,
                        help="timing condition: where in a source file the clip starts (training crops start mid-file)")
    parser.add_argument("--steps", type=int | None, default=None,
                        help="sampler steps (null: the stage's, stored in the checkpoint)")
    parser.add_argument("--cfg_scale", type=float | None, default=None,
                        help="classifier-free guidance scale (null: the stage's)")
    parser.add_argument("--sampler", type=str | None, default=None,
                        help="euler or heun (rectified flow), dpmpp_2m or ddim (v objective); null: the stage's")
    parser.add_argument("--decode_steps", type=int | None, default=None,
                        help="LAFA flow-decoder steps (null: the stage's; unused by a plain VAE)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seeds every draw (DiT noise, LAFA decoder noise) on a CPU generator: same on every device")
    parser.add_argument("--batch_size", type=int, default=8, help="prompts generated together (memory grows with it)")
    parser.add_argument("--autoencoder_ckpt", type=str | None, default=None,
                        help="use this autoencoder (file, bundle folder or Hub repo id) instead of the one the "
                             "checkpoint names (a moved VAE/LAFA)")
    parser.add_argument("--vae_ckpt", type=str | None, default=None,
                        help="the VAE of the DiT's LAFA autoencoder, where it moved (its checkpoint's vae_ckpt)")
    parser.add_argument("--device", type=str, default="auto", help=DEVICE_HELP)
    parser.add_argument("--out", type=str, required=True, help="output .wav (--prompt) or folder (--prompts)")
    return parser


def _check_arguments(args) -> list[str]:  # noqa: ANN001
    """Everything decidable from the command line alone; returns the prompts."""
    if (args.prompt is None) == (args.prompts is None):
        raise BadInput("--prompt/--prompts", "give exactly one of them",
                       'add --prompt "rain on a roof" (one clip) or --prompts prompts.txt (a folder of clips)')
    if not (math.isfinite(args.seconds) and args.seconds > 0):
        raise BadInput(f"--seconds {args.seconds:g}", "the clip length must be a positive number of seconds",
                       "give e.g. --seconds 10")
    if not (math.isfinite(args.seconds_start) and args.seconds_start >= 0):
        raise BadInput(f"--seconds_start {args.seconds_start:g}", "must be >= 0 seconds",
                       "give where in a source file the clip starts, e.g. --seconds_start 0")
    for name in ("batch_size", "steps", "decode_steps"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise BadInput(f"--{name} {value}", "must be at least 1", f"give a positive --{name}")
    out = Path(args.out)
    if args.prompt is not None and out.is_dir():
        raise BadInput(f"--out {out}", "is a folder, and --prompt writes one file", "give a file name, e.g. out.wav")
    if args.prompts is not None and out.exists() and not out.is_dir():
        raise BadInput(f"--out {out}", "is a file, and --prompts writes a folder of clips", "give a folder name")
    return [args.prompt] if args.prompt is not None else read_prompts(args.prompts)


def _dit_config(ckpt_path: Path) -> dict:
    """The stored config of a DiT checkpoint (or what a DiT bundle's config.json says of its model and data),
    refused (one line) when the file is missing or of another stage."""
    from lafa import hub
    from lafa.bundles import is_bundle, read_config

    where = f"--ckpt_path {ckpt_path}"
    source = hub.resolve(ckpt_path)  # a Hub repo id -> its cached snapshot folder
    if source.is_dir():
        if not is_bundle(source):
            raise BadInput(where, "is a folder but not a lafa bundle (config.json + model.safetensors)",
                           f"give a bundle (`lafa export --out DIR`) or a checkpoint written by {DIT_CONFIGS}")
        bundle = read_config(source)
        if bundle["kind"] != "dit":
            raise BadInput(where, f"is a {bundle['kind'].upper()} bundle, not a DiT",
                           "give a DiT bundle or checkpoint; a VAE or LAFA bundle is a DiT's autoencoder "
                           "(--autoencoder_ckpt)")
        return {"model": {"init_args": {"model": {"io_channels": bundle["components"]["dit"]["io_channels"]}}},
                "data": {"init_args": bundle.get("data") or {}}}
    if not source.is_file():
        raise BadInput(where, "no such file", f"give a checkpoint written by {DIT_CONFIGS}, e.g. "
                                              f"runs/dit_sao/checkpoints/last.ckpt")
    ckpt = read_checkpoint(source)  # one line for an empty/damaged/foreign file; the files it names resolved
    stage = stored_stage(ckpt, source)  # refuses untrusted classes before importing anything
    if stage is None:
        raise BadInput(where, "carries no lafa config (not written by `lafa fit`)",
                       f"give a checkpoint written by {DIT_CONFIGS}")
    if not hasattr(stage[0], "generate"):
        raise BadInput(where, f"is a {stage[0].__name__} checkpoint, not a DiT stage",
                       f"give a checkpoint written by {DIT_CONFIGS}; a VAE or LAFA checkpoint is the DiT's "
                       f"autoencoder (--autoencoder_ckpt)")
    return parse_yaml(ckpt[CHECKPOINT_CONFIG_KEY], source) or {}


def training_seconds(config: dict, sample_rate: int = SAMPLE_RATE, ratio: int | None = None) -> tuple[float, str] | None:
    """(seconds, where it was read) of the crops the DiT was trained on, from its stored data config:
    `data.init_args.sample_size` audio samples, or `latent_size` latent frames (needs the autoencoder's ratio)."""
    data = ((config.get("data") or {}).get("init_args")) or {}
    rate = int(data.get("sample_rate") or sample_rate)
    if data.get("sample_size"):
        n = int(data["sample_size"])
        return n / rate, f"data.init_args.sample_size {n} at {rate} Hz"
    if data.get("latent_size") and ratio:
        n = int(data["latent_size"])
        return n * ratio / rate, f"data.init_args.latent_size {n} frames of {ratio} samples"
    return None


def available_bytes(device: torch.device) -> int:
    """Memory a new tensor can take: free CUDA memory, or the host's available memory (cgroup limit included)."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        meminfo = Path("/proc/meminfo").read_text()
        avail = int(re.search(r"MemAvailable:\s+(\d+) kB", meminfo).group(1)) * 1024
    except (OSError, AttributeError):
        avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit != "max":
            used = int(Path("/sys/fs/cgroup/memory.current").read_text())
            avail = min(avail, int(limit) - used)
    except (OSError, ValueError):
        pass
    return avail


def clip_bytes(seconds: float, sample_rate: int, channels: int, latent_dim: int, ratio: int, batch: int) -> int:
    """A lower bound of the memory one batch of clips takes: its latents while sampling and its audio (float32)."""
    samples = math.ceil(seconds * sample_rate)
    frames = math.ceil(samples / ratio)
    return 4 * batch * (SAMPLER_COPIES * latent_dim * frames + AUDIO_COPIES * channels * samples)


def check_memory(seconds: float, batch: int, device: torch.device, sample_rate: int, channels: int,
                 latent_dim: int, ratio: int) -> None:
    need = clip_bytes(seconds, sample_rate, channels, latent_dim, ratio, batch)
    for where in {device, torch.device("cpu")}:
        have = available_bytes(where)
        if need > have:
            raise BadInput(f"--seconds {seconds:g}",
                           f"{batch} clip(s) of {seconds:g} s need at least {need / 2**30:,.1f} GiB for their "
                           f"latents and audio ({latent_dim} x {math.ceil(seconds * sample_rate / ratio):,} latent "
                           f"frames, {channels} x {math.ceil(seconds * sample_rate):,} samples at {sample_rate} Hz, "
                           f"float32) and {where} has {have / 2**30:,.1f} GiB available",
                           "generate shorter clips, or fewer at once (--batch_size)")


def main(argv: list[str]) -> int:
    args = parse(build_parser(), argv)
    prompts = _check_arguments(args)
    device = resolve_device(args.device)
    ckpt_path = Path(args.ckpt_path)
    config = _dit_config(ckpt_path)
    init_args = ((config.get("model") or {}).get("init_args")) or {}
    batch = min(args.batch_size, len(prompts))
    latent_dim = int((init_args.get("model") or {}).get("io_channels") or 64)
    check_memory(args.seconds, batch, device, SAMPLE_RATE, 2, latent_dim, 2048)  # SAO's geometry, before loading
    autoencoder = args.autoencoder_ckpt or init_args.get("autoencoder_ckpt")
    if autoencoder in missing_files and not args.autoencoder_ckpt and not Path(autoencoder).exists():  # the checkpoint recorded it: its hash, the override
        raise LafaUserError(missing_files[autoencoder])
    if autoencoder and not Path(autoencoder).exists() and not looks_like_repo_id(autoencoder):
        named = "--autoencoder_ckpt" if args.autoencoder_ckpt else f"model.init_args.autoencoder_ckpt of {ckpt_path}"
        raise BadInput(autoencoder, f"autoencoder file not found ({named})",
                       "pass --autoencoder_ckpt with the VAE or LAFA checkpoint (or SAO VAE weights) the DiT was "
                       "trained on")
    print_device(device)
    from lafa.stages.loading import load_stage

    if args.vae_ckpt:  # where the VAE of the DiT's LAFA moved (its checkpoint's vae_ckpt)
        override_files({"model.init_args.vae_ckpt": args.vae_ckpt})
    overrides = {"autoencoder_ckpt": args.autoencoder_ckpt} if args.autoencoder_ckpt else {}
    if ckpt_path.is_file():
        stage = load_stage(ckpt_path, **overrides).to(device)
    else:  # a bundle folder or a Hub repo id
        from lafa.stages.pretrained import load_model

        stage = load_model(args.ckpt_path, autoencoder_ckpt=args.autoencoder_ckpt).to(device)
    ae = stage.autoencoder
    sample_rate, ratio = ae.sample_rate, ae.downsampling_ratio
    check_memory(args.seconds, batch, device, sample_rate, ae.io_channels, ae.latent_dim, ratio)
    trained = training_seconds(config, sample_rate, ratio)
    if trained is not None and args.seconds > trained[0] + 1e-9:
        print(f"lafa generate: warning: --seconds {args.seconds:g} is past the {trained[0]:.2f} s crops this DiT "
              f"was trained on ({trained[1]} in its stored config); expect the audio to degrade past "
              f"{trained[0]:.2f} s", file=sys.stderr)
    kwargs = dict(steps=args.steps, cfg_scale=args.cfg_scale, sampler=args.sampler)

    single = args.prompt is not None
    out = Path(args.out)
    names = {}
    for i in tqdm(range(0, len(prompts), args.batch_size), desc="generate", disable=len(prompts) <= args.batch_size):
        part = prompts[i: i + args.batch_size]
        clips = stage.generate(part, args.seconds, args.seconds_start, decode_steps=args.decode_steps,
                               seed=args.seed + i, progress=len(prompts) <= args.batch_size, **kwargs)
        if single:
            save_audio(out, clips[0], sample_rate)
            print(f"wrote {out} ({args.seconds:g} s, {sample_rate} Hz, {clips[0].shape[0]} channels)")
            return 0
        for k, (prompt, clip) in enumerate(zip(part, clips, strict=True)):  # written batch by batch
            name = f"{i + k:04d}_{_slug(prompt)}"
            save_audio(out / f"{name}.wav", clip, sample_rate)
            names[name] = prompt
    (out / "prompts.json").write_text(json.dumps(names, indent=2))
    print(f"wrote {len(names)} clips and prompts.json to {out}")
    return 0
