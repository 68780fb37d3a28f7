"""The ground-truth lab's part of a study report (issue 23; docs/study.md, "The ground-truth lab", says what
it measures and why).

For a study whose compared runs train on `lafa.data.gaussian_latents.GaussianLatentDataModule`, the latent
spaces are known exactly, so beside each arm the report states closed forms instead of estimates
(`lafa.lab.locality`, `lafa.lab.floors`); from each run's log it reads `val/excess_loss` (val/loss - floor)
and `val/exact_fd` with its oracle and real-vs-real baseline, with 95% Student-t intervals over seeds
(`lafa.study.latents.interval`). Per arm: the excess at every evaluation, its final value and mean over
evaluations, the interpolated steps to `lab.excess_target` ("not reached k/n" if any seed misses it), the
final exact FD; per contrast [a, b] (`lab.contrasts`): a - b seed by seed and its interval; link 1
(`lab.link1`): each finished LAFA's Y on a fixed draw of its own data, measured by lafa's estimator, its
alignment with the ideal ordered latent (`lafa.lab.alignment`) and the prefix capture of its first k channels
(`lafa.lab.prefix`), beside closed-form references, per run over seeds and run - control paired.

A study asks for this section with a `lab` mapping in its YAML, which holds the settings: excess_target,
contrasts, link1 {runs, control, clips, window, permutations, prefix_channels (k; default C / 4)}. Nothing
here decides what the numbers mean: an interval that contains 0 is reported as such.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from typing import Any

from lafa.study.curves import figure, read_curves, steps_to_target
from lafa.study.latents import cell, interval
from lafa.study.merge import run_config
from lafa.study.runner import DONE, instances
from lafa.study.spec import Study

LAB_DATA = "lafa.data.gaussian_latents.GaussianLatentDataModule"
LINK1_MEASURES = ("alpha", "alpha_excess", "lpi", "lpi_excess", "participation_ratio")
LINK1_SEED = 20231  # the fixed draw of lab latents every LAFA instance encodes
NOT_REACHED = "not reached"
CLOSED_FORM_DIGITS = (("alpha", 2), ("alpha_excess", 2), ("lpi", 3), ("lpi_excess", 3),
                      ("participation_ratio", 1), ("loss_floor", 4))


def lab_spec(config: dict[str, Any]):
    """The `GaussianLatentSpec` of a run's merged config, or None when its data is not the lab's."""
    data = config.get("data") or {}
    if data.get("class_path") != LAB_DATA:
        return None
    from lafa.data.gaussian_latents import GaussianLatentDataModule

    return GaussianLatentDataModule(**(data.get("init_args") or {})).spec


def closed_form(config: dict[str, Any], window: int = 64, permutations: int = 20) -> dict[str, float] | None:
    """Population alpha, LPI (and excesses), PR of a lab run's latent, and the DiT's exact floor (mean over its
    val_t grid) when the run is a DiT."""
    from lafa.lab.floors import loss_floors
    from lafa.lab.locality import population_measures

    spec = lab_spec(config)
    if spec is None:
        return None
    out = population_measures(spec, window=min(window, spec.frames), permutations=permutations, seed=0)
    model = (config.get("model") or {}).get("init_args") or {}
    if "objective" in model:
        floors = loss_floors(spec, model.get("val_t", (0.1, 0.3, 0.5, 0.7, 0.9)), model["objective"],
                             model.get("latent_scale", 1.0))
        out["loss_floor"] = sum(floors.values()) / len(floors)
    return out


def _stat(values: list[float]) -> dict[str, Any] | None:
    values = [v for v in values if v is not None and math.isfinite(v)]
    return interval(values) if values else None


def _arm_seed(curves: dict[str, list], target: float | None) -> dict[str, Any]:
    """One DiT instance's lab numbers from its curves."""
    excess = curves.get("val/excess_loss") or []
    out: dict[str, Any] = {"curve": [list(p) for p in excess]}
    if excess:
        out["final_excess"] = excess[-1][1]
        out["mean_excess"] = sum(v for _, v in excess) / len(excess)
        if target is not None:
            out["steps_to_excess"] = steps_to_target(excess, target, "min")
    for tag in ("val/exact_fd", "val/exact_fd_oracle", "val/exact_fd_baseline", "val/loss"):
        if curves.get(tag):
            out["final_" + tag.removeprefix("val/")] = curves[tag][-1][1]
    if "final_exact_fd" in out and "final_exact_fd_oracle" in out:
        out["final_fd_minus_oracle"] = out["final_exact_fd"] - out["final_exact_fd_oracle"]
    return out


