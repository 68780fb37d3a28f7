"""The study report: curves from each run's TensorBoard log, steps-to-target, speed-up, alpha and LPI.

Steps-to-target (Fig. 1, Sec. 5.2): the target is the baseline's final value of a metric; a run's steps are
the first step its curve reaches the target, linearly interpolated between the two evaluations around the
crossing. A run that never reaches it is "not reached", never a number. Speed-up = baseline steps / run steps,
computed seed by seed (the baseline of the same seed) and summarised as mean and sample std across seeds.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lafa.study.curves import Curve, figure, read_curves, steps_to_target
from lafa.study.frontier import (
    dit_criteria,
    dit_criteria_markdown,
    frontier_markdown,
    frontier_report,
    matched_locality,
    matched_markdown,
    plot_frontier,
)
from lafa.study.lab_report import lab_markdown, lab_section, plot_lab
from lafa.study.latents import latent_runs_report, latents_markdown, run_analyze
from lafa.study.runner import DONE, instances, run_env
from lafa.study.spec import Study

NOT_REACHED = "not reached"
EXCLUDED = "excluded"  # every seed of the run (or of the baseline) missed a learning criterion (dit_criteria)
METRIC_LABELS = {
    "val/loss": "validation loss (fixed t grid, fixed noise)",
    "val/fd_mel": "log-mel Frechet distance (offline, no pretrained weights; not FD_openl3)",
    "val/fd_openl3": "FD_openl3",
    "val/kl_passt": "KL_PaSST",
    "val/clap": "CLAP score",
}



def summarise(values: list[float | None]) -> dict[str, Any] | str:
    """Mean and sample std (ddof 1; None for one seed) over seeds, or "not reached" if any seed did not."""
    if any(v is None for v in values):
        return NOT_REACHED
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else None,
            "n": len(values)}


def _format(stat: dict[str, Any] | str, digits: int = 2) -> str:
    if isinstance(stat, str):
        return stat
    text = f"{stat['mean']:.{digits}f}"
    return text + (f" +- {stat['std']:.{digits}f}" if stat["std"] is not None else "")


def _seed_entry(curves: dict[str, Curve], base: dict[str, Curve], metrics: dict[str, str]) -> dict[str, Any]:
    """One run at one seed against the baseline at the same seed, metric by metric."""
    entry: dict[str, Any] = {"curves": {}, "final": {}, "target": {}, "steps_to_target": {}, "speedup": {}}
    for metric, mode in metrics.items():
        curve, base_curve = curves.get(metric, []), base.get(metric, [])
        entry["curves"][metric] = [list(p) for p in curve]
        entry["final"][metric] = curve[-1][1] if curve else None
        if not curve or not base_curve:
            entry["target"][metric] = entry["steps_to_target"][metric] = entry["speedup"][metric] = None
            continue
        target = base_curve[-1][1]
        steps, base_steps = steps_to_target(curve, target, mode), steps_to_target(base_curve, target, mode)
        entry["target"][metric] = target
        entry["steps_to_target"][metric] = NOT_REACHED if steps is None else steps
        entry["speedup"][metric] = NOT_REACHED if steps is None else base_steps / steps
    return entry


def _summary(cells: list[dict[str, Any]], metric: str) -> dict[str, Any]:
    """Across seeds: mean +- std of the final value, steps to target and speed-up (or "not reached")."""
    if any(c["target"][metric] is None for c in cells):
        return {"steps_to_target": None, "speedup": None, "final": None}
    values = {key: [None if c[key][metric] == NOT_REACHED else c[key][metric] for c in cells]
              for key in ("steps_to_target", "speedup", "final")}
    return {key: summarise(v) for key, v in values.items()}


def build_report(study: Study, latents: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """Everything the report states, as plain JSON-able data. `latents` maps a run name to the analysis of the
    latent space it models (alpha, LPI, ...)."""
    logged: dict[str, dict[str, dict[str, Curve]]] = {}  # run -> seed -> metric -> curve
    finished: dict[str, bool] = {}
    for inst in instances(study):
        if inst.run.compare:
            seed = "seed" if inst.seed is None else str(inst.seed)
            logged.setdefault(inst.run.name, {})[seed] = read_curves(inst.dir / "tb")
            finished[inst.run.name] = finished.get(inst.run.name, True) and (inst.dir / DONE).exists()
    latent_runs = latent_runs_report(study)
    latents = {**_from_latent_table(study, latent_runs), **(latents or {})}
    matched = _matched(study)
    missed = {(name, seed) for name, run in matched["dit_criteria"]["runs"].items()
              for seed, entry in run["seeds"].items() if entry["excluded"]}
    runs = {}
    for run in study.compared:
        # the run's own seeds (a per-run `seeds` may name fewer), each against the baseline at the same seed
        seeds = [s for s in logged[run.name] if s in logged[study.baseline]]
        per_seed = {seed: _seed_entry(logged[run.name][seed], logged[study.baseline][seed], study.metrics)
                    for seed in seeds}
        # a seed where this run or the baseline missed a learning criterion is left out, never averaged in
        kept = [s for s in seeds if (run.name, s) not in missed and (study.baseline, s) not in missed]
        runs[run.name] = {
            "label": run.label or run.name, "value": run.value, "finished": finished[run.name],
            "latent": (latents or {}).get(run.name),
            "summary": {m: _summary([per_seed[s] for s in kept], m) if kept else dict.fromkeys(
                ("steps_to_target", "speedup", "final"), EXCLUDED) for m in study.metrics},
            "seeds": per_seed, "excluded_seeds": [s for s in seeds if s not in kept],
        }
    return {"study": study.name, "factor": study.factor, "baseline": study.baseline,
            "metrics": {m: {"better": mode, "label": METRIC_LABELS.get(m, m)} for m, mode in study.metrics.items()},
            "headline_metric": next(iter(study.metrics)), "seeds": study.seeds, "runs": runs,
            "latent_runs": latent_runs, "lab": lab_section(study), **matched}


def _from_latent_table(study: Study, latent_runs: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    """alpha and LPI of a compared run's latent measured seed by seed (the latent table): their means over seeds."""
    measured = (latent_runs or {}).get("runs") or {}
    out = {}
    for run in study.compared:
        summary = (measured.get(run.latent) or {}).get("summary") or {}
        if summary.get("alpha") and summary.get("lpi"):
            out[run.name] = {"latent": run.latent, "alpha": summary["alpha"]["mean"], "lpi": summary["lpi"]["mean"],
                             "seeds": summary["alpha"]["n"], "source": "latent table: mean over seeds"}
    return out


