"""`python -m data_prep build ...` (real sources) and `python -m data_prep demo --out data/demo` (offline).

A mistake in what was given ends with one line `data_prep <command>: error: <file or option>: <what>; <fix>` and
exit code 2 (`--debug` shows the traceback); Ctrl-C keeps the finished shards, and the same command resumes."""

from __future__ import annotations

import argparse
import errno
import sys
from pathlib import Path

from data_prep.demo import write_demo_sources
from data_prep.licenses import LICENSE_CLASSES, check_license_names
from data_prep.process import ChunkSettings
from data_prep.shards import BuildInterrupted, BuildSettings, build
from data_prep.sources import (
    ALLOWED_LICENSES,
    dedup_ids,
    license_filter,
    read_fma,
    read_folder,
    read_fsd,
    read_id_list,
)
from data_prep.summary import summary_table


class _Help(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Every option's default in its help, the description as written."""


def _size(text: str) -> int:
    units = {"k": 2**10, "m": 2**20, "g": 2**30}
    t = text.strip().lower().rstrip("b")
    return int(float(t[:-1]) * units[t[-1]]) if t and t[-1] in units else int(t)


def _common(p: argparse.ArgumentParser, chunk: float, shard: str, estimate: str) -> None:
    p.add_argument("--out", type=Path, required=True, help="output folder for shards and manifest.json")
    p.add_argument("--chunk_seconds", type=float, default=chunk, help="chunk length (Sec. 5.1: 30 s)")
    p.add_argument("--min_tail_seconds", type=float, default=1.0, help="drop shorter last chunks of long files")
    p.add_argument("--min_clip_seconds", type=float, default=0.1,
                   help="files shorter than this are skipped ('too short'; a 1-sample WAV is no clip)")
    p.add_argument("--silence_dbfs", type=float, default=-60.0, help="peak level below which audio is silent")
    p.add_argument("--flac_subtype", default="PCM_16", choices=["PCM_16", "PCM_24"])
    p.add_argument("--flac_level", type=int, choices=range(9), default=4, metavar="0-8",
                   help="FLAC compression level (4: libFLAC 5's size for ~12%% less CPU; 0: ~30%% less "
                        "CPU, 3-13%% larger)")
    p.add_argument("--no_copy", dest="copy_sources", action="store_false",
                   help="re-encode every chunk to FLAC; by default a file that is one whole chunk at 44.1 kHz stereo "
                        "(mp3, ogg, opus, FLAC/WAV at --flac_subtype's depth) is stored as it is, tags dropped")
    p.add_argument("--member_format", choices=["flac", "wav"], default="flac",
                   help="how converted chunks are stored (resampled, re-quantised, cut from longer files): flac "
                        "(lossless, smaller) or wav (PCM: the same integers, more bytes, no encoding CPU, less CPU "
                        "per training crop); docs/data.md, Member format")
    p.add_argument("--shard_size", type=_size, default=shard, help="target shard size, e.g. 256MB")
    p.add_argument("--val_fraction", type=float, default=0.05, help="hash split, for items without a split")
    p.add_argument("--test_fraction", type=float, default=0.05)
    p.add_argument("--seed", type=int, default=0, help="caption draws stored in the shards")
    p.add_argument("--jobs", type=int, default=0, help="worker processes (0: all cores)")
    p.add_argument("--prefix", default="", help="shard names are {prefix}{split}-000000.tar")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the shards of another build in --out (other settings or sources); without it such "
                        "a folder is refused, and the same build resumes")
    p.add_argument("--size_estimate", choices=["probe", "pcm"], default=estimate,
                   help="probe: plan shards from the FLAC size of a 1 s excerpt per file (close to --shard_size); "
                        "pcm: a fixed FLAC/PCM ratio of 0.6")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m data_prep", description=__doc__, formatter_class=_Help)
    p.add_argument("--debug", action="store_true", help="show the traceback of an error")
    sub = p.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="shard real sources (FSD, FMA, folders)", formatter_class=_Help)
    _common(b, 30.0, "256MB", "probe")
    b.add_argument("--fsd_audio", type=Path, help="FreeSound audio folder (<id>.wav)")
    b.add_argument("--fsd_tables", type=Path, nargs="*", default=[], help="CSVs / clips_info JSON, merged by id")
    b.add_argument("--fma_audio", type=Path, help="FMA audio tree (000/000002.mp3)")
    b.add_argument("--fma_tracks", type=Path, help="FMA tracks.csv")
    b.add_argument("--fma_genres", type=Path, help="FMA genres.csv (genre titles when genre_top is empty)")
    b.add_argument("--folder", type=Path, nargs="*", default=[], help="generic audio folders (JSON/CSV sidecars)")
    b.add_argument("--allow_ids", type=Path, nargs="*", default=[], help="licence allow-lists (ids)")
    b.add_argument("--licenses", nargs="*", default=list(ALLOWED_LICENSES),
                   help=f"licence classes kept ('any': every recognised one): {', '.join(LICENSE_CLASSES)}")
    b.add_argument("--keep_unlicensed", action="store_true", help="keep items with no licence field")
    d = sub.add_parser("demo", help="synthesise the offline demo corpus and shard it", formatter_class=_Help)
    _common(d, 4.0, "4MB", "pcm")  # the demo keeps its 4 train shards
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    args = parser().parse_args([a for a in argv if a != "--debug"])
    try:
        _check_inputs(args)
        return _run(args)
    except (KeyboardInterrupt, SystemExit, OSError, ValueError) as exc:
        if debug or isinstance(exc, SystemExit) and not isinstance(exc.code, str):
            raise
        # the one-line contract of docs/faults.md: "data_prep: error: <file or option>: ...; <fix>"
        print(f"data_prep: {_one_line(exc, args.out)}", file=sys.stderr)
        return 130 if isinstance(exc, KeyboardInterrupt) else 2


