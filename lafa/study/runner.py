"""Run a study: each run is a `lafa fit` subprocess with its own merged config, checkpoints and TensorBoard
log.

Per run instance, `<out_dir>/<run>/` holds `fit.yaml` (the merged config), `checkpoints/` (last.ckpt after
every validation), `tb/` and `DONE` (written atomically once `lafa fit` exits 0). Re-running the study skips
DONE runs, resumes the others with `--ckpt_path last` and starts the rest, after checking
`<out_dir>/study_inputs.json` (lafa.study.inputs); docs/study.md.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from lafa.study.inputs import check_study_inputs, study_record
from lafa.study.merge import check_final_evaluation, check_one_factor, run_config
from lafa.study.spec import RunSpec, Study, order_runs

DONE = "DONE"
CONFIG = "fit.yaml"
POLL_SECONDS = 1.0  # how often a study with several runs at once looks for a finished one


@dataclass
class Instance:
    """One `lafa fit` run of a study: a run spec at one seed (compared runs) or once (the others)."""

    run: RunSpec
    seed: int | None
    name: str
    dir: Path

    @property
    def reused(self) -> bool:
        return bool(self.run.ckpt)


def instances(study: Study) -> list[Instance]:
    """Every run instance, in dependency order."""
    return [Instance(run, seed, study.instance_name(run, seed), study.run_dir(study.instance_name(run, seed)))
            for run in order_runs(study) for seed in study.seeds_of(run)]


def fit_config(study: Study, inst: Instance) -> dict[str, Any]:
    """The run's merged config plus where it writes: TensorBoard in tb/, checkpoints/last.ckpt after every
    validation (any ModelCheckpoint or logger of the stage config is replaced)."""
    config = run_config(study, inst.run, inst.seed)
    trainer = config.setdefault("trainer", {})
    trainer["default_root_dir"] = str(inst.dir)
    trainer["enable_checkpointing"] = True
    trainer["logger"] = {
        "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
        "init_args": {"save_dir": str(inst.dir), "name": "", "version": "tb"},
    }
    # last.ckpt after every evaluation, never before one: a run resumed from a checkpoint taken between a step
    # and that step's validation would skip the validation (its point would be missing from the curves)
    checkpoint = {
        "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
        "init_args": {"dirpath": str(inst.dir / "checkpoints"), "save_last": "link", "save_top_k": 1,
                      "enable_version_counter": False},
    }
    # the stage's own ModelCheckpoints would write into a folder shared by every run (and `--ckpt_path last`
    # would resume from another run's checkpoint): the run's checkpoint callback replaces them
    kept = [c for c in trainer.get("callbacks") or []
            if not (isinstance(c, dict) and str(c.get("class_path", "")).endswith("ModelCheckpoint"))]
    trainer["callbacks"] = [*kept, checkpoint]
    return config


def run_env(study: Study) -> dict[str, str] | None:
    """The environment of every run subprocess: this one's, plus the study's `env` (None: inherited as is)."""
    return None if not study.env else {**os.environ, **study.env}


def lafa_command(study: Study, plan: bool = False) -> list[str]:
    """How a run calls lafa: the study's `lafa`, else `lafa` in a printed plan and this interpreter here."""
    return study.lafa or (["lafa"] if plan else [sys.executable, "-m", "lafa"])


def fit_command(study: Study, inst: Instance, plan: bool = False) -> list[str]:
    return [*lafa_command(study, plan), "fit", "--config", str(inst.dir / CONFIG), "--ckpt_path", "last"]


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_fit_config(study: Study, inst: Instance) -> str:
    """Write `fit.yaml`; refuse to overwrite one a started run used with a different config."""
    text = yaml.safe_dump(fit_config(study, inst), sort_keys=False)
    path = inst.dir / CONFIG
    started = (inst.dir / "checkpoints").is_dir() or (inst.dir / DONE).exists()
    if path.exists() and started and path.read_text() != text:
        raise RuntimeError(
            f"run '{inst.name}' was started with another config ({path}); the study YAML changed since. "
            f"Remove {inst.dir} to re-run it with the new config, or restore the old study config."
        )
    _atomic_write(path, text)
    return text


def plan(study: Study) -> list[str]:
    """Write every run's fit.yaml and return one shell command per run to train (dependency order)."""
    check_one_factor(study)
    check_final_evaluation(study)
    commands = []
    prefix = " ".join(f"{k}={shlex.quote(v)}" for k, v in (study.env or {}).items())
    for inst in instances(study):
        if inst.reused:
            continue
        write_fit_config(study, inst)
        command = shlex.join(fit_command(study, inst, plan=True))
        commands.append(f"{prefix} {command}" if prefix else command)
    return commands


