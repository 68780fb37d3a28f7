"""Data throughput: shard building (`make shards`) against its decode bound, and data loading.

    .venv/bin/python bench/bench_data.py [--files 24] [--flac_levels 4] [--jobs 2] [--corpora mp3,wav_48k]
                                         [--out bench/results/data.json]

1. `make shards` vs the decode bound, per corpus: synthetic music-like files, single-format (mp3 like FMA, wav
   like FSD50K, flac, ogg, mono wav/mp3: 8 s stereo 44.1 kHz sources the copy rule stores as they are; real
   corpora are one format) and the four mixed, and sources the build must convert (48 kHz mp3/wav, 24-bit
   wav/flac, 64 s wav/mp3 cut into chunks, 22.05 kHz mono wav), are decoded alone (lafa.audio.load_audio, the
   bound; for resampled corpora also decode + lafa.audio.resample) and sharded by data_prep's build,
   interleaved repeats, medians.
   One process: CPU seconds (= per worker); with --jobs N also N processes on both sides, wall seconds. The
   ratio is the decode bound's seconds over the build's. Each FLAC level is built with the default copy rule
   (a one-chunk source needing no change is stored as it is), plus "no_copy" (every chunk re-encoded to FLAC
   at level 4, the behaviour before the copy rule) for copied corpora, and "member_wav" (converted chunks stored as
   PCM WAV, --member_format wav) for converted ones. Per corpus, each stage of the build is timed on the same
   files (tags, scan: hash + header + plan estimate, decode with the checks, channels/resampling/silence, FLAC
   encoding, copy with tag stripping); shard sizes are compared with the target and with 16-bit PCM.
2. Loading: 30 s stereo FLAC chunks per second per worker through the AudioDataModule for a training crop
   (65536 samples, the FLAC is seeked) and for the whole chunk (1323000 samples), and with 2 workers; and the
   AudioDecoder's milliseconds per 30 s member of each stored format (copied mp3/ogg/opus/wav vs FLAC), crop
   and whole: what a copied member costs at load time, every epoch.
Numbers depend on the machine's load: the JSON records it.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import random
import shutil
import statistics
import tempfile
import time
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import webdataset

from data_prep.passthrough import SourceFormat, copy_extension, int16_source, stored_copy
from data_prep.plan import file_header
from data_prep.process import ChunkSettings, decode, encode_member, split_chunks
from data_prep.shards import BuildSettings, build
from data_prep.sources import read_folder
from lafa.audio import load_audio, resample, to_channels
from lafa.data import AudioDataModule
from lafa.data.datamodule import AudioDecoder

SR, SECONDS = 44100, 30
FILE_SECONDS = 8
FORMATS = ({"format": "MP3"}, {"format": "FLAC"}, {"format": "OGG"}, {"format": "WAV", "subtype": "PCM_16"})
# sources that need no change (stored as they are by default) ...
CORPORA = {"mix": FORMATS, **{f["format"].lower(): (f,) for f in FORMATS},
           "mono_wav": ({"format": "WAV", "subtype": "PCM_16", "channels": 1},),  # FSD50K: mono 16-bit wav
           "mono_mp3": ({"format": "MP3", "channels": 1},)}
# ... and sources the build must convert: another rate, 24-bit, longer than a chunk (cut), mono at another rate
CONVERTED = {
    "mp3_48k": ({"format": "MP3", "rate": 48000},),
    "wav_48k": ({"format": "WAV", "subtype": "PCM_16", "rate": 48000},),
    "wav_24bit": ({"format": "WAV", "subtype": "PCM_24"},),
    "flac_24bit": ({"format": "FLAC", "subtype": "PCM_24"},),
    "wav_64s": ({"format": "WAV", "subtype": "PCM_16", "seconds": 64},),
    "mp3_64s": ({"format": "MP3", "seconds": 64},),
    "mono_wav_22k": ({"format": "WAV", "subtype": "PCM_16", "channels": 1, "rate": 22050},),
}
SOURCE_KEYS = ("rate", "channels", "seconds")  # what a corpus entry says beyond soundfile's format/subtype


def _music(rng: np.random.Generator, seconds: float, rate: int = SR, channels: int = 2) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    tone = sum(np.sin(2 * np.pi * f * t) / (k + 1) for k, f in enumerate(rng.uniform(80, 2000, 6)))
    x = 0.2 * tone / 3 + 0.05 * rng.standard_normal(len(t))
    return np.stack([x, np.roll(x, 100)][:channels], 1).clip(-1, 1).astype(np.float32)


def make_corpus(src: Path, files: int, formats: tuple[dict, ...] = FORMATS) -> list[Path]:
    """`files` music-like files cycling through `formats` (soundfile's format/subtype, plus rate, channels and
    seconds: 44.1 kHz stereo 8 s unless given)."""
    rng = np.random.default_rng(1)
    src.mkdir(parents=True)
    paths = []
    for i in range(files):
        fmt = formats[i % len(formats)]
        rate, channels = fmt.get("rate", SR), fmt.get("channels", 2)
        path = src / f"f{i:03d}.{fmt['format'].lower()}"
        sf.write(path, _music(rng, fmt.get("seconds", FILE_SECONDS), rate, channels), rate,
                 **{k: v for k, v in fmt.items() if k not in SOURCE_KEYS})
        (src / f"f{i:03d}.json").write_text(json.dumps({"genre": "bench", "split": "train", "license": "CC0"}))
        paths.append(path)
    return paths


def describe(formats: tuple[dict, ...]) -> str:
    """e.g. "mp3 48000 Hz stereo 8 s" per format, joined by "/"."""
    return "/".join(f"{f['format'].lower()}{' ' + f['subtype'] if 'subtype' in f else ''} {f.get('rate', SR)} Hz "
                    f"{'mono' if f.get('channels', 2) == 1 else 'stereo'} {f.get('seconds', FILE_SECONDS)} s"
                    for f in formats)


def _cpu(fn) -> float:
    start = time.process_time()
    fn()
    return time.process_time() - start


def _wall(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _decode_all(paths: list[Path], jobs: int) -> None:
    if jobs <= 1:
        [load_audio(p) for p in paths]
        return
    with get_context("fork").Pool(jobs) as pool:  # the bound with as many processes as the build uses
        pool.map(_decode_one, paths, chunksize=1)


def _decode_one(path: Path) -> int:
    return load_audio(path)[0].shape[-1]


def _decode_resample_all(paths: list[Path]) -> None:
    """Decode and resample to the shard rate (lafa.audio.resample): the conversion a resampled corpus needs at least."""
    for p in paths:
        audio, sr = load_audio(p)
        resample(audio.contiguous(), sr, SR)


def shard_bench(root: Path, files: int, repeats: int, shards: int, formats: tuple[dict, ...] = FORMATS,
                settings: ChunkSettings | None = None, jobs: int = 1, stages: bool = True) -> dict:
    """`make shards` (build) vs decoding the same files, interleaved; CPU seconds in one process (jobs 1) or
    wall seconds with `jobs` processes on both sides; stage breakdown; shard sizes. The shard target is set
    from the warm-up build's bytes so that the corpus fills about `shards` shards (a file is then a small part
    of a shard, as on a real corpus, and the planner's accuracy is what the sizes show)."""
    paths = make_corpus(root / "corpus", files, formats)
    audio_seconds = sum(formats[i % len(formats)].get("seconds", FILE_SECONDS) for i in range(files))
    settings = settings or ChunkSettings()
    target = 2**40  # warm-up: one shard, its size sets the target of the timed rounds
    clock = _cpu if jobs == 1 else _wall  # child processes' CPU is not in process_time: wall for jobs > 1
    resampled = jobs == 1 and any(f.get("rate", SR) != SR for f in formats)
    runs = {"decode_bound": [], "make_shards": [], **({"decode_resample_bound": []} if resampled else {})}
    sizes: list[int] = []
    manifest: dict = {}
    for r in range(repeats + 1):  # the first round warms the page cache and is not counted
        t_dec = clock(lambda: _decode_all(paths, jobs))
        if resampled:
            t_res = clock(lambda: _decode_resample_all(paths))
        out = root / f"shards{r}"
        t_build = clock(lambda out=out, target=target: manifest.update(build(read_folder(root / "corpus"), BuildSettings(
            out=out, chunk=settings, shard_bytes=target, jobs=jobs, size_estimate="probe"), [], {})))
        if r:
            runs["decode_bound"].append(t_dec)
            if resampled:
                runs["decode_resample_bound"].append(t_res)
            runs["make_shards"].append(t_build)
        sizes = [p.stat().st_size for p in sorted(out.glob("train-*.tar"))]
        if not r:
            target = int(sum(sizes) / (shards - 0.5))  # the last shard holds a half-full remainder
        if r < repeats:
            shutil.rmtree(out)  # keep the temporary folder small (wav shards are ~PCM-sized)
    med = {k: statistics.median(v) for k, v in runs.items()}
    whole = sizes[:-1] or sizes  # the last shard holds the remainder
    pcm = audio_seconds * SR * 2 * 2
    report = {
        "what": f"{files} files ({describe(formats)}), {jobs} process(es), {'CPU' if jobs == 1 else 'wall'} "
        f"seconds, flac_level {settings.flac_level}, copy_sources {settings.copy_sources}, "
        f"member_format {settings.member_format}",
        "seconds_median": {k: round(v, 3) for k, v in med.items()},
        "seconds_all": {k: [round(x, 3) for x in v] for k, v in runs.items()},
        "audio_hours_per_hour": {k: round(audio_seconds / v, 1) for k, v in med.items()},
        "ratio_make_shards_vs_decode_bound": round(med["decode_bound"] / med["make_shards"], 3),
        **({"ratio_make_shards_vs_decode_resample_bound": round(med["decode_resample_bound"] / med["make_shards"], 3)}
           if resampled else {}),
        "stored": manifest["stored"],
        "shards": {"target_mb": round(target / 2**20, 3), "sizes_mb": [round(x / 2**20, 2) for x in sizes],
                   "bytes_vs_16bit_pcm": round(sum(sizes) / pcm, 4),
                   "max_deviation_of_full_shards": round(max(abs(x / target - 1) for x in whole), 3)},
    }
    if stages:
        report["stage_cpu_seconds"] = stage_times(root / "corpus", paths, settings)
    return report