ARM_KEYS = ("final_excess", "mean_excess", "steps_to_excess", "final_exact_fd", "final_fd_minus_oracle",
            "final_exact_fd_oracle", "final_exact_fd_baseline", "final_loss")


def dit_arms(study: Study, settings: dict[str, Any]) -> dict[str, Any]:
    """Per compared lab run: closed forms, per-seed numbers, intervals over seeds, mean excess curve."""
    target = settings.get("excess_target")
    window, permutations = int(settings.get("window", 64)), int(settings.get("permutations", 20))
    arms: dict[str, Any] = {}
    for inst in instances(study):
        if not inst.run.compare:
            continue
        config = run_config(study, inst.run, inst.seed)
        if lab_spec(config) is None:
            continue
        arm = arms.setdefault(inst.run.name, {"label": inst.run.label or inst.run.name, "seeds": {},
                                              "closed_form": closed_form(config, window, permutations),
                                              "unfinished": []})
        if not (inst.dir / DONE).exists():  # listed, never averaged in
            arm["unfinished"].append(inst.name)
            continue
        seed = "seed" if inst.seed is None else str(inst.seed)
        arm["seeds"][seed] = _arm_seed(read_curves(inst.dir / "tb"), target)
    for arm in arms.values():
        seeds = list(arm["seeds"].values())
        arm["summary"] = {k: _stat([s.get(k) for s in seeds]) for k in ARM_KEYS if k != "steps_to_excess"}
        if target is not None and seeds:
            steps = [s.get("steps_to_excess") for s in seeds]
            missed = sum(v is None for v in steps)
            arm["summary"]["steps_to_excess"] = (_stat(steps) if not missed
                                                 else f"{NOT_REACHED} {missed}/{len(steps)}")
        by_step: dict[int, list[float]] = {}
        for s in seeds:
            for step, value in s["curve"]:
                by_step.setdefault(int(step), []).append(value)
        arm["excess_by_step"] = {step: interval(v) for step, v in sorted(by_step.items()) if len(v) == len(seeds)}
    return arms


def contrasts(arms: dict[str, Any], pairs: list[list[str]]) -> list[dict[str, Any]]:
    """a - b seed by seed for every number of ARM_KEYS both carry, with its interval over the common seeds."""
    out = []
    for a, b in pairs:
        if a not in arms or b not in arms:
            continue
        sa, sb = arms[a]["seeds"], arms[b]["seeds"]
        common = sorted(set(sa) & set(sb))
        diff = {}
        for key in ARM_KEYS:
            values = [sa[s][key] - sb[s][key] for s in common
                      if sa[s].get(key) is not None and sb[s].get(key) is not None]
            if len(values) == len(common) and values:
                diff[key] = interval(values)
        out.append({"runs": [a, b], "labels": [arms[a]["label"], arms[b]["label"]], "seeds": common,
                    "difference": diff})
    return out


