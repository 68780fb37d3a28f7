"""A real-music corpus anyone can rebuild offline: Debian's game soundtracks, sharded by `data_prep build`.

    python -m data_prep.debian_music --out data/music                 # install, stage, shard (docs/corpus.md)
    python -m data_prep.debian_music --out data/music --folder ~/Music # your own folder instead
    python -m data_prep.debian_music --out data/music --dry_run        # what it would install and build

The packages, their music folders and, where the copyright file is not machine-readable, their licence are in
configs/corpora/debian_music.yaml. Steps (docs/corpus.md): install the missing packages (or print the command,
exit 2); stage every audio file as a symlink under OUT/raw/<package>/ beside a sidecar with its licence (from
the package's DEP-5 copyright file or the config's checked `evidence`), holders and split; hold out whole
tracks per package for val and test; shard with `python -m data_prep build`, then write OUT/corpus.json.
With `--folder DIR`, data_prep shards DIR itself.
"""

from __future__ import annotations

import argparse
import fnmatch
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field, fields
from pathlib import Path

import soundfile as sf
import yaml

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = ROOT / "configs" / "corpora" / "debian_music.yaml"
AUDIO_SUFFIXES = (".ogg", ".oga", ".opus", ".flac", ".wav", ".mp3")
# names differing only by these endings are one track (frantic / frantic-old, victory / victory2)
TRACK_SUFFIX = re.compile(r"([-_ ]?(old|loop|intro|\d+))+$")
MIN_TRACKS_HELD_OUT = 5  # a package with fewer tracks stays in train (one held-out track would be a third of it)


@dataclass
class Track:
    """One audio file of a package, staged for data_prep."""

    package: str
    source: Path  # the installed file
    rel: str  # its path under OUT/raw/<package>/
    seconds: float
    license: str
    copyright: str
    split: str = "train"


@dataclass
class Package:
    name: str
    dirs: list[str]
    include: str = "*"
    album: str | None = None
    genre: str | None = None
    license: str | None = None
    evidence: str | None = None
    copyright: str | None = None  # holders, where the copyright file names none for the music (not DEP-5)
    version: str | None = None
    tracks: list[Track] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------- config, apt


def load_config(path: Path) -> dict:
    cfg = yaml.safe_load(Path(path).read_text())
    known = {f.name for f in fields(Package)} - {"version", "tracks"}
    for p in cfg["packages"]:
        extra = set(p) - known
        if extra:
            raise ValueError(f"{path}: package {p.get('name')}: unknown keys {sorted(extra)}")
    return cfg


def packages_from(cfg: dict, names: list[str] | None) -> list[Package]:
    all_ = {p["name"]: p for p in cfg["packages"]}
    if names:
        unknown = [n for n in names if n not in all_]
        if unknown:
            raise ValueError(f"packages not in the config: {unknown} (known: {sorted(all_)})")
    return [Package(**p) for n, p in all_.items() if not names or n in names]


def copyright_path(root: Path, package: str) -> Path:
    return root / "usr" / "share" / "doc" / package / "copyright"


def missing_packages(root: Path, packages: list[Package]) -> list[str]:
    """Packages whose copyright file or music folders are not under root."""
    return [p.name for p in packages
            if not copyright_path(root, p.name).is_file() or not all((root / d).is_dir() for d in p.dirs)]


