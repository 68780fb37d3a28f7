"""The study YAML: a base set of stage configs and named runs that differ in one factor (docs/study.md).

A study is loaded from one or more YAML files (`--config paper.yaml --config tiny_overlay.yaml`); later files
are deep-merged into earlier ones (mappings merge key by key, lists and scalars are replaced), so an overlay
only names what it changes. Every run is an ordinary `lafa fit` run of one stage.

Seeds: compared runs, and runs marked `seeded: true` (e.g. the LAFA models a seeded DiT reads), repeat once per
study seed. "@run" from a seeded run to a seeded run means the same seed's instance, so seed s of a study is
one whole chain (LAFA at seed s -> its rotation at seed s -> the DiT at seed s).
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lafa.errors import listing
from lafa.study.merge import REF_PREFIX, _load_yaml


@dataclass
class StageSpec:
    """The configs every run of one stage starts from (`lafa fit --config a --config b` order) plus shared keys."""

    config: list[str]
    set: dict[str, Any] = field(default_factory=dict)


@dataclass
class RunSpec:
    name: str
    stage: str
    set: dict[str, Any] = field(default_factory=dict)  # dotted key -> value, "@run" -> that run's checkpoint
    ckpt: str | None = None  # a finished checkpoint reused instead of training this run
    compare: bool = False  # a run whose curves the report compares (repeated once per seed)
    latent: str | None = None  # run (or checkpoint path) whose latent space this run models: alpha and LPI
    label: str | None = None  # legend / table name
    value: float | None = None  # the factor's numeric level (mask ratio, latent size) for the factor plot
    seeded: bool = False  # repeated once per study seed although not compared (compared runs always are)
    seeds: list[int] | None = None  # this run's seeds, a subset of the study's (default: all of them)

    @property
    def repeats(self) -> bool:
        return self.compare or self.seeded

    @property
    def needs(self) -> list[str]:
        """Runs whose checkpoints this run reads, in the order it names them."""
        refs = [v[len(REF_PREFIX):] for v in self.set.values() if isinstance(v, str) and v.startswith(REF_PREFIX)]
        if self.latent is not None and not _looks_like_path(self.latent):
            refs.append(self.latent)
        return list(dict.fromkeys(refs))


@dataclass
class Study:
    name: str
    factor: str  # what the compared runs differ in, in words
    factor_keys: list[str]  # dotted config keys (or prefixes) runs of one stage may differ in
    out_dir: str
    stages: dict[str, StageSpec]
    runs: dict[str, RunSpec]
    baseline: str
    metrics: dict[str, str]  # logged metric -> "min" | "max" (better direction); the first is the headline
    seeds: list[int] | None = None
    analysis: dict[str, Any] | None = None  # arguments for `lafa analyze` on each latent space
    lafa: list[str] | None = None  # how runs call lafa (default: `lafa` in --plan, this Python's `-m lafa` here)
    latents: LatentsSpec | None = None  # latent spaces measured seed by seed (the locality study's LAFA arm)
    env: dict[str, str] | None = None  # environment variables added for every run (e.g. OMP_NUM_THREADS)
    lab: dict[str, Any] | None = None  # the ground-truth lab's report settings (lafa.study.lab_report)
    jobs: int = 1  # runs trained at once (each as soon as the runs it reads are finished)

    @property
    def compared(self) -> list[RunSpec]:
        return [r for r in self.runs.values() if r.compare]

    def run_dir(self, instance: str) -> Path:
        """Where one run instance keeps its merged config, checkpoints/, tb/ (TensorBoard) and DONE marker."""
        return Path(self.out_dir) / instance

    def final_checkpoint(self, run: str, seed: int | None = None) -> str:
        """The checkpoint other runs read from `run` (at `seed`, for a run repeated per seed): its reused `ckpt`,
        else its run dir's last.ckpt."""
        spec = self.runs[run]
        if spec.ckpt:
            return spec.ckpt
        instance = self.instance_name(spec, seed if spec.repeats and self.seeds else None)
        return str(self.run_dir(instance) / "checkpoints" / "last.ckpt")

    def seeds_of(self, run: RunSpec) -> list[int | None]:
        """Compared and seeded runs repeat once per seed (the run's own `seeds`, else the study's); the others
        (autoencoders) run once."""
        if not (run.repeats and self.seeds):
            return [None]
        return list(run.seeds if run.seeds is not None else self.seeds)

    @staticmethod
    def instance_name(run: RunSpec, seed: int | None) -> str:
        return run.name if seed is None else f"{run.name}-seed{seed}"


@dataclass
class LatentsSpec:
    """Latent spaces measured per seed: `lafa analyze` on each run instance's autoencoder (the study's
    `analysis.args`), plus the final value of logged `metrics` (e.g. reconstruction); `contrast` [a, b] reports
    a - b seed by seed (paired) with its interval."""

    runs: list[str]
    metrics: list[str] = field(default_factory=list)
    contrast: list[str] | None = None


def _looks_like_path(value: str) -> bool:
    return "/" in value or value.endswith((".ckpt", ".safetensors", ".pt"))


