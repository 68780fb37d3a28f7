"""A bundle's README.md: a model card written only from what lafa can read, each figure with its source (the list
of sources: docs/bundles.md, "The model card"). A figure lafa cannot read is left out and the card says so.
"""

from __future__ import annotations

import json
import subprocess
import tarfile
from collections import Counter
from pathlib import Path
from typing import Any


def git_commit() -> str | None:
    """The commit of the lafa source tree (with "+ uncommitted changes" if dirty), or None outside git."""
    root = Path(__file__).resolve().parents[2]
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head + (" + uncommitted changes" if dirty else "")


def shard_licences(shards: list[str]) -> tuple[Counter, int]:
    """(licence -> number of distinct source files, chunks read) over the JSON members of the given shards."""
    files: dict[tuple, str] = {}
    chunks = 0
    for shard in shards:
        with tarfile.open(shard) as tar:
            for member in tar:
                if member.name.endswith(".json"):
                    meta = json.load(tar.extractfile(member))
                    files[(meta.get("source"), meta.get("id"))] = str(meta.get("license") or "unknown")
                    chunks += 1
    return Counter(files.values()), chunks


def data_facts(data_args: dict) -> dict[str, Any]:
    """What the training data was, from the shard specs (already resolved to where they are now)."""
    from lafa.data.stream import expand_shards

    facts: dict[str, Any] = {"train_shards": data_args.get("train_shards")}
    try:
        shards = [s for s in expand_shards(data_args.get("train_shards")) if not s.startswith("pipe:")]
    except FileNotFoundError as e:
        facts["unreachable"] = str(e)
        return facts
    facts["shards"] = len(shards)
    if shards:
        manifest = Path(shards[0]).parent / "manifest.json"
        if manifest.is_file():
            m = json.loads(manifest.read_text())
            facts["manifest"] = {"path": str(manifest), **{k: m.get(k) for k in
                                                           ("files_kept", "files_skipped", "hours", "sources")},
                                 "splits": {k: {"files": v.get("files"), "chunks": v.get("chunks"),
                                                "hours": v.get("hours")} for k, v in (m.get("splits") or {}).items()}}
        facts["licences"], facts["chunks"] = shard_licences(shards)
    return facts


def checkpoint_metrics(ckpt: dict) -> list[dict]:
    """Each ModelCheckpoint's monitored value, as the checkpoint stores it."""
    out = []
    for name, state in (ckpt.get("callbacks") or {}).items():
        if isinstance(state, dict) and state.get("monitor") and state.get("best_model_score") is not None:
            out.append({"tag": state["monitor"], "value": float(state["best_model_score"]),
                        "source": f"the best value ModelCheckpoint saw (checkpoint `callbacks[{name.split('{')[0]}]`"
                                  f".best_model_score)"})
    return out


def tensorboard_metrics(run_dir: Path, step: int) -> list[dict]:
    """The last value at or before `step` of every val/ and test/ scalar in the event files under `run_dir`."""
    events = sorted(p for pattern in ("events.out.tfevents.*", "*/events.out.tfevents.*") for p in run_dir.glob(pattern))
    if not events:
        return []
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    latest: dict[str, dict] = {}
    for path in events:
        acc = EventAccumulator(str(path), size_guidance={"scalars": 0})
        acc.Reload()
        for tag in acc.Tags().get("scalars", []):
            if not tag.startswith(("val/", "test/")):
                continue
            for event in acc.Scalars(tag):
                if event.step <= step and (tag not in latest or event.step >= latest[tag]["step"]):
                    latest[tag] = {"tag": tag, "value": float(event.value), "step": int(event.step),
                                   "source": f"TensorBoard {path.relative_to(run_dir)}, step {event.step}"}
    return [latest[k] for k in sorted(latest)]


def run_folder(ckpt_path: Path) -> Path:
    """The run's log folder: above `checkpoints/` (Lightning's layout), else the checkpoint's own folder."""
    here = Path(ckpt_path).absolute().parent
    return here.parent if here.name == "checkpoints" else here