# ---- link 1: does masking give an order-free latent an order? ------------------------------------------------
def measure_lafa(ckpt: str | Path | None, config: dict[str, Any], clips: int, window: int, permutations: int,
                 init_seed: int = 0, prefix_channels: int | None = None) -> dict:
    """Y of one LAFA checkpoint on a fixed draw of its own lab data: estimator measures, alignment and the prefix
    capture of Y's first `prefix_channels` channels (default C / 4; `lafa.lab.prefix`). With
    ckpt None: an untrained LAFA of the run's config (initialised from `init_seed`, its input statistics measured
    on the draw): what the architecture alone does to the channel axis."""
    import torch

    from lafa.analysis.controls import locality_measures
    from lafa.lab.alignment import alignment, channel_covariance
    from lafa.lab.prefix import prefix_capture
    from lafa.stages.lafa import LafaStage
    from lafa.stages.loading import load_stage

    spec = lab_spec(config)
    z = spec.sample(clips, torch.Generator().manual_seed(LINK1_SEED)).float()
    if ckpt is None:
        torch.manual_seed(init_seed)
        stage = LafaStage(**config["model"]["init_args"]).eval()
        normalizer = stage.lafa.input_normalizer
        normalizer.accumulate(z, None)
        normalizer.commit(normalizer.pending())
    else:
        stage = load_stage(ckpt)
    with torch.no_grad():
        y = torch.cat([stage.lafa.encode(chunk) for chunk in z.split(64)]).float()
    measured = locality_measures(y, window=min(window, spec.frames), permutations=permutations, bootstrap=0, seed=0)
    out = {k: measured[k]["value"] for k in LINK1_MEASURES}
    out["alignment"] = alignment(channel_covariance(y), replace(spec, basis="dct").channel_covariance)
    out["prefix_capture"] = prefix_capture(y, z, prefix_channels or spec.channels // 4, spec.channel_covariance)
    return out


def link1_references(spec, window: int, permutations: int, prefix_channels: int | None = None
                     ) -> dict[str, dict[str, float]]:
    """Closed forms Y is read against: the ideal ordered latent, LAFA's input, the ideal in a random channel order
    (its alignment in expectation), decorrelated channels, and the PCA-ordered latent (its prefix capture is 1 by
    definition; the ideal's and the input's are their first channels' as linear maps of the input)."""
    import numpy as np

    from lafa.lab.alignment import alignment, alignment_permuted, alignment_white
    from lafa.lab.locality import population_measures
    from lafa.lab.prefix import prefix_capture_linear

    ideal = replace(spec, basis="dct")  # the same eigenvalues on the DCT basis: arm (1) for arm (3)
    window, k = min(window, spec.frames), prefix_channels or spec.channels // 4
    ref = ideal.channel_covariance
    # arm (1) from arm (3): x1 = U_dct U_3^T x3 (the same white draws, coloured by each basis)
    maps = {"ideal ordered latent (arm (1))": ideal.basis_matrix @ spec.basis_matrix.T,
            "LAFA's input Z (arm (3))": np.eye(spec.channels)}
    rows = {}
    for name, s in (("ideal ordered latent (arm (1))", ideal), ("LAFA's input Z (arm (3))", spec)):
        m = population_measures(s, window=window, permutations=permutations, seed=0)
        rows[name] = {**{k: m[k] for k in LINK1_MEASURES}, "alignment": alignment(s.channel_covariance, ref),
                      "prefix_capture": prefix_capture_linear(spec.channel_covariance, maps[name][:k])}
    rows["ideal in a random channel order (expectation)"] = {"alignment": alignment_permuted(ref)}
    rows["decorrelated channels"] = {"alignment": alignment_white(ref)}
    rows["PCA-ordered latent (channel k = k-th principal component)"] = {"prefix_capture": 1.0}
    return rows


def link1(study: Study, settings: dict[str, Any]) -> dict[str, Any] | None:
    from lafa.study.latents import _final_values

    spec_settings = settings.get("link1")
    if not spec_settings:
        return None
    names = list(spec_settings.get("runs") or [])
    clips, window = int(spec_settings.get("clips", 256)), int(spec_settings.get("window", 64))
    permutations = int(spec_settings.get("permutations", 20))
    prefix = spec_settings.get("prefix_channels")
    runs: dict[str, Any] = {n: {"label": study.runs[n].label or n, "seeds": {}} for n in names if n in study.runs}
    missing, references = [], None
    for inst in instances(study):
        if inst.run.name not in runs:
            continue
        ckpt = study.final_checkpoint(inst.run.name, inst.seed)
        config = run_config(study, inst.run, inst.seed)
        spec = lab_spec(config)
        if spec is None:
            continue
        if references is None:
            prefix = int(prefix or spec.channels // 4)
            references = link1_references(spec, window, permutations, prefix)
            untrained = {"label": "untrained LAFA (same architecture; 3 initialisations)",
                         "seeds": {str(s): measure_lafa(None, config, clips, window, permutations, s, prefix)
                                   for s in range(3)}}
        if not ((inst.dir / DONE).exists() and Path(ckpt).is_file()):
            missing.append(inst.name)
            continue
        values = measure_lafa(ckpt, config, clips, window, permutations, prefix_channels=prefix)
        values.update(_final_values(inst.dir / "tb", ["val/k2/latent_rel_mse"]))
        runs[inst.run.name]["seeds"]["seed" if inst.seed is None else str(inst.seed)] = values
    for run in runs.values():
        keys = sorted(set().union(*run["seeds"].values())) if run["seeds"] else []
        run["summary"] = {k: _stat([v.get(k) for v in run["seeds"].values()]) for k in keys}
    paired = []
    control = spec_settings.get("control")
    if control in runs:
        for name, run in runs.items():
            if name == control:
                continue
            common = sorted(set(run["seeds"]) & set(runs[control]["seeds"]))
            keys = sorted(set().union(*(run["seeds"][s].keys() for s in common))) if common else []
            paired.append({"runs": [name, control], "seeds": common,
                           "difference": {k: interval([run["seeds"][s][k] - runs[control]["seeds"][s][k]
                                                       for s in common]) for k in keys}})
    if references is not None:
        untrained["summary"] = {k: _stat([v[k] for v in untrained["seeds"].values()])
                                for k in next(iter(untrained["seeds"].values()))}
        runs["untrained"] = untrained
    return {"runs": runs, "paired": paired, "references": references or {}, "missing": missing,
            "settings": {"clips": clips, "window": window, "permutations": permutations, "draw_seed": LINK1_SEED,
                         "prefix_channels": prefix}}


def lab_section(study: Study) -> dict[str, Any] | None:
    """The lab part of the study report: None unless the study has a `lab` mapping and compared runs on the lab's
    data."""
    if not study.lab:
        return None
    settings = dict(study.lab)
    arms = dit_arms(study, settings)
    if not arms:
        return None
    pairs = settings.get("contrasts") or [[name, study.baseline] for name in arms if name != study.baseline]
    return {"excess_target": settings.get("excess_target"), "arms": arms, "contrasts": contrasts(arms, pairs),
            "link1": link1(study, settings)}


# ---- markdown and figure ----------------------------------------------------------------------------------------
def lab_markdown(section: dict[str, Any] | None) -> str:
    if not section:
        return ""
    target = section["excess_target"]
    arms = section["arms"]
    lines = ["", "## Ground-truth lab (closed forms beside each arm; mean [95% t-interval] over seeds)", "",
             "Closed forms (`lafa.lab`): alpha, LPI and their excess over random channel orders, participation ratio "
             "(PR) and the exact loss floor. Excess = `val/loss` - floor. Mean excess = the excess averaged over "
             "every evaluation (how fast the arm approaches its floor). "
             + (f"Steps to excess <= {target:g}: interpolated first crossing. " if target is not None else "")
             + "FD - oracle = exact FD of the DiT's samples minus that of the exact denoiser through the same "
             "sampler, steps and noise.", "",
             "| arm | alpha | alpha exc. | LPI | LPI exc. | PR | floor | final excess | mean excess | "
             + (f"steps to excess <= {target:g} | " if target is not None else "")
             + "final exact FD | FD - oracle | FD oracle | FD baseline |",
             "|---" * (14 if target is not None else 13) + "|"]
    for arm in arms.values():
        cf, s = arm["closed_form"] or {}, arm["summary"]
        cells = [f"{cf.get(key, float('nan')):.{digits}f}" for key, digits in CLOSED_FORM_DIGITS]
        cells += [cell(s.get("final_excess")), cell(s.get("mean_excess"))]
        if target is not None:
            cells.append(cell(s.get("steps_to_excess"), 0))
        cells += [cell(s.get("final_exact_fd"), 2), cell(s.get("final_fd_minus_oracle"), 2),
                  cell(s.get("final_exact_fd_oracle"), 2), cell(s.get("final_exact_fd_baseline"), 2)]
        label = arm["label"] + (f" ({len(arm['unfinished'])} unfinished)" if arm["unfinished"] else "")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    unfinished = [name for arm in arms.values() for name in arm["unfinished"]]
    if unfinished:
        lines += ["", "Not finished (left out): " + ", ".join(unfinished)]
    steps = sorted(set().union(*(a["excess_by_step"] for a in arms.values())))
    shown = steps[1::2] if len(steps) > 8 else steps
    if shown:
        lines += ["", "Excess loss against steps (mean over seeds):", "",
                  "| arm | " + " | ".join(str(st) for st in shown) + " |", "|---" * (len(shown) + 1) + "|"]
        for arm in arms.values():
            lines.append(f"| {arm['label']} | " + " | ".join(
                f"{arm['excess_by_step'][st]['mean']:.3f}" if st in arm["excess_by_step"] else "-" for st in shown) + " |")
    if section["contrasts"]:
        lines += ["", "Paired differences a - b (seed by seed; an interval containing 0 is no evidence of a "
                  "difference):", "",
                  "| a - b | seeds | final excess | mean excess | "
                  + (f"steps to excess <= {target:g} | " if target is not None else "") + "final exact FD |",
                  "|---" * (6 if target is not None else 5) + "|"]
        for c in section["contrasts"]:
            d = c["difference"]
            cells = [cell(d.get("final_excess"), 4), cell(d.get("mean_excess"), 4)]
            if target is not None:
                cells.append(cell(d.get("steps_to_excess"), 0) if "steps_to_excess" in d
                             else "not reached" if d else "-")
            cells.append(cell(d.get("final_exact_fd"), 2))
            lines.append(f"| {c['labels'][0]} - {c['labels'][1]} | {len(c['seeds'])} | " + " | ".join(cells) + " |")
    lines += link1_markdown(section.get("link1"))
    return "\n".join(lines) + "\n"


def link1_markdown(section: dict[str, Any] | None) -> list[str]:
    if not section:
        return []
    cols = ["val/k2/latent_rel_mse", *LINK1_MEASURES, "alignment", "prefix_capture"]
    names = ["rel. MSE (k=2)", "alpha", "alpha exc.", "LPI", "LPI exc.", "PR", "alignment A", "prefix P_k"]
    st = section["settings"]
    lines = ["", "### Link 1: does masking give an order-free latent an order?", "",
             f"Y of each LAFA on {st['clips']} fixed draws of its data (arm (3)), lafa's estimator (window "
             f"{st['window']}, {st['permutations']} random channel orders); A = cosine between Y's channel "
             "correlation and the ideal ordered latent's (`lafa.lab.alignment`); P_k = the share of the input's "
             f"variance Y's first k = {st.get('prefix_channels')} channels explain linearly, over the most any k "
             "channels can (1 = a PCA-ordered prefix; `lafa.lab.prefix`). References are closed forms.", "",
             "| latent | seeds | " + " | ".join(names) + " |", "|---" * (len(names) + 2) + "|"]
    for run in section["runs"].values():
        lines.append(f"| {run['label']} | {len(run['seeds'])} | "
                     + " | ".join(cell(run["summary"].get(c)) for c in cols) + " |")
    for name, ref in section["references"].items():
        lines.append(f"| {name} (closed form) | - | - | "
                     + " | ".join(cell(ref.get(c)) for c in cols[1:]) + " |")
    for p in section["paired"]:
        lines.append(f"| {p['runs'][0]} - {p['runs'][1]} (paired) | {len(p['seeds'])} | "
                     + " | ".join(cell(p["difference"].get(c)) for c in cols) + " |")
    if section["missing"]:
        lines.append("\nNot finished (left out): " + ", ".join(section["missing"]))
    return lines


def plot_lab(section: dict[str, Any] | None, path: Path) -> bool:
    """Excess loss and (FD - oracle) against steps per arm: mean over seeds and its 95% t band."""
    if not section:
        return False
    with figure(path, figsize=(5.5, 3.8)) as (fig, ax):
        for i, arm in enumerate(section["arms"].values()):
            points = sorted(arm["excess_by_step"].items())
            if not points:
                continue
            x = [p[0] for p in points]
            ax.plot(x, [p[1]["mean"] for p in points], color=f"C{i}", label=arm["label"])
            if all(p[1]["ci95"] for p in points):
                ax.fill_between(x, [p[1]["ci95"][0] for p in points], [p[1]["ci95"][1] for p in points],
                                color=f"C{i}", alpha=0.15)
        if section["excess_target"] is not None:
            ax.axhline(section["excess_target"], color="gray", ls="--", lw=0.8, label="stated excess")
        ax.set_xlabel("training steps")
        ax.set_ylabel("val/excess_loss (loss - exact floor)")
        ax.legend(fontsize=7)
    return True