def _require(raw: dict, key: str, source: str) -> Any:
    if key not in raw or raw[key] in (None, "", [], {}):
        raise ValueError(f"study config {source}: missing required key '{key}'")
    return raw[key]


def _check_names(section: str, names: list, known: list[str], what: str, source: str) -> None:
    """Every name a section gives must be one of `known` (`what` names them): a misspelled run would otherwise
    drop silently out of the report."""
    for name in names:
        if name not in known:
            raise ValueError(f"study config {source}: {section} names unknown run '{name}' "
                             f"({what}: {listing(known)})")


LAB_KEYS = ("excess_target", "contrasts", "window", "permutations", "link1")  # what lafa.study.lab_report reads
LINK1_KEYS = ("runs", "control", "clips", "window", "permutations", "prefix_channels")


def _check_keys(section: str, settings: dict, known: tuple[str, ...], source: str) -> None:
    """A misspelled setting (`excess_targt`) would silently fall back to its default: refused, naming the known ones."""
    unknown = [key for key in settings if key not in known]
    if unknown:
        raise ValueError(f"study config {source}: unknown key(s) in {section}: {listing(unknown)} "
                         f"(known: {listing(known)})")


def _check_lab(lab: Any, runs: dict[str, RunSpec], source: str) -> None:
    """The runs `lab` names (lafa.study.lab_report): contrasts [a, b] of compared runs, link1.runs among the
    runs, link1.control one of link1.runs."""
    if not isinstance(lab, dict):
        raise ValueError(f"study config {source}: lab must be a mapping of report settings, got {lab!r}")
    _check_keys("lab", lab, LAB_KEYS, source)
    compared = [name for name, run in runs.items() if run.compare]
    for pair in lab.get("contrasts") or []:
        if not isinstance(pair, list) or len(pair) != 2:
            raise ValueError(f"study config {source}: lab.contrasts entries must be [a, b] pairs, "
                             f"got {pair!r}")
        _check_names("lab.contrasts", pair, compared, "compared runs", source)
    link1 = lab.get("link1")
    if not link1:
        return
    if not isinstance(link1, dict):
        raise ValueError(f"study config {source}: lab.link1 must be a mapping (runs, control, ...), "
                         f"got {link1!r}")
    _check_keys("lab.link1", link1, LINK1_KEYS, source)
    names = list(link1.get("runs") or [])
    _check_names("lab.link1.runs", names, list(runs), "runs", source)
    if link1.get("control") is not None:
        _check_names("lab.link1.control", [link1["control"]], names, "lab.link1.runs", source)


def _run_seeds(raw: dict[str, Any], run: dict[str, Any], source: str) -> list[int] | None:
    """A run's own `seeds`: a non-empty subset of the study's seeds (so seed s is still one whole chain)."""
    if run.get("seeds") is None:
        return None
    seeds = [int(s) for s in run["seeds"]]
    study_seeds = [int(s) for s in raw.get("seeds") or []]
    if not seeds or not set(seeds) <= set(study_seeds):
        raise ValueError(f"study config {source}: seeds {seeds} must be a non-empty subset of the study's seeds "
                         f"{study_seeds}")
    if not (run.get("compare") or run.get("seeded")):
        raise ValueError(f"study config {source}: seeds only apply to a run with compare: true or seeded: true")
    return seeds


def _jobs(value: Any, source: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"study config {source}: jobs must be a whole number >= 1 (runs trained at once), "
                         f"got {value!r}")
    return value


def _overlay(base: Any, over: Any) -> Any:
    """`over` merged into `base` key by key (the study's own keys, not a `lafa fit` config: a `set` key is a
    dotted name, not a path)."""
    if not (isinstance(base, dict) and isinstance(over, dict)):
        return over
    return {**base, **{k: _overlay(base[k], v) if k in base else v for k, v in over.items()}}


def load_raw(paths: list[str | Path]) -> dict[str, Any]:
    """Deep-merge the study YAML files in order."""
    merged: dict[str, Any] = {}
    for path in paths:
        merged = _overlay(merged, _load_yaml(path, "study config"))
    return merged