def _how(tag: str, config: dict, given: dict) -> str:
    trainer = config.get("trainer") or {}
    data = {**((config.get("data") or {}).get("init_args") or {}), **given}
    if tag.startswith("val/"):
        limit = trainer.get("limit_val_batches")
        return (f"validation split ({data.get('val_shards')}"
                + (f", {limit} batches of {data.get('val_batch_size') or data.get('batch_size')}" if limit else "")
                + ")")
    limit = trainer.get("limit_test_batches")
    return f"test split ({data.get('test_shards')}" + (f", {limit} batches" if limit else "") + ")"


def write_card(folder: Path, bundle: dict, ckpt: dict, ckpt_path: Path, config: dict, params: dict[str, int]) -> dict:
    """Write README.md into `folder`; returns the facts it states (what the tests check against the sources)."""
    import lafa

    step = int(ckpt.get("global_step", 0))
    records = ((ckpt.get("lafa_files") or {}).get("files")) or {}  # the shard specs as the run's config gave them
    given = {k.split(".")[-1]: r["given"] for k, r in records.items() if k.startswith("data.") and "given" in r}
    data = (config.get("data") or {}).get("init_args") or {}
    facts = {"stage": bundle["stage"], "kind": bundle["kind"], "global_step": step, "epoch": ckpt.get("epoch"),
             "lafa_version": lafa.__version__, "commit": git_commit(), "params": params,
             "data": data_facts(data) if data.get("train_shards") else {},
             "metrics": checkpoint_metrics(ckpt) + tensorboard_metrics(run_folder(ckpt_path), step)}
    title = bundle.get("name") or folder.name
    chain = " -> ".join(f"{name} ({params[name]:,} parameters)" for name in params)
    lines = ["---", "library_name: lafa", "tags: [audio, text-to-audio, latent-diffusion]" if bundle["kind"] == "dit"
             else "tags: [audio, autoencoder]", "---", "",
             f"# {title}", "",
             f"A lafa {bundle['kind'].upper()} bundle (`{bundle['stage']}`), exported from `{ckpt_path.name}` with "
             f"lafa {facts['lafa_version']} (commit {facts['commit'] or 'unknown: not a git checkout'}).", "",
             "## Use", "", "```python", "from lafa.stages.pretrained import from_pretrained", "",
             f'model = from_pretrained("{title}")  # this folder, or its Hub repo id', "```", "",
             "or `lafa generate --ckpt_path FOLDER_OR_REPO_ID ...`" if bundle["kind"] == "dit"
             else "or `lafa encode --ckpt_path FOLDER_OR_REPO_ID ...`", "",
             "## Model", "", f"- chain (top down): {chain}; all weights are in model.safetensors"]
    if bundle["kind"] == "dit":
        lines.append(f"- text encoder (by name, not included): `{bundle['stage_args'].get('text_encoder')}`")
    lines += ["", "## Training", "",
              f"- {step} optimiser steps (epoch {facts['epoch']}), from the checkpoint's `global_step`"]
    d = facts["data"]
    if not d:
        lines.append("- data: the checkpoint's stored config names no training shards")
    elif "unreachable" in d:
        lines.append(f"- data: `{given.get('train_shards', d['train_shards'])}`, not reachable from here: no counts")
    else:
        lines.append(f"- data: {d['chunks']} chunks in {d['shards']} training shard(s) "
                     f"(`{given.get('train_shards', d['train_shards'])}`)")
        if "manifest" in d:
            m = d["manifest"]
            lines.append(f"- from {Path(m['path']).name} (data_prep): {m['files_kept']} files kept, "
                         f"{m['files_skipped']} skipped, {m['hours']:.3f} h in all; splits: "
                         + ", ".join(f"{k} {v['files']} files / {v['chunks']} chunks" for k, v in m["splits"].items()))
        lines.append("- licences of the training files (counted from the shards' JSON members): "
                     + ", ".join(f"{name}: {n}" for name, n in sorted(d["licences"].items())))
    lines += ["", "## Metrics", ""]
    if facts["metrics"]:
        lines += ["| metric | value | how obtained | source |", "|---|---|---|---|"]
        lines += [f"| {m['tag']} | {m['value']:.6g} | {_how(m['tag'], config, given)} | {m['source']} |"
                  for m in facts["metrics"]]
    else:
        lines.append("No metric was found (no monitored checkpoint, no TensorBoard events beside the run).")
    (folder / "README.md").write_text("\n".join(lines) + "\n")
    return facts
