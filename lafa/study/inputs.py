"""What a study folder was made from: `<out_dir>/study_inputs.json` records the study's name, the fingerprint
of every data shard set its runs' configs name (`data.init_args.*_shards`) and lafa's version, with their
fingerprint. `lafa study` refuses a folder made from other inputs unless `--overwrite`, which moves the
earlier runs to `<out_dir>/.stale/<its fingerprint>/` (docs/study.md, "The folder remembers what made it").

A shard's own fingerprint is the one its writer recorded: a latent shard's first member (`lafa encode`), a
data_prep shard's state record (`.state/<shard>.json`); any other shard counts by its size.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from lafa.errors import BadInput
from lafa.fingerprint import LENGTH, fingerprint, read_record

RECORD = "study_inputs.json"
STALE = ".stale"


def shard_set_fingerprint(spec: Any) -> str:
    """LENGTH hex digits over the shards a spec names (names and each shard's own fingerprint), or "missing"."""
    from lafa.data.latent_corpus import shard_fingerprint
    from lafa.data.stream import expand_shards

    try:
        urls = expand_shards(spec)
    except FileNotFoundError:
        return "missing"
    h = hashlib.sha256()
    for url in urls:
        path = Path(url)
        own = "remote"
        if path.is_file():
            latent = shard_fingerprint(path)
            state = path.parent / ".state" / f"{path.name}.json"
            if latent:
                own = f"latent:{latent.get('fingerprint')}"
            elif state.is_file():
                try:
                    own = f"data_prep:{json.loads(state.read_text()).get('fingerprint')}"
                except (json.JSONDecodeError, UnicodeDecodeError):
                    own = "data_prep:unreadable"
            else:
                own = f"bytes:{path.stat().st_size}"
        h.update(f"{path.name if path.is_file() else url}\0{own}\n".encode())
    return h.hexdigest()[:LENGTH]


def data_specs(configs: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """{"data.init_args.<key> <spec>": spec} of every `*_shards` value the run configs name, once each."""
    specs = {}
    for config in configs:
        init = ((config.get("data") or {}).get("init_args") or {}) if isinstance(config.get("data"), dict) else {}
        for key, spec in sorted(init.items()):
            if key.endswith("_shards") and spec:
                specs[f"data.init_args.{key} {json.dumps(spec) if not isinstance(spec, str) else spec}"] = spec
    return specs


def study_record(name: str, configs: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """{"study", "data": {spec: fingerprint}, "lafa_version", "fingerprint"} of a study's inputs."""
    import lafa

    made = {"study": name, "data": {k: shard_set_fingerprint(v) for k, v in data_specs(configs).items()}}
    return {**made, "lafa_version": lafa.__version__, "fingerprint": fingerprint(made)}


def differences(old: dict, new: dict, shown: int = 2) -> str:
    diffs = [f"{k}: {old.get(k)} there, {new.get(k)} here" for k in ("study", "lafa_version")
             if old.get(k) != new.get(k)]
    a, b = old.get("data") or {}, new.get("data") or {}
    diffs += [f"{k}: {a.get(k, 'not named')} there, {b.get(k, 'not named')} here"
              for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
    more = f"; {len(diffs) - shown} more" if len(diffs) > shown else ""
    return "; ".join(diffs[:shown]) + more if diffs else "its record is unreadable"


def check_study_inputs(out_dir: str | Path, record: dict[str, Any], run_dirs: Iterable[Path], overwrite: bool,
                       log: Callable[[str], Any] = print) -> None:
    """Refuse (BadInput) an out_dir whose record differs from `record` unless overwrite, which moves `run_dirs`
    (and the report) to .stale/<old fingerprint>/; then write `record`. Nothing is touched when refused."""
    out = Path(out_dir)
    path = out / RECORD
    old = read_record(path)
    if old is not None and old.get("fingerprint") == record["fingerprint"]:
        return
    started = [d for d in run_dirs if d.is_dir()]
    if old is not None and started:
        if not overwrite:
            raise BadInput(f"out_dir {out}", f"was made from other inputs (its fingerprint {old.get('fingerprint')}, "
                                             f"this study's {record['fingerprint']}; {differences(old, record)})",
                           f"pass --overwrite to move its runs to {out / STALE / str(old.get('fingerprint'))} and "
                           f"start over, or set another out_dir")
        stale = out / STALE / str(old.get("fingerprint"))
        stale.mkdir(parents=True, exist_ok=True)
        for d in [*started, out / "report"]:
            if d.exists():
                os.replace(d, stale / d.name)
        log(f"[study {record['study']}] --overwrite: moved {len(started)} runs made from other inputs to {stale}")
    elif old is None and started:
        print(f"lafa study: note: {out} holds runs but no record of the inputs that made them (written before "
              f"studies kept one); recorded this study's (fingerprint {record['fingerprint']}) in {path}: a later "
              f"study with other inputs into it is refused", file=sys.stderr)
    out.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, path)