def _timed(stages: dict, key: str, fn, *args):
    """fn(*args), its CPU seconds added to stages[key]."""
    start = time.process_time()
    result = fn(*args)
    stages[key] += time.process_time() - start
    return result


def stage_times(root: Path, paths: list[Path], settings: ChunkSettings) -> dict:
    """CPU seconds of each stage of a build on the same files, one process, as data_prep.shards does them."""
    encode = f"{settings.member_format}_encode"
    stages = {"tags_and_listing": 0.0, "scan_hash_header_estimate": 0.0, "decode_checked_resampled": 0.0,
              "split_silence": 0.0, encode: 0.0, "copy_strip_tags": 0.0}
    items = {Path(it.path).name: it for it in _timed(stages, "tags_and_listing", read_folder, root)}
    chunk_samples = round(settings.chunk_seconds * settings.sample_rate)
    for p in paths:
        head = _timed(stages, "scan_hash_header_estimate", file_header, items[p.name], settings)
        src = SourceFormat(**head["format"])
        ext = copy_extension(src, settings)
        audio = _timed(stages, "decode_checked_resampled", decode, p, settings, int16_source(src, settings),
                       ext is not None)
        if audio.dtype == torch.int16 and audio.shape[-1] <= chunk_samples:  # the build's one-chunk int16 path
            chunks = [(0, audio)]
        else:
            chunks = _timed(stages, "split_silence", split_chunks, audio, settings)[0]
        whole = len(chunks) == 1 and chunks[0][1].shape[-1] == audio.shape[-1]
        if ext and whole and _timed(stages, "copy_strip_tags", _copy, ext, p, audio.shape[-1], settings) is not None:
            continue
        _timed(stages, encode, lambda cs: [encode_member(to_channels(c, settings.channels), settings) for _, c in cs],
               chunks)
    return {k: round(v, 4) for k, v in stages.items()}