def ensure_installed(root: Path, packages: list[Package], dry_run: bool) -> str | None:
    """None when every package is there (installing them if this process may); else what the user must run."""
    missing = missing_packages(root, packages)
    if not missing:
        return None
    cmd = ["apt-get", "install", "-y", "--no-install-recommends", *missing]
    can_install = (str(root) == "/" and shutil.which("apt-get") and hasattr(os, "geteuid") and os.geteuid() == 0)
    if dry_run or not can_install:
        prefix = "" if can_install else "sudo "
        return f"{prefix}{' '.join(cmd)}"
    print(f"debian_music: {' '.join(cmd)}", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(cmd, check=True, env=env)
    still = missing_packages(root, packages)
    if still:
        raise RuntimeError(f"apt-get ran, but these packages' files are still missing: {still}")
    return None


def package_version(name: str, root: Path) -> str | None:
    if str(root) != "/" or not shutil.which("dpkg-query"):
        return None
    out = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", name], capture_output=True, text=True)
    return out.stdout.strip() or None if out.returncode == 0 else None


# ---------------------------------------------------------------------------------------------- licences


def parse_dep5(text: str) -> list[dict] | None:
    """The `Files:` stanzas of a machine-readable (DEP-5) copyright file as {files, copyright, license}, in
    file order; None when the file is not DEP-5."""
    if not text.lstrip().startswith("Format:"):
        return None
    stanzas = []
    for block in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        key = None
        for line in block.splitlines():
            if line[:1] in (" ", "\t") and key:
                fields[key] += "\n" + line.strip()
            elif ":" in line:
                key, _, value = line.partition(":")
                key = key.strip().lower()
                fields[key] = value.strip()
        if "files" in fields:
            stanzas.append({"files": fields["files"].split(), "copyright": " ".join(
                fields.get("copyright", "").split()), "license": fields.get("license", "").split("\n")[0].strip()})
    return stanzas


def dep5_license(stanzas: list[dict], installed: str) -> dict | None:
    """The last stanza whose pattern matches the installed path (DEP-5: later stanzas win). Patterns are
    source-tree paths, so `music/x.ogg` matches `/usr/share/game/music/x.ogg` by its trailing components;
    `debian/*` (the packaging) never matches a data file."""
    found = None
    for st in stanzas:
        for pat in st["files"]:
            if pat.startswith("debian/"):
                continue
            if pat == "*" or fnmatch.fnmatchcase(installed, "*/" + pat.lstrip("/")):
                found = st
    return found


def _words(text: str) -> str:
    return " ".join(text.split())


def file_license(pkg: Package, copyright_text: str, installed: str) -> tuple[str, str]:
    """(licence text for data_prep, copyright holders) of one installed file of pkg."""
    if pkg.evidence and _words(pkg.evidence) not in _words(copyright_text):
        raise ValueError(f"{pkg.name}: the copyright file no longer contains the config's evidence for "
                         f"{pkg.license!r}: {pkg.evidence[:80]!r}...; read it again and update the config")
    stanzas = parse_dep5(copyright_text)
    st = dep5_license(stanzas, installed) if stanzas else None
    if pkg.license:
        return pkg.license, pkg.copyright or (st["copyright"] if st else "")
    if stanzas is None:
        raise ValueError(f"{pkg.name}: the copyright file is not machine-readable (DEP-5): read it and give "
                         f"`license` and `evidence` in the config")
    if st is None or not st["license"]:
        raise ValueError(f"{pkg.name}: no `Files:` stanza of its copyright file covers {installed}")
    return st["license"], pkg.copyright or st["copyright"]


# ---------------------------------------------------------------------------------------------- tracks, split


def collect(root: Path, pkg: Package) -> list[Track]:
    """Audio files under the package's music folders (a file reachable twice through symlinks counted once)."""
    text = copyright_path(root, pkg.name).read_text(encoding="utf-8", errors="replace")
    tracks, seen = [], set()
    for d in pkg.dirs:
        base = root / d
        for path in sorted(base.rglob("*")):
            audio = path.is_file() and path.suffix.lower() in AUDIO_SUFFIXES
            if not audio or not fnmatch.fnmatch(path.name, pkg.include):
                continue
            real = path.resolve()
            if real in seen:
                continue
            seen.add(real)
            installed = "/" + path.relative_to(root).as_posix()
            lic, holders = file_license(pkg, text, installed)
            info = sf.info(str(path))
            tracks.append(Track(pkg.name, path, path.relative_to(base).as_posix(),
                                info.frames / info.samplerate, lic, holders))
    return tracks


def track_keys(rels: list[str]) -> dict[str, str]:
    """rel -> track: `frantic-old.ogg` and `victory2.ogg` join `frantic.ogg` and `victory.ogg` when those exist
    (versions of one track share a split); `music003.ogg` beside `music004.ogg` stays its own track."""
    stems = {r: Path(r).with_suffix("").as_posix().lower() for r in rels}
    own = set(stems.values())
    keys = {}
    for r, stem in stems.items():
        base = TRACK_SUFFIX.sub("", stem)
        keys[r] = base if base and base != stem and base in own else stem
    return keys


def assign_splits(tracks: list[Track], val_fraction: float, test_fraction: float, seed: int = 0) -> None:
    """Hold out whole tracks of one package for val, then test, in hash order, each until it holds its
    fraction of the package's hours (at least one track each once the package has MIN_TRACKS_HELD_OUT or more)."""
    keys = track_keys([t.rel for t in tracks])
    groups: dict[str, list[Track]] = {}
    for t in tracks:
        groups.setdefault(keys[t.rel], []).append(t)
    for t in tracks:
        t.split = "train"
    if len(groups) < MIN_TRACKS_HELD_OUT:
        return
    total = sum(t.seconds for t in tracks)
    order = sorted(groups, key=lambda k: hashlib.sha1(f"{seed}:{tracks[0].package}:{k}".encode()).hexdigest())
    pos = 0
    for split, frac in (("val", val_fraction), ("test", test_fraction)):
        held = 0.0
        while pos < len(order) - 1 and frac > 0 and (held == 0.0 or held < frac * total):
            if held > 0.0 and held + sum(t.seconds for t in groups[order[pos]]) > 2 * frac * total:
                break  # a long next track would take twice the target: stop a little short instead
            for t in groups[order[pos]]:
                t.split = split
                held += t.seconds
            pos += 1


def clear_staging(out_raw: Path) -> None:
    """Remove an earlier run's OUT/raw (symlinks and sidecars only), so packages or tracks no longer chosen
    are not sharded again; a folder holding anything else is left alone and is an error."""
    if not out_raw.exists():
        return
    foreign = [p for p in out_raw.rglob("*") if not (p.is_symlink() or p.is_dir() or p.suffix == ".json")]
    if foreign:
        raise ValueError(f"{out_raw} holds files this command did not write (e.g. {foreign[0]}); give another --out")
    shutil.rmtree(out_raw)


def stage(out_raw: Path, pkg: Package, tracks: list[Track]) -> None:
    """OUT/raw/<package>/<rel> -> the installed file, with its sidecar `<rel>.json`."""
    import mutagen  # data_prep reads the same tags; only the fields they lack are written to the sidecar

    folder = out_raw / pkg.name
    for t in tracks:
        link = folder / t.rel
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(t.source.resolve())
        try:
            tags = mutagen.File(t.source, easy=True)
            tags = {k.lower() for k in (tags.tags or {}).keys()} if tags else set()
        except Exception:  # noqa: BLE001 - an unreadable tag block: data_prep notes it, the sidecar fills in
            tags = set()
        side = {"license": t.license, "copyright_holders": t.copyright, "split": t.split, "debian_package": pkg.name,
                "debian_version": pkg.version, "kind": "music",
                "license_source": f"/usr/share/doc/{pkg.name}/copyright"}
        for key in ("album", "genre"):
            if getattr(pkg, key) and key not in tags:
                side[key] = getattr(pkg, key)
        if "title" not in tags:
            side["title"] = re.sub(r"[-_]+", " ", Path(t.rel).stem).strip()
        Path(f"{link}.json").write_text(json.dumps(side, indent=1, sort_keys=True) + "\n")


# ---------------------------------------------------------------------------------------------- report, CLI


def summarise(packages: list[Package]) -> dict:
    out = {}
    for p in packages:
        splits = {}
        for s in ("train", "val", "test"):
            ts = [t for t in p.tracks if t.split == s]
            splits[s] = {"files": len(ts), "hours": round(sum(t.seconds for t in ts) / 3600, 4),
                         "tracks": sorted(t.rel for t in ts) if s != "train" else None}
        out[p.name] = {"version": p.version, "licenses": sorted({t.license for t in p.tracks}),
                       "copyright": sorted({t.copyright for t in p.tracks if t.copyright}),
                       "files": len(p.tracks), "hours": round(sum(t.seconds for t in p.tracks) / 3600, 4),
                       "splits": splits}
    return out


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m data_prep.debian_music", description=__doc__.split("\n\n")[0],
                                epilog="Other options (--chunk_seconds, --jobs, --shard_size, ...) go to "
                                       "`python -m data_prep build`.")
    p.add_argument("--out", type=Path, required=True, help="OUT/raw (staged files), OUT/shards, OUT/corpus.json")
    p.add_argument("--folder", type=Path, nargs="*", default=[], help="your own audio folder(s) instead")
    p.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="packages, licence classes, fractions")
    p.add_argument("--packages", nargs="*", help="a subset of the config's packages")
    p.add_argument("--root", type=Path, default=Path("/"), help="where packages are installed (tests: a fake tree)")
    p.add_argument("--licenses", nargs="*", help="licence classes kept (default: the config's)")
    p.add_argument("--seed", type=int, default=0, help="split order (and data_prep's caption draws)")
    p.add_argument("--dry_run", action="store_true", help="print what would be installed, staged and run")
    return p