def _matched(study: Study) -> dict[str, Any]:
    """The matched-reconstruction parts of the report: the LAFA arms' frontier and the DiTs' learning criteria."""
    frontier = frontier_report(study)
    contrast = study.latents.contrast[0] if study.latents and study.latents.contrast else None
    return {"frontier": frontier, "matched": matched_locality(frontier, reference=contrast),
            "dit_criteria": dit_criteria(study, frontier)}


def analyze_latents(study: Study, log: Callable[[str], Any] = print) -> dict[str, dict[str, Any]]:
    """alpha and LPI (Sec. 3) of the latent space each compared run models, keyed by run.

    One `lafa analyze` call over every latent space whose autoencoder is ready (reused or finished), on the
    same clips, into `<out_dir>/analysis/` (report.json with mel beside them, and the figures); a later report
    reuses it unless a latent space was added since. Nothing runs when the study has no `analysis` section."""
    if not study.analysis:
        return {}
    latents: dict[str, str] = {}  # latent label -> autoencoder checkpoint
    for run in study.compared:
        if run.latent is None:
            continue
        in_study = run.latent in study.runs
        if in_study and study.latents and run.latent in study.latents.runs and study.seeds_of(
                study.runs[run.latent]) != [None]:
            continue  # a latent repeated per seed is measured seed by seed in the latent table (lafa.study.latents)
        label = run.latent if in_study else Path(run.latent).stem
        ckpt = study.final_checkpoint(run.latent) if in_study else run.latent
        done = not in_study or study.runs[run.latent].ckpt or (study.run_dir(run.latent) / DONE).exists()
        if done and Path(ckpt).is_file():
            latents[label] = ckpt
        else:
            log(f"[study {study.name}] latent '{label}' not ready ({ckpt}): no alpha/LPI for {run.name}")
    if not latents:
        return {}
    analysis = run_analyze(study, latents, "analysis", log, run_env(study), lambda code: (
        f"[study {study.name}] `lafa analyze` failed (exit {code}): no alpha/LPI in the report"))
    if analysis is None:  # the convergence report stands without alpha/LPI
        return {}
    summary = analysis["summary"]
    path = Path(study.out_dir) / "analysis" / "report.json"
    results = {}
    for run in study.compared:
        label = None if run.latent is None else run.latent if run.latent in study.runs else Path(run.latent).stem
        if label in summary:
            results[run.name] = {"latent": label, "checkpoint": latents.get(label), "alpha": summary[label]["alpha"],
                                 "lpi": summary[label]["lpi"], "mel": summary.get("mel"), "analysis": str(path),
                                 # permutation baselines, eigen measures, bootstrap intervals (lafa.analysis.controls)
                                 "controls": {k: v for k, v in summary[label].items() if k not in ("alpha", "lpi")}}
    return results