def _copy(ext: str, path: Path, num_samples: int, settings: ChunkSettings) -> bytes | None:
    return stored_copy(ext, path.read_bytes(), num_samples, settings)


MEMBER_FORMATS = {"flac": ({"format": "FLAC", "subtype": "PCM_16"}, SR), "wav": ({"format": "WAV", "subtype": "PCM_16"}, SR),
                  "mp3": ({"format": "MP3"}, SR), "ogg": ({"format": "OGG", "subtype": "VORBIS"}, SR),
                  "opus": ({"format": "OGG", "subtype": "OPUS"}, 48000)}


def member_decode_ms(repeats: int) -> dict:
    """CPU milliseconds of the AudioDecoder per 30 s stereo member of each stored format: a 65536-sample
    training crop (FLAC/WAV/Vorbis seek, MP3/Opus decode from the start to the crop's end: on average about
    half the member) and the whole chunk; interleaved, medians."""
    rng = np.random.default_rng(2)
    members = {}
    for ext, (fmt, rate) in MEMBER_FORMATS.items():
        buf = io.BytesIO()
        sf.write(buf, _music(rng, SECONDS)[: SECONDS * rate] if rate == SR else
                 np.repeat(_music(rng, SECONDS), 2, 0)[: SECONDS * rate], rate, **fmt)
        meta = {"stored": "copy", "num_samples": SECONDS * rate, "sample_rate": rate}  # data_prep's JSON of a copy
        members[ext] = ({"__key__": "k", ext: buf.getvalue(), "json": json.dumps(meta).encode()}, rate)
    times: dict = {ext: {"crop_65536": [], "whole_30s": []} for ext in members}
    for _ in range(repeats):
        for ext, (sample, rate) in members.items():
            for name, size, n in (("crop_65536", 65536, 20), ("whole_30s", SECONDS * rate, 3)):
                decoder = AudioDecoder(size, rate, 2, seed=0, fresh_captions=False)
                gen = random.Random(0)  # the same 20 crop starts for every format and repeat
                times[ext][name].append(_cpu(lambda d=decoder, s=sample, g=gen, n=n: [d(s, g, 0) for _ in range(n)]) / n)
    return {ext: {k: round(1000 * statistics.median(v), 2) for k, v in d.items()} | {
        "bytes_per_30s": len(members[ext][0][ext])} for ext, d in times.items()}