def _one_line(exc: BaseException, out: Path) -> str:
    """What main prints for an error: Ctrl-C (what was kept, how to resume), a message of _run, a full disk
    or a read-only folder (the file and what is wrong), a bad table or argument; no traceback."""
    if isinstance(exc, BuildInterrupted):
        return str(exc)
    if isinstance(exc, KeyboardInterrupt):
        return (f"interrupted (Ctrl-C); finished shards are kept in {out}; rerun the same command to build "
                "the rest (finished shards are not rebuilt)")
    if isinstance(exc, SystemExit):
        return f"error: {exc.code.removeprefix('data_prep: ')}"
    if isinstance(exc, OSError):
        what = f"{exc.filename}: {exc.strerror}" if exc.filename and exc.strerror else str(exc)
        if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
            what += "; choose a writable --out (and readable inputs)"
        elif exc.errno in (errno.ENOSPC, errno.EDQUOT):
            what += "; free space and run the same command again (finished shards are kept)"
        return f"error: {' '.join(what.split())}"
    return f"error: {' '.join(str(exc).split())}"


def _inputs(args: argparse.Namespace) -> dict:
    """What chose the files besides the source folders: tables and allow-lists (resolved paths), licence filter."""
    if args.command == "demo":
        return {}
    paths = {k: [str(p.resolve()) for p in v] if isinstance(v, list) else str(v.resolve())
             for k in ("fsd_tables", "fma_tracks", "fma_genres", "allow_ids") if (v := getattr(args, k))}
    return {**paths, "licenses": sorted(args.licenses), "keep_unlicensed": args.keep_unlicensed}


INPUT_OPTIONS = {"folder": "folder", "fsd_audio": "folder", "fma_audio": "folder", "fsd_tables": "file",
                 "fma_tracks": "file", "fma_genres": "file", "allow_ids": "file"}


def _check_inputs(args: argparse.Namespace) -> None:
    """Every input path the command line names exists, before any scan or write (one line naming the first)."""
    for option, kind in INPUT_OPTIONS.items():
        value = getattr(args, option, None)
        for path in value if isinstance(value, list) else [value] if value is not None else []:
            ok = path.is_dir() if kind == "folder" else path.is_file()
            if not ok:
                what = "does not exist" if not path.exists() else f"is not a {kind}"
                raise ValueError(f"--{option} {path}: that {kind} {what}; check the path")


def _run(args: argparse.Namespace) -> int:
    roots: dict[str, Path] = {}
    if args.command == "demo":
        raw = write_demo_sources(args.out / "raw", seed=args.seed)
        items = read_folder(raw["music"], "music") + read_fsd(raw["fsd"] / "audio", [raw["fsd"] / "dev.csv",
                                                                                      raw["fsd"] / "info.csv"])
        roots = {"music": raw["music"], "fsd": raw["fsd"] / "audio"}
        out, allow, keep_unlicensed, licenses = args.out / "shards", None, False, ALLOWED_LICENSES
    else:
        items = []
        if args.fsd_audio:
            items += read_fsd(args.fsd_audio, args.fsd_tables)
            roots["fsd"] = args.fsd_audio
        if args.fma_audio or args.fma_tracks:
            if not (args.fma_audio and args.fma_tracks):
                raise SystemExit("--fma_audio/--fma_tracks: they go together; give both (the audio tree and tracks.csv)")
            items += read_fma(args.fma_audio, args.fma_tracks, args.fma_genres)
            roots["fma"] = args.fma_audio
        for i, folder in enumerate(args.folder):  # each an existing folder (_check_inputs)
            name = "folder" if i == 0 else f"folder{i}"
            items += read_folder(folder, name)
            roots[name] = folder
        if not items:
            given = [str(x) for x in (args.fsd_audio, args.fma_audio, *args.folder) if x]
            if given:
                raise SystemExit(f"{', '.join(given)}: no audio files found; give folders of audio files "
                                 "(wav, flac, mp3, ogg, opus, ...)")
            raise SystemExit("build: no audio sources given; give --fsd_audio, --fma_audio with --fma_tracks, or --folder")
        out, keep_unlicensed, licenses = args.out, args.keep_unlicensed, check_license_names(args.licenses)
        allow = read_id_list(args.allow_ids) if args.allow_ids else None
    items, rejected = dedup_ids(items)
    items, lic_rejected = license_filter(items, allow, keep_unlicensed, licenses)
    chunk = ChunkSettings(chunk_seconds=args.chunk_seconds, min_tail_seconds=args.min_tail_seconds,
                          silence_dbfs=args.silence_dbfs, flac_subtype=args.flac_subtype,
                          flac_level=args.flac_level, copy_sources=args.copy_sources,
                          member_format=args.member_format, min_clip_seconds=args.min_clip_seconds)
    settings = BuildSettings(out=out, chunk=chunk, shard_bytes=args.shard_size, val_fraction=args.val_fraction,
                             test_fraction=args.test_fraction, seed=args.seed, jobs=args.jobs, prefix=args.prefix,
                             size_estimate=args.size_estimate, overwrite=args.overwrite, inputs=_inputs(args))
    manifest = build(items, settings, rejected + lic_rejected, roots)
    print(summary_table(manifest, out))
    if manifest["files_kept"] == 0:
        counts = ", ".join(f"{k}: {n}" for k, n in manifest["skipped_by_category"].items())
        print(f"data_prep: error: no input passed the filters ({manifest['files_listed']} listed, all skipped: "
              f"{counts}); the reasons are in {out / 'manifest.json'} under `skipped`", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