def markdown_table(report: dict[str, Any]) -> str:
    metric = report["headline_metric"]
    lines = [f"Study `{report['study']}` ({report['factor']}); metric: {report['metrics'][metric]['label']} "
             f"(`{metric}`, {'lower' if report['metrics'][metric]['better'] == 'min' else 'higher'} is better); "
             f"target: the final value of `{report['baseline']}`"
             + ("; a run's seeds where it or the baseline missed a learning criterion (DiT table below) are left "
                "out of its summary, and a run with none left is `excluded`." if any(
                 r.get("excluded_seeds") for r in report["runs"].values()) else "."), "",
             "| run | alpha | LPI | final | steps to target | speed-up |", "|---|---|---|---|---|---|"]
    for run in report["runs"].values():
        latent = run["latent"] or {}
        alpha = f"{latent['alpha']:.2f}" if latent.get("alpha") is not None else "-"
        lpi = f"{latent['lpi']:.3f}" if latent.get("lpi") is not None else "-"
        s = run["summary"][metric]
        cells = ["-" if s[k] is None else _format(s[k], 4 if k == "final" else 2 if k == "speedup" else 0)
                 for k in ("final", "steps_to_target", "speedup")]
        label = run["label"] + ("" if run["finished"] else " (unfinished)")
        left_out = run.get("excluded_seeds") or []
        if left_out and s["final"] != EXCLUDED:
            label += f" (seeds {', '.join(left_out)} excluded)"
        lines.append(f"| {label} | {alpha} | {lpi} | " + " | ".join(cells) + " |")
    mel = next((r["latent"]["mel"] for r in report["runs"].values() if (r["latent"] or {}).get("mel")), None)
    if mel:
        lines += ["", f"Log-mel of the same clips: alpha {mel['alpha']:.2f}, LPI {mel['lpi']:.3f} (`lafa analyze`)."]
    lines += controls_table(report)
    if report.get("latent_runs"):
        lines.append(latents_markdown(report["latent_runs"]).rstrip("\n"))
    if report.get("lab"):
        lines.append(lab_markdown(report["lab"]).rstrip("\n"))
    silent = [m for m in report["metrics"]
              if not any(seed["curves"][m] for run in report["runs"].values() for seed in run["seeds"].values())]
    if silent:
        lines += ["", "Not logged by these runs: " + ", ".join(f"`{m}`" for m in silent) + "."]
    return "\n".join(lines) + "\n"


def controls_table(report: dict[str, Any]) -> list[str]:
    """Markdown lines: every locality measure of each run's latent (and of mel) with its bootstrap interval,
    when `lafa analyze` computed them (lafa.analysis.controls); nothing otherwise."""
    from lafa.analysis.latent_report import measures_table

    summary = {}
    for run in report["runs"].values():
        latent = run["latent"] or {}
        if latent.get("controls"):
            summary[f"{run['label']} ({latent['latent']})"] = {"alpha": latent["alpha"], "lpi": latent["lpi"],
                                                               **latent["controls"]}
    mel = next((r["latent"]["mel"] for r in report["runs"].values() if (r["latent"] or {}).get("mel")), None)
    if not summary:
        return []
    if mel and "intervals" in mel:
        summary["mel"] = mel
    headings, rows = measures_table(summary)
    return ["", "Locality controls of each latent space (`lafa analyze`; bootstrap intervals over clips; perm. = "
            "the same latent with its channels randomly permuted; excess = measured - perm.; PR = participation "
            "ratio of the channel covariance):", "", "| " + " | ".join(headings) + " |",
            "|" + "---|" * len(headings), *("| " + " | ".join(r) + " |" for r in rows)]


def plot_curves(report: dict[str, Any], path: Path) -> None:
    """Fig. 1 style: each metric against training steps, one colour per run (latent space), one line per seed."""
    metrics = list(report["metrics"])
    with figure(path, 1, len(metrics), figsize=(5 * len(metrics), 3.6), squeeze=False) as (fig, axes):
        for ax, metric in zip(axes[0], metrics, strict=True):
            for i, run in enumerate(report["runs"].values()):
                for j, seed in enumerate(run["seeds"].values()):
                    curve = seed["curves"][metric]
                    if curve:
                        ax.plot([p[0] for p in curve], [p[1] for p in curve], color=f"C{i}",
                                alpha=0.9 if j == 0 else 0.5, label=run["label"] if j == 0 else None)
            base = report["runs"][report["baseline"]]["summary"][metric]["final"]
            if isinstance(base, dict):
                ax.axhline(base["mean"], color="gray", ls="--", lw=0.8, label="target (baseline final)")
            ax.set_xlabel("training steps")
            ax.set_ylabel(metric)
            ax.set_title(report["metrics"][metric]["label"], fontsize=8)
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=7)
        fig.suptitle(f"study {report['study']}: {report['factor']}", fontsize=9)