def main(argv: list[str] | None = None) -> int:
    args, rest = parser().parse_known_args(argv)
    cfg = load_config(args.config)
    licenses = args.licenses or cfg["licenses"]
    shards = args.out / "shards"
    build = [sys.executable, "-m", "data_prep", "build", "--out", str(shards), "--licenses", *licenses,
             "--seed", str(args.seed), *rest]
    started = time.time()
    if args.folder:
        cmd = [*build, "--folder", *map(str, args.folder)]
        print("debian_music: " + " ".join(cmd), flush=True)
        return 0 if args.dry_run else subprocess.run(cmd, cwd=ROOT).returncode
    try:
        packages = packages_from(cfg, args.packages)
        todo = ensure_installed(args.root, packages, args.dry_run)
        if todo:
            verb = "would run" if args.dry_run else "these packages are not installed; run"
            print(f"debian_music: {verb}: {todo}", flush=True)
            if not args.dry_run:
                print("debian_music: then run this command again (or give your own --folder)", file=sys.stderr)
                return 2
        else:
            raw = args.out / "raw"
            if not args.dry_run:
                clear_staging(raw)
            for pkg in packages:
                pkg.version = package_version(pkg.name, args.root)
                pkg.tracks = collect(args.root, pkg)
                if not pkg.tracks:
                    raise ValueError(f"{pkg.name}: no audio under {pkg.dirs} (include {pkg.include!r})")
                assign_splits(pkg.tracks, cfg.get("val_fraction", 0.1), cfg.get("test_fraction", 0.1), args.seed)
                if not args.dry_run:
                    stage(raw, pkg, pkg.tracks)
            summary = summarise(packages)
            for name, s in summary.items():
                sp = s["splits"]
                print(f"debian_music: {name:<24} {s['files']:>3} files {s['hours']:6.2f} h  "
                      f"{'/'.join(s['licenses'])}  train/val/test files {sp['train']['files']}/"
                      f"{sp['val']['files']}/{sp['test']['files']}", flush=True)
    except (ValueError, OSError, RuntimeError, subprocess.CalledProcessError) as exc:
        print(f"debian_music: error: {exc}", file=sys.stderr)
        return 2
    cmd = [*build, "--folder", str(args.out / "raw")]
    print(("debian_music: would run: " if args.dry_run else "debian_music: ") + " ".join(cmd), flush=True)
    if args.dry_run:
        return 0
    rc = subprocess.run(cmd, cwd=ROOT).returncode
    manifest = shards / "manifest.json"
    report = {"config": str(args.config), "packages": summary, "licenses_kept": licenses,
              "data_prep_command": cmd[1:], "data_prep_exit": rc, "seconds": round(time.time() - started, 1),
              "hours": round(sum(s["hours"] for s in summary.values()), 4),
              "manifest": str(manifest)}
    if manifest.is_file():
        m = json.loads(manifest.read_text())
        report["shards"] = {s: {k: v[k] for k in ("files", "chunks", "hours")} for s, v in m["splits"].items()}
        report["files_skipped"] = m["files_skipped"]
    (args.out / "corpus.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"debian_music: {report['hours']:.2f} h in {report['seconds']:.0f} s; {args.out / 'corpus.json'}")
    return rc


if __name__ == "__main__":
    sys.exit(main())
