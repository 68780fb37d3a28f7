"""Matched reconstruction (issue 22, docs/study.md "Real music"): the LAFA arms' reconstruction-vs-locality
frontier, their locality compared at one reconstruction level with intervals over seeds, and the DiTs' learning
criteria (a DiT, or the LAFA arm it reads, that missed one is left out of comparisons)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lafa.study.curves import figure, read_curves, steps_to_target
from lafa.study.latents import cell, interval
from lafa.study.runner import DONE, instances
from lafa.study.spec import Study

RECONSTRUCTION_METRIC = "val/k2/latent_rel_mse"  # held-out relative MSE of the 2-step decode (docs/lafa.md)
POSTERIOR_METRIC = "val/k2/posterior_rel_mse"  # the same for the mean of several decodes
LEARNED_REL_MSE = 0.5  # learning criterion of a LAFA arm: held-out relative MSE at or below this
FRONTIER_MEASURES = ("lpi_excess", "alpha_excess", "lpi_group_order_excess", "lpi_within_group_excess",
                     "alpha_group_order_excess", "participation_ratio", "lpi", "alpha")


def frontier_report(study: Study, threshold: float = LEARNED_REL_MSE) -> dict[str, Any]:
    """Per LAFA arm (a run of the study's `latents` section that logs `RECONSTRUCTION_METRIC`) and seed: at each
    validation step, the held-out reconstruction (k = 2 decode and posterior mean) beside the locality the
    `LatentLocalityCallback` logged at that step (analysis/latent_<measure> and its interval bounds); the
    arm's final point (its last checkpoint: the one a DiT reads), whether it met the learning criterion
    (final relative MSE <= threshold), and the first step at or below the threshold. Instances not started give
    no points and are listed as missing."""
    names = list(study.latents.runs) if study.latents else [r.name for r in study.runs.values() if r.stage == "lafa"]
    arms: dict[str, Any] = {}
    for inst in instances(study):
        if inst.run.name not in names:
            continue
        curves = read_curves(inst.dir / "tb")
        if RECONSTRUCTION_METRIC not in curves and ((inst.dir / "tb").is_dir() or "lafa" not in inst.run.stage):
            continue  # not a LAFA (the stand-in, a rotation): no reconstruction to match
        arm = arms.setdefault(inst.run.name, {"label": inst.run.label or inst.run.name, "seeds": {}, "missing": []})
        seed = "seed" if inst.seed is None else str(inst.seed)
        if RECONSTRUCTION_METRIC not in curves:
            arm["missing"].append(seed)
            continue
        by_step: dict[int, dict[str, float]] = {}
        for tag in (RECONSTRUCTION_METRIC, POSTERIOR_METRIC):
            for step, value in curves.get(tag, []):
                by_step.setdefault(step, {})[tag] = value
        for measure in FRONTIER_MEASURES:
            for suffix in ("", "_low", "_high"):
                for step, value in curves.get(f"analysis/latent_{measure}{suffix}", []):
                    if step in by_step:
                        by_step[step][f"{measure}{suffix}"] = value
        points = [{"step": step, **values} for step, values in sorted(by_step.items())]
        final = points[-1]
        first = steps_to_target([(p["step"], p[RECONSTRUCTION_METRIC]) for p in points], threshold, "min")
        arm["seeds"][seed] = {"points": points, "final": final, "finished": (inst.dir / DONE).exists(),
                              "learned": final[RECONSTRUCTION_METRIC] <= threshold,
                              "first_step_at_threshold": first}
    for arm in arms.values():
        seeds = list(arm["seeds"].values())
        arm["learned"] = bool(seeds) and not arm["missing"] and all(s["learned"] for s in seeds)
        arm["final_rel_mse"] = [s["final"][RECONSTRUCTION_METRIC] for s in seeds]
    return {"metric": RECONSTRUCTION_METRIC, "posterior_metric": POSTERIOR_METRIC, "threshold": threshold,
            "arms": arms}


def frontier_markdown(frontier: dict[str, Any]) -> str:
    """One row per arm and seed: final step, k = 2 and posterior-mean relative MSE, criterion, locality there."""
    if not frontier.get("arms"):
        return ""
    lines = ["", f"LAFA arms at their final checkpoint (the one each DiT reads); learning criterion: held-out "
             f"`{frontier['metric']}` <= {frontier['threshold']}; locality from the validation callback at that step:",
             "", "| arm | seed | step | rel. MSE k=2 | posterior mean | learned | LPI excess | alpha excess | "
             "LPI excess vs group order | PR |", "|---|---|---|---|---|---|---|---|---|---|"]

    def at(point: dict[str, Any], key: str, digits: int = 3) -> str:
        low, high = point.get(f"{key}_low"), point.get(f"{key}_high")
        bounds = None if low is None or high is None else [low, high]
        return "-" if point.get(key) is None else cell({"mean": point[key], "ci95": bounds}, digits)

    for arm in frontier["arms"].values():
        for seed, entry in arm["seeds"].items():
            p = entry["final"]
            lines.append(f"| {arm['label']} | {seed} | {p['step']} | {at(p, frontier['metric'])} | "
                         f"{at(p, frontier['posterior_metric'])} | {'yes' if entry['learned'] else 'no'} | "
                         f"{at(p, 'lpi_excess')} | {at(p, 'alpha_excess', 2)} | {at(p, 'lpi_group_order_excess')} | "
                         f"{at(p, 'participation_ratio', 1)} |")
        for seed in arm["missing"]:
            lines.append(f"| {arm['label']} | {seed} | not started | - | - | - | - | - | - | - |")
    return "\n".join(lines) + "\n"


MATCHED_MEASURES = ("lpi_excess", "alpha_excess", "lpi_group_order_excess", "lpi_within_group_excess",
                    "participation_ratio")


def at_level(points: list[dict[str, Any]], metric: str, level: float, measure: str) -> float | None:
    """`measure` where the reconstruction curve first falls to `level`: linear in the relative MSE between the two
    validations around the crossing. None when the curve never reaches the level or starts below it (the
    crossing was not observed)."""
    points = [p for p in points if metric in p and measure in p]
    for before, after in zip(points, points[1:], strict=False):
        if after[metric] <= level < before[metric]:
            w = (before[metric] - level) / (before[metric] - after[metric])
            return before[measure] + w * (after[measure] - before[measure])
    return None


def matched_locality(frontier: dict[str, Any], reference: str | None = None,
                     measures: tuple[str, ...] = MATCHED_MEASURES) -> dict[str, Any]:
    """Every arm's locality at one reconstruction level, so no arm wins by carrying less of its input.

    The level is the highest final relative MSE over every arm and seed (the worst final point: every arm reached
    it); each arm's measures are read at its first crossing of that level (`at_level`), summarised over seeds
    (mean, 95% t-interval), and `reference` (default: the first arm) minus each other arm is taken seed by seed
    over their common seeds (paired), with its interval."""
    metric = frontier.get("metric")
    arms = {k: a for k, a in (frontier.get("arms") or {}).items() if a["seeds"]}
    finals = [s["final"][metric] for a in arms.values() for s in a["seeds"].values()]
    if not finals:
        return {}
    level = max(finals)
    out: dict[str, Any] = {"metric": metric, "level": level, "arms": {}, "contrasts": {}}
    for name, arm in arms.items():
        seeds = {seed: {m: at_level(entry["points"], metric, level, m) for m in measures}
                 for seed, entry in arm["seeds"].items()}
        summary = {m: interval(v) if (v := [s[m] for s in seeds.values() if s[m] is not None]) else None
                   for m in measures}
        out["arms"][name] = {"label": arm["label"], "seeds": seeds, "summary": summary}
    reference = reference if reference in out["arms"] else next(iter(out["arms"]))
    ref = out["arms"][reference]["seeds"]
    for name, arm in out["arms"].items():
        if name == reference:
            continue
        common = sorted(set(ref) & set(arm["seeds"]))
        diffs = {m: [ref[s][m] - arm["seeds"][s][m] for s in common
                     if ref[s][m] is not None and arm["seeds"][s][m] is not None] for m in measures}
        out["contrasts"][f"{reference} - {name}"] = {
            "seeds": common, "difference": {m: interval(d) if d else None for m, d in diffs.items()}}
    out["reference"] = reference
    return out


def matched_markdown(matched: dict[str, Any]) -> str:
    """The arms at the matched level (mean [95% t-interval] over seeds) and the paired differences."""
    if not matched.get("arms"):
        return ""

    def crossed(stat: dict[str, Any] | None, digits: int) -> str:
        return cell(stat, digits) if stat else "not crossed"

    heads = " | ".join(m.replace("_", " ") for m in MATCHED_MEASURES)
    lines = ["", f"Locality at matched reconstruction: each arm read where its held-out `{matched['metric']}` first "
             f"falls to {matched['level']:.3f} (the worst final value of any arm and seed, so every arm reached "
             "it; linear between the two validations around the crossing); mean [95% t-interval] over seeds:", "",
             f"| arm | seeds | {heads} |", "|---|---|" + "---|" * len(MATCHED_MEASURES)]
    for arm in matched["arms"].values():
        lines.append(f"| {arm['label']} | {len(arm['seeds'])} | "
                     + " | ".join(crossed(arm["summary"][m], 1 if m == "participation_ratio" else 3)
                                  for m in MATCHED_MEASURES) + " |")
    if matched["contrasts"]:
        lines += ["", "Paired differences at that level, seed by seed (an interval that holds 0 is no difference "
                  "at this number of seeds):", "", f"| difference | seeds | {heads} |",
                  "|---|---|" + "---|" * len(MATCHED_MEASURES)]
        for name, c in matched["contrasts"].items():
            lines.append(f"| {name} | {', '.join(c['seeds'])} | "
                         + " | ".join(crossed(c["difference"][m], 1 if m == "participation_ratio" else 3)
                                      for m in MATCHED_MEASURES) + " |")
    return "\n".join(lines) + "\n"


def plot_frontier(frontier: dict[str, Any], path: Path,
                  measures: tuple[str, ...] = ("lpi_excess", "alpha_excess", "lpi_group_order_excess")) -> bool:
    """The reconstruction-vs-locality frontier: each locality measure against the held-out k = 2 relative MSE at
    every validation, one colour per arm, one line per seed (training runs right to left: reconstruction falls),
    the learning criterion as a dashed line. False when no arm logged a point."""
    arms = {k: a for k, a in frontier.get("arms", {}).items() if a["seeds"]}
    if not arms:
        return False
    with figure(path, 1, len(measures), figsize=(4.6 * len(measures), 3.6), squeeze=False) as (fig, axes):
        for ax, measure in zip(axes[0], measures, strict=True):
            for i, arm in enumerate(arms.values()):
                for j, entry in enumerate(arm["seeds"].values()):
                    pts = [p for p in entry["points"] if measure in p]
                    if not pts:
                        continue
                    x, y = [p[frontier["metric"]] for p in pts], [p[measure] for p in pts]
                    ax.plot(x, y, marker="o", ms=3, color=f"C{i}", alpha=0.9 if j == 0 else 0.5,
                            label=arm["label"] if j == 0 else None)
                    lows = [p.get(f"{measure}_low") for p in pts]
                    highs = [p.get(f"{measure}_high") for p in pts]
                    if all(v is not None for v in lows + highs):
                        ax.fill_between(x, lows, highs, color=f"C{i}", alpha=0.08)
            ax.axvline(frontier["threshold"], color="gray", ls="--", lw=0.8, label="learning criterion")
            ax.axhline(0.0, color="black", lw=0.5)
            ax.set_xscale("log")
            ax.invert_xaxis()
            ax.set_xlabel(f"held-out {frontier['metric']} (lower = reconstructs more)")
            ax.set_ylabel(measure.replace("_", " "))
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=6)
        fig.suptitle("reconstruction-vs-locality frontier (each point: one validation)", fontsize=9)
    return True


LEARNED_GAP_FRACTION = 0.7  # learning criterion of a DiT: closes this fraction of untrained -> floor


def dit_criteria(study: Study, frontier: dict[str, Any], fraction: float = LEARNED_GAP_FRACTION) -> dict[str, Any]:
    """Per compared DiT run and seed: its final `val/fd_mel`, the untrained value and the real-vs-real floor that
    `FdMelCriterionCallback` logged at step 0, the fraction of the gap closed, (untrained - final) /
    (untrained - floor), and whether it met the criterion (>= fraction). A DiT on the latent of a LAFA arm
    that missed its own criterion (frontier) is `excluded`, whatever its own numbers: left out of comparisons."""
    out: dict[str, Any] = {"fraction": fraction, "runs": {}}
    arms = frontier.get("arms", {})
    for inst in instances(study):
        if not inst.run.compare:
            continue
        curves = read_curves(inst.dir / "tb")
        final = curves.get("val/fd_mel", [])
        untrained, floor = curves.get("val/fd_mel_untrained", []), curves.get("val/fd_mel_floor", [])
        entry: dict[str, Any] = {"final": final[-1][1] if final else None,
                                 "untrained": untrained[0][1] if untrained else None,
                                 "floor": floor[0][1] if floor else None, "closed": None, "learned": None}
        if None not in (entry["final"], entry["untrained"], entry["floor"]) and entry["untrained"] > entry["floor"]:
            entry["closed"] = (entry["untrained"] - entry["final"]) / (entry["untrained"] - entry["floor"])
            entry["learned"] = entry["closed"] >= fraction
        seed = "seed" if inst.seed is None else str(inst.seed)
        latent = inst.run.latent or ""
        chain = [latent, *(study.runs[latent].needs if latent in study.runs else [])]  # a rotation reads its LAFA
        arm = next((arms[name] for name in chain if name in arms), None)
        if arm is None:  # not a LAFA arm's latent (the stand-in, log-mel): nothing to meet
            entry["latent_learned"] = None
        else:  # seed s of the DiT reads the arm's seed-s checkpoint
            entry["latent_learned"] = arm["seeds"][seed]["learned"] if seed in arm["seeds"] else False
        # left out on a measured miss only: a study without the fd_mel criterion callback excludes nothing
        entry["excluded"] = entry["learned"] is False or entry["latent_learned"] is False
        run = out["runs"].setdefault(inst.run.name, {"label": inst.run.label or inst.run.name, "seeds": {}})
        run["seeds"][seed] = entry
    return out


def dit_criteria_markdown(criteria: dict[str, Any]) -> str:
    if not criteria.get("runs"):
        return ""
    lines = ["", f"DiT learning criterion: closes >= {criteria['fraction']:.0%} of the gap between its untrained "
             "`val/fd_mel` and the real-vs-real floor; a DiT that missed it, or whose LAFA arm missed its own, is "
             "excluded (left out of the convergence summaries above):",
             "", "| DiT | seed | untrained | floor | final | gap closed | learned | excluded |",
             "|---|---|---|---|---|---|---|---|"]

    def num(v: Any, fmt: str = ".1f") -> str:
        return "-" if v is None else format(v, fmt)

    for run in criteria["runs"].values():
        for seed, e in run["seeds"].items():
            learned = "-" if e["learned"] is None else "yes" if e["learned"] else "no"
            lines.append(f"| {run['label']} | {seed} | {num(e['untrained'])} | {num(e['floor'])} | {num(e['final'])} | "
                         f"{num(e['closed'], '.2f')} | {learned} | {'yes' if e['excluded'] else 'no'} |")
    return "\n".join(lines) + "\n"
