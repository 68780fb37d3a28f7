"""The measured latent spaces of a study, seed by seed (the locality study's LAFA arm, docs/study.md).

For every instance of the runs named in the study's `latents` section (a run repeated per seed gives one
instance per seed), one `lafa analyze` call measures every latent space on the same clips (the study's
`analysis.args`) into `<out_dir>/analysis_latents/`; each instance's final value of the logged `metrics`
(e.g. `val/k2/latent_rel_mse`) comes from its TensorBoard log. Per run: mean, sample std and a 95% Student-t
interval over seeds of every number; for `contrast: [a, b]`, the paired difference a - b seed by seed with its
interval. Nothing here decides what the numbers mean: an interval that contains 0 is reported as such.
"""

from __future__ import annotations

import json
import math
import shlex
import statistics
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lafa.study.curves import read_curves
from lafa.study.runner import DONE, instances, lafa_command, run_env
from lafa.study.spec import Study

ANALYSIS_DIR = "analysis_latents"


def _numbers(value: Any, prefix: str = "") -> dict[str, float]:
    """Numeric leaves of a nested mapping as {dotted key: float} (lists and strings are left out)."""
    if isinstance(value, bool):
        return {}
    if isinstance(value, (int, float)):
        return {prefix: float(value)} if math.isfinite(float(value)) else {}
    if isinstance(value, dict):
        out: dict[str, float] = {}
        for k, v in value.items():
            out.update(_numbers(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {}


def interval(values: list[float]) -> dict[str, Any]:
    """Mean, sample std (ddof 1) and the 95% Student-t interval of the mean over seeds (None for one seed)."""
    n = len(values)
    mean = statistics.fmean(values)
    if n < 2:
        return {"mean": mean, "std": None, "ci95": None, "n": n}
    from scipy.stats import t

    std = statistics.stdev(values)
    half = float(t.ppf(0.975, n - 1)) * std / math.sqrt(n)
    return {"mean": mean, "std": std, "ci95": [mean - half, mean + half], "n": n}


def _final_values(tb_dir: Path, metrics: list[str]) -> dict[str, float]:
    curves = read_curves(tb_dir)
    return {m: curves[m][-1][1] for m in metrics if curves.get(m)}


def run_analyze(study: Study, ckpts: dict[str, str], folder: str, log: Callable[[str], Any],
                env: dict[str, str] | None, failed: Callable[[int], str]) -> dict[str, Any] | None:
    """`lafa analyze` of `ckpts` (label -> checkpoint), with the study's `analysis.args`, into
    `<out_dir>/<folder>/` unless its report.json already holds every label: that report, or None when the call
    failed (logged: `failed(exit code)`)."""
    out = Path(study.out_dir) / folder
    path = out / "report.json"
    if not path.is_file() or not set(ckpts) <= set(json.loads(path.read_text())["summary"]):
        command = [*lafa_command(study), "analyze", "--ckpt_path", *ckpts.values(), "--label", *ckpts,
                   "--out", str(out), *[str(a) for a in (study.analysis or {}).get("args", [])]]
        log("  " + shlex.join(command))
        result = subprocess.run(command, env=env)
        if result.returncode != 0 or not path.is_file():
            log(failed(result.returncode))
            return None
    return json.loads(path.read_text())


def latent_runs_report(study: Study, log: Callable[[str], Any] = print) -> dict[str, Any] | None:
    """Per run of `study.latents`: every analysis number and logged metric per seed, their intervals, and the
    paired contrast. None when the study has no `latents` section; instances not finished are listed."""
    spec = study.latents
    if spec is None:
        return None
    ckpts: dict[str, str] = {}
    where: dict[str, tuple[str, str]] = {}  # instance -> (run, seed label)
    missing = []
    for inst in instances(study):
        if inst.run.name not in spec.runs:
            continue
        ckpt = study.final_checkpoint(inst.run.name, inst.seed)
        if (inst.reused or (inst.dir / DONE).exists()) and Path(ckpt).is_file():
            ckpts[inst.name] = ckpt
            where[inst.name] = (inst.run.name, "seed" if inst.seed is None else str(inst.seed))
        else:
            missing.append(inst.name)
    analysis = None
    if ckpts:
        analysis = run_analyze(study, ckpts, ANALYSIS_DIR, log, run_env(study), lambda code: (
            f"[study {study.name}] `lafa analyze` of the latent runs failed (exit {code})"))
    summary = (analysis or {}).get("summary", {})
    runs: dict[str, dict[str, Any]] = {name: {"label": study.runs[name].label or name, "seeds": {}}
                                       for name in spec.runs}
    for inst_name, (run, seed) in where.items():
        values = _numbers(summary.get(inst_name, {}))
        values.update(_final_values(study.run_dir(inst_name) / "tb", spec.metrics))
        runs[run]["seeds"][seed] = values
    for entry in runs.values():
        keys = sorted(set().union(*entry["seeds"].values())) if entry["seeds"] else []
        entry["summary"] = {k: interval([v[k] for v in entry["seeds"].values() if k in v]) for k in keys}
    contrast = None
    if spec.contrast:
        a, b = (runs[r]["seeds"] for r in spec.contrast)
        common = sorted(set(a) & set(b))
        keys = sorted(set().union(*(a[s].keys() & b[s].keys() for s in common))) if common else []
        contrast = {"runs": list(spec.contrast), "seeds": common,
                    "difference": {k: interval([a[s][k] - b[s][k] for s in common if k in a[s] and k in b[s]])
                                   for k in keys}}
    mel = _numbers(summary.get("mel", {}))
    return {"runs": runs, "contrast": contrast, "mel": mel or None, "missing": missing,
            "metrics": list(spec.metrics),
            "analysis": str(Path(study.out_dir) / ANALYSIS_DIR / "report.json") if analysis else None}


def cell(stat: dict[str, Any] | str | float | None, digits: int = 3) -> str:
    """A table cell: "-" for nothing, a string as is, a number, or a summary's mean [95% interval]."""
    if stat is None:
        return "-"
    if isinstance(stat, str):
        return stat
    if isinstance(stat, (int, float)):
        return f"{stat:.{digits}f}"
    text = f"{stat['mean']:.{digits}f}"
    if stat.get("ci95"):
        lo, hi = stat["ci95"]
        text += f" [{lo:.{digits}f}, {hi:.{digits}f}]"
    return text


def latents_markdown(section: dict[str, Any] | None, max_columns: int = 8) -> str:
    """The latent runs' table (mean [95% t-interval] over seeds) and the paired contrast, as markdown."""
    if not section:
        return ""
    keys = sorted(set().union(*(r["summary"] for r in section["runs"].values())))
    preferred = [k for k in section["metrics"] if k in keys]
    preferred += [k for k in keys if k not in preferred]
    columns = preferred[:max_columns]
    lines = ["", "Latent spaces (mean [95% t-interval] over seeds; `lafa analyze` on the same clips, final logged "
             "metrics):", "", "| run | seeds | " + " | ".join(f"`{c}`" for c in columns) + " |",
             "|---|---|" + "---|" * len(columns)]
    for run in section["runs"].values():
        lines.append(f"| {run['label']} | {len(run['seeds'])} | "
                     + " | ".join(cell(run["summary"].get(c)) for c in columns) + " |")
    if len(preferred) > max_columns:
        lines.append(f"\n({len(preferred) - max_columns} more numbers per run in report.json: "
                     + ", ".join(f"`{k}`" for k in preferred[max_columns:]) + ")")
    if section.get("mel"):
        mel = section["mel"]
        lines.append("\nLog-mel of the same clips: " + ", ".join(f"{k} {v:.3f}" for k, v in list(mel.items())[:6]))
    contrast = section.get("contrast")
    if contrast and contrast["difference"]:
        a, b = contrast["runs"]
        diff = contrast["difference"]
        lines += ["", f"Paired difference `{a}` - `{b}` over seeds {contrast['seeds']} (mean [95% t-interval]; an "
                  "interval containing 0 is no evidence of a difference):", "",
                  "| " + " | ".join(f"`{c}`" for c in columns if c in diff) + " |",
                  "|" + "---|" * len([c for c in columns if c in diff]),
                  "| " + " | ".join(cell(diff[c]) for c in columns if c in diff) + " |"]
    if section.get("missing"):
        lines.append("\nNot finished (left out): " + ", ".join(section["missing"]))
    return "\n".join(lines) + "\n"