def make_shards(root: Path, clips: int) -> Path:
    rng = np.random.default_rng(0)
    src = root / "src"
    src.mkdir()
    t = np.arange(SR * SECONDS) / SR
    for i in range(clips):
        tone = sum(np.sin(2 * np.pi * f * t) / (k + 1) for k, f in enumerate(rng.uniform(80, 2000, 6)))
        x = 0.2 * tone / 3 + 0.05 * rng.standard_normal(len(t))
        stereo = np.stack([x, np.roll(x, 100)], 1).clip(-1, 1).astype(np.float32)
        sf.write(src / f"c{i:03d}.flac", stereo, SR, subtype="PCM_16")
        (src / f"c{i:03d}.json").write_text(json.dumps({"genre": "bench", "split": "train"}))
    half = int(SR * SECONDS * 2 * 2 * 0.6 * (clips // 2 - 0.5))  # two shards: one per worker
    build(read_folder(src), BuildSettings(out=root / "shards", chunk=ChunkSettings(), shard_bytes=half, jobs=1), [], {})
    return root / "shards"


def rate(dm: AudioDataModule, split: str, repeats: int) -> float:
    """Clips per second through the split's DataLoader (first pass warms the page cache)."""
    loader = dm.val_dataloader() if split == "val" else dm.train_dataloader()
    sum(len(b["id"]) for b in loader)
    start = time.perf_counter()
    n = 0
    for _ in range(repeats):
        n += sum(len(b["id"]) for b in loader)
    return n / (time.perf_counter() - start)


def machine() -> dict:
    return {"platform": platform.platform(), "processor": platform.processor(), "cpus": os.cpu_count(),
            "load_average": os.getloadavg(), "python": platform.python_version()}


def versions() -> dict:
    return {"torch": torch.__version__, "soundfile": sf.__version__, "libsndfile": sf.__libsndfile_version__,
            "webdataset": webdataset.__version__}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--clips", type=int, default=16)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--files", type=int, default=24, help="files of the make-shards corpus")
    p.add_argument("--shards", type=int, default=3, help="shards per make-shards corpus (sets the target size)")
    p.add_argument("--flac_levels", default="4", help="FLAC levels to build with (4: the default), e.g. 4,5,0")
    p.add_argument("--jobs", type=int, default=2, help="processes of the wall-time run (1: none)")
    p.add_argument("--corpora", default="", help="comma-separated corpus names (default: all), e.g. mp3,wav_48k")
    p.add_argument("--no_loading", action="store_true", help="part 1 only: no loading or member decode timings")
    p.add_argument("--out", type=Path, default=Path("bench/results/data.json"))
    args = p.parse_args()
    torch.set_num_threads(1)
    shards_report: dict = {}
    variants = {f"flac_level_{v}": ChunkSettings(flac_level=int(v)) for v in args.flac_levels.split(",")}
    # before the copy rule: every chunk re-encoded to FLAC (level 4); FLAC sources too
    variants["no_copy_level_4"] = ChunkSettings(flac_level=4, copy_sources=False)
    variants["member_wav"] = ChunkSettings(member_format="wav")  # converted chunks stored as PCM WAV
    corpora = {**CORPORA, **CONVERTED}
    for corpus in args.corpora.split(",") if args.corpora else corpora:  # real corpora are single-format
        formats = corpora[corpus]
        for name, chunk in variants.items():
            if (name == "no_copy_level_4" and corpus in CONVERTED) or (name == "member_wav" and corpus in CORPORA):
                continue  # a converted corpus has nothing to copy; a copied one nothing to convert
            with tempfile.TemporaryDirectory() as tmp:
                shards_report.setdefault(corpus, {})[name] = shard_bench(
                    Path(tmp), args.files, args.repeats, args.shards, formats, chunk, stages=name in ("flac_level_4", "member_wav"))
    if args.jobs > 1:
        with tempfile.TemporaryDirectory() as tmp:
            shards_report[f"mix_{args.jobs}_processes_wall"] = shard_bench(
                Path(tmp), args.files, args.repeats, args.shards, FORMATS, ChunkSettings(), jobs=args.jobs,
                stages=False)
    if args.no_loading:
        report = {"make_shards": shards_report, "machine": machine(), "versions": versions()}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1))
        print(json.dumps(report, indent=1))
        return 0
    member_ms = member_decode_ms(args.repeats)
    with tempfile.TemporaryDirectory() as tmp:
        shards = make_shards(Path(tmp), args.clips)
        spec = str(shards / "train-*.tar")
        results = {}
        for name, size, workers in (("crop_65536_1worker", 65536, 0), ("full_30s_1worker", SR * SECONDS, 0),
                                    ("crop_65536_2workers", 65536, 2)):
            dm = AudioDataModule(train_shards=spec, val_shards=spec, sample_size=size, batch_size=1,
                                 num_workers=workers, shuffle_buffer=0, persistent_workers=True)
            results[name] = round(rate(dm, "train", args.repeats), 2)
        shard_mb = sum(p.stat().st_size for p in shards.glob("*.tar")) / 2**20
    report = {
        "make_shards": shards_report,
        "member_decode_ms_per_30s": member_ms,
        "what": "30 s stereo 44.1 kHz FLAC chunks per second: decode + crop (+ resample no-op) + collate",
        "clips_per_second": results,
        "ratios": {"crop_vs_full_decode": round(results["crop_65536_1worker"] / results["full_30s_1worker"], 2),
                   "2workers_vs_1": round(results["crop_65536_2workers"] / results["crop_65536_1worker"], 2)},
        "audio_hours_per_second_per_worker_full": round(results["full_30s_1worker"] * SECONDS / 3600, 4),
        "setup": {"clips": args.clips, "repeats": args.repeats, "shard_mb": round(shard_mb, 1)},
        "machine": machine(),
        "versions": versions(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