def plot_factor(report: dict[str, Any], path: Path) -> bool:
    """Fig. 5 style: the headline metric's final value against the factor's numeric level (e.g. mask ratio);
    runs without a level (the baseline) are drawn as horizontal lines. False if no run has a level."""
    metric = report["headline_metric"]
    points = [(r["value"], r["summary"][metric]["final"]) for r in report["runs"].values()
              if r["value"] is not None and isinstance(r["summary"][metric]["final"], dict)]
    if not points:
        return False
    points.sort(key=lambda p: p[0])
    with figure(path, figsize=(4.5, 3.4)) as (fig, ax):
        ax.errorbar([p[0] for p in points], [p[1]["mean"] for p in points],
                    yerr=[p[1]["std"] or 0.0 for p in points], marker="o", capsize=3, label="runs")
        for i, run in enumerate(r for r in report["runs"].values() if r["value"] is None):
            final = run["summary"][metric]["final"]
            if isinstance(final, dict):
                ax.axhline(final["mean"], color=f"C{i + 1}", ls="--", label=run["label"])
        ax.set_xlabel(report["factor"])
        ax.set_ylabel(f"final {metric}")
        ax.set_title(report["metrics"][metric]["label"], fontsize=8)
        ax.legend(fontsize=7)
    return True


def write_html_report(report: dict[str, Any], paths: dict[str, Path]) -> Path:
    """report.html beside report.json: the tables, curves.png/factor.png and, from the study's `lafa analyze`
    report (when the runs carry one), its figures and listening clips, and the settings; self-contained."""
    from lafa.analysis.html import FIGURE_CAPTIONS, study_page, write_html

    figures = {"convergence curves (Fig. 1 style): each metric against training steps, one line per seed": paths["curves"]}
    if "factor" in paths:
        figures["final value of the headline metric against the factor's level (Fig. 5 style)"] = paths["factor"]
    if "frontier" in paths:
        figures["reconstruction-vs-locality frontier: locality at each LAFA validation against its held-out "
                "relative MSE"] = paths["frontier"]
    analysis_path = next((r["latent"]["analysis"] for r in report["runs"].values() if (r["latent"] or {}).get("analysis")), None)
    analysis = json.loads(Path(analysis_path).read_text()) if analysis_path and Path(analysis_path).is_file() else {}
    for name, png in (analysis.get("figures") or {}).items():
        figures[f"lafa analyze: {FIGURE_CAPTIONS.get(name, name.replace('_', ' '))}"] = png
    settings = {"study": report["study"], "factor": report["factor"], "baseline": report["baseline"],
                "seeds": report["seeds"], "metrics": report["metrics"],
                "runs": {name: {"label": r["label"], "value": r["value"], "finished": r["finished"]}
                         for name, r in report["runs"].items()}}
    if analysis:
        settings["analysis"] = {"report": analysis_path, **analysis.get("settings", {})}
    sections = {"LAFA arms at their final checkpoint": frontier_markdown(report.get("frontier") or {}),
                "locality at matched reconstruction": matched_markdown(report.get("matched") or {}),
                "learning criteria of the DiTs": dit_criteria_markdown(report.get("dit_criteria") or {})}
    text = study_page(report, {k: str(v) for k, v in figures.items()}, controls_table(report),
                      analysis.get("audio") or {}, settings, sections)
    return write_html(text, paths["json"].with_name("report.html"))


def write_report(report: dict[str, Any], out_dir: str | Path) -> dict[str, Path]:
    """report.json, report.md, curves.png, (when runs carry factor levels) factor.png and report.html in out_dir."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / "report.json", "markdown": out_dir / "report.md", "curves": out_dir / "curves.png"}
    paths["json"].write_text(json.dumps(report, indent=2, allow_nan=True) + "\n")
    paths["markdown"].write_text(markdown_table(report) + frontier_markdown(report.get("frontier") or {})
                                 + matched_markdown(report.get("matched") or {})
                                 + dit_criteria_markdown(report.get("dit_criteria") or {}))
    plot_curves(report, paths["curves"])
    if plot_lab(report.get("lab"), out_dir / "lab_excess.png"):
        paths["lab"] = out_dir / "lab_excess.png"
    if plot_frontier(report.get("frontier") or {}, out_dir / "frontier.png"):
        paths["frontier"] = out_dir / "frontier.png"
    if plot_factor(report, out_dir / "factor.png"):
        paths["factor"] = out_dir / "factor.png"
    paths["html"] = write_html_report(report, paths)
    return paths