def _deps_done(study: Study, inst: Instance) -> bool:
    """Every run instance `inst` reads (same seed for a repeated run) is reused or finished."""
    for dep in inst.run.needs:
        spec = study.runs.get(dep)
        if spec is None or spec.ckpt:
            continue
        seed = inst.seed if spec.repeats and study.seeds else None
        if not (study.run_dir(study.instance_name(spec, seed)) / DONE).exists():
            return False
    return True


def _start(study: Study, inst: Instance, jobs: int, log: Callable[[str], Any]) -> subprocess.Popen:
    """Start one run's `lafa fit`; with several at once each writes to its own fit.log (else to this console).
    The run dies with the study (a killed study leaves no orphan training; rerun the study to resume it)."""
    last = inst.dir / "checkpoints" / "last.ckpt"
    log(f"[study {study.name}] {inst.name}: {'resuming from ' + str(last) if last.exists() else 'starting'}")
    command = fit_command(study, inst)
    log("  " + shlex.join(command))
    from lafa.children import prctl_death_signal

    out = open(inst.dir / "fit.log", "a") if jobs > 1 else None  # noqa: SIM115 (closed when the run ends)
    return subprocess.Popen(command, env=run_env(study), stdout=out, stderr=subprocess.STDOUT if out else None,
                            preexec_fn=lambda: prctl_death_signal(signal.SIGTERM))


def _finish(study: Study, inst: Instance, digest: str, process: subprocess.Popen) -> None:
    command = process.args
    if process.stdout is not None:
        process.stdout.close()
    if process.returncode != 0:
        where = f" (its output: {inst.dir / 'fit.log'})" if (inst.dir / "fit.log").exists() else ""
        raise RuntimeError(f"run '{inst.name}' failed (exit {process.returncode}): {shlex.join(command)}{where}")
    last = inst.dir / "checkpoints" / "last.ckpt"
    if not last.is_file():
        raise RuntimeError(f"run '{inst.name}' finished without writing {last}")
    _atomic_write(inst.dir / DONE, json.dumps({"config_sha256": digest, "checkpoint": str(last)}) + "\n")


def run_study(study: Study, log: Callable[[str], Any] = print, overwrite: bool = False) -> None:
    """Train what is missing, resume what was interrupted, skip what is finished: up to `study.jobs` runs at
    once, each as soon as every run it reads is finished (in YAML/dependency order among the ready ones).
    First, refuse an out_dir made from other inputs (lafa.study.inputs; `overwrite` moves its runs aside and
    starts over)."""
    check_one_factor(study)
    check_final_evaluation(study)
    trained = [inst for inst in instances(study) if not inst.reused]
    record = study_record(study.name, [fit_config(study, inst) for inst in trained])
    check_study_inputs(study.out_dir, record, [inst.dir for inst in trained], overwrite, log)
    pending: list[tuple[Instance, str]] = []
    for inst in instances(study):
        if inst.reused:
            if not Path(inst.run.ckpt).is_file():
                raise FileNotFoundError(f"run '{inst.name}': reused checkpoint not found: {inst.run.ckpt}")
            log(f"[study {study.name}] {inst.name}: reusing {inst.run.ckpt}")
            continue
        text = write_fit_config(study, inst)
        if (inst.dir / DONE).exists():
            log(f"[study {study.name}] {inst.name}: done, skipped")
            continue
        pending.append((inst, hashlib.sha256(text.encode()).hexdigest()))
    jobs = max(1, study.jobs)
    running: list[tuple[Instance, str, subprocess.Popen]] = []
    failure: RuntimeError | None = None
    try:
        while pending or running:
            while failure is None and len(running) < jobs:
                ready = next((p for p in pending if _deps_done(study, p[0])), None)
                if ready is None:
                    break
                pending.remove(ready)
                running.append((*ready, _start(study, ready[0], jobs, log)))
            if not running:
                if failure is None:  # cannot happen with a valid dependency order; say so rather than spin
                    raise RuntimeError(f"study {study.name}: runs {[p[0].name for p in pending]} wait for runs "
                                       "that are neither finished nor running")
                raise failure
            if len(running) == 1:  # nothing else can start before this one ends
                running[0][2].wait()
            else:
                time.sleep(POLL_SECONDS)
            for entry in [r for r in running if r[2].poll() is not None]:
                running.remove(entry)
                try:
                    _finish(study, *entry)
                    if jobs > 1:
                        log(f"[study {study.name}] {entry[0].name}: done")
                except RuntimeError as e:  # let the other runs reach their checkpoint, start nothing new
                    failure = failure or e
            if failure is not None and not running:
                raise failure
    finally:
        for _, _, process in running:  # an exception (Ctrl-C) here: stop the runs; they resume next time
            process.terminate()