def parse_study(raw: dict[str, Any], source: str = "<study>") -> Study:
    """Validate a merged study mapping and build the Study (errors name the offending key)."""
    unknown = set(raw) - {"name", "factor", "factor_keys", "out_dir", "stages", "runs", "baseline", "metrics",
                          "seeds", "analysis", "lafa", "latents", "env", "lab", "jobs"}
    if unknown:
        raise ValueError(f"study config {source}: unknown keys {sorted(unknown)}")
    stages = {}
    for name, stage in _require(raw, "stages", source).items():
        if isinstance(stage, list):
            stage = {"config": stage}
        config = stage.get("config")
        if not config:
            raise ValueError(f"study config {source}: stages.{name}.config must list at least one YAML")
        stages[name] = StageSpec(config=[str(c) for c in config], set=dict(stage.get("set") or {}))

    runs = {}
    for name, run in _require(raw, "runs", source).items():
        run = dict(run or {})
        unknown = set(run) - {"stage", "set", "ckpt", "compare", "latent", "label", "value", "seeded", "seeds"}
        if unknown:
            raise ValueError(f"study config {source}: runs.{name} has unknown keys {sorted(unknown)}")
        stage = _require(run, "stage", f"{source} runs.{name}")
        if stage not in stages:
            raise ValueError(f"study config {source}: runs.{name}.stage '{stage}' is not one of {sorted(stages)}")
        runs[name] = RunSpec(name=name, stage=stage, set=dict(run.get("set") or {}), ckpt=run.get("ckpt"),
                             compare=bool(run.get("compare", False)), latent=run.get("latent"),
                             label=run.get("label"), value=run.get("value"), seeded=bool(run.get("seeded", False)),
                             seeds=_run_seeds(raw, run, f"{source} runs.{name}"))

    for run in runs.values():
        for dep in run.needs:
            if dep not in runs:
                raise ValueError(f"study config {source}: runs.{run.name} refers to unknown run '{dep}' "
                                 f"(runs: {listing(runs)})")
            if runs[dep].repeats and raw.get("seeds") and not run.repeats:
                raise ValueError(f"study config {source}: runs.{run.name} runs once but depends on '{dep}', which "
                                 f"repeats per seed: mark runs.{run.name} seeded: true (or compare: true)")
            if runs[dep].repeats and run.repeats and raw.get("seeds"):
                missing = set(run.seeds or raw["seeds"]) - set(runs[dep].seeds or raw["seeds"])
                if missing:
                    raise ValueError(f"study config {source}: runs.{run.name} runs seeds {sorted(missing)} that "
                                     f"'{dep}', which it reads, does not run: give it the same seeds or fewer")

    metrics = _require(raw, "metrics", source)
    if not isinstance(metrics, dict) or any(m not in ("min", "max") for m in metrics.values()):
        raise ValueError(f"study config {source}: metrics must map each metric to 'min' or 'max', got {metrics!r}")
    baseline = _require(raw, "baseline", source)
    if baseline not in runs or not runs[baseline].compare:
        raise ValueError(f"study config {source}: baseline '{baseline}' must be a run with compare: true "
                         f"(compared runs: {listing(r.name for r in runs.values() if r.compare)})")
    lafa = raw.get("lafa")
    latents = None
    if raw.get("latents"):
        spec = dict(raw["latents"])
        unknown = set(spec) - {"runs", "metrics", "contrast"}
        if unknown:
            raise ValueError(f"study config {source}: latents has unknown keys {sorted(unknown)}")
        latents = LatentsSpec(runs=list(_require(spec, "runs", f"{source} latents")),
                              metrics=list(spec.get("metrics") or []), contrast=spec.get("contrast"))
        _check_names("latents", latents.runs + list(latents.contrast or []), list(runs), "runs", source)
        if latents.contrast is not None and (len(latents.contrast) != 2 or not set(latents.contrast) <= set(latents.runs)):
            raise ValueError(f"study config {source}: latents.contrast must name two of latents.runs")
        if not raw.get("analysis"):
            raise ValueError(f"study config {source}: latents needs an analysis section (`lafa analyze` arguments)")
    if raw.get("lab"):
        _check_lab(raw["lab"], runs, source)
    study = Study(
        name=_require(raw, "name", source),
        factor=_require(raw, "factor", source),
        factor_keys=list(_require(raw, "factor_keys", source)),
        out_dir=str(_require(raw, "out_dir", source)),
        stages=stages,
        runs=runs,
        baseline=baseline,
        metrics=dict(metrics),
        seeds=[int(s) for s in raw["seeds"]] if raw.get("seeds") else None,
        analysis=raw.get("analysis"),
        lafa=None if lafa is None else shlex.split(lafa) if isinstance(lafa, str) else list(lafa),
        latents=latents,
        env={str(k): str(v) for k, v in raw["env"].items()} if raw.get("env") else None,
        lab=dict(raw["lab"]) if raw.get("lab") else None,
        jobs=_jobs(raw.get("jobs", 1), source),
    )
    order_runs(study)  # fails early on a dependency cycle
    return study


def load_study(paths: list[str | Path]) -> Study:
    return parse_study(load_raw(paths), source=" + ".join(str(p) for p in paths))


def order_runs(study: Study) -> list[RunSpec]:
    """Runs in dependency order (a run after every run it needs), otherwise in the order the YAML lists them."""
    ordered: list[RunSpec] = []
    state: dict[str, str] = {}

    def visit(name: str, chain: list[str]) -> None:
        if state.get(name) == "done":
            return
        if state.get(name) == "visiting":
            raise ValueError(f"study {study.name}: dependency cycle {' -> '.join([*chain, name])}")
        state[name] = "visiting"
        for dep in study.runs[name].needs:
            visit(dep, [*chain, name])
        state[name] = "done"
        ordered.append(study.runs[name])

    for name in study.runs:
        visit(name, [])
    return ordered
