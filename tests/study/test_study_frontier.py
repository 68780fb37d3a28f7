"""The reconstruction-vs-locality frontier of a study's LAFA arms, read back from real TensorBoard logs."""

from __future__ import annotations

import pytest
from torch.utils.tensorboard import SummaryWriter

from lafa.study.frontier import frontier_markdown, frontier_report, plot_frontier
from lafa.study.report import build_report
from lafa.study.spec import parse_study


def _write(tb_dir, scalars: dict[str, list[tuple[int, float]]]) -> None:
    writer = SummaryWriter(str(tb_dir))
    for tag, points in scalars.items():
        for step, value in points:
            writer.add_scalar(tag, value, step)
    writer.close()


def _study(out_dir):
    return parse_study({
        "name": "frontier", "factor": "remedy", "factor_keys": ["model.init_args.model.mask_ratio"],
        "out_dir": str(out_dir), "baseline": "dit_a", "metrics": {"val/loss": "min"}, "seeds": [0, 1],
        "stages": {"lafa": ["unused.yaml"], "rotate": ["unused.yaml"], "dit": ["unused.yaml"]},
        "runs": {"lafa_a": {"stage": "lafa", "seeded": True, "label": "A"},
                 "lafa_b": {"stage": "lafa", "seeded": True, "label": "B"},
                 "rot_a": {"stage": "rotate", "seeded": True, "set": {"model.init_args.base": "@lafa_a"}},
                 "dit_a": {"stage": "dit", "compare": True, "latent": "lafa_a",
                           "set": {"model.init_args.autoencoder_ckpt": "@lafa_a"}},
                 "dit_rot": {"stage": "dit", "compare": True, "latent": "rot_a",
                             "set": {"model.init_args.autoencoder_ckpt": "@rot_a"}}},
    })


def test_frontier_pairs_locality_with_reconstruction_step_by_step(tmp_path):
    study = _study(tmp_path)
    # arm A seed 0: learns (0.875 -> 0.375; values exact in float32, as TensorBoard stores them); its locality is logged at the same steps (and one extra step)
    _write(tmp_path / "lafa_a-seed0" / "tb", {
        "val/k2/latent_rel_mse": [(200, 0.875), (400, 0.625), (600, 0.375)],
        "val/k2/posterior_rel_mse": [(200, 0.75), (400, 0.5), (600, 0.25)],
        "analysis/latent_lpi_excess": [(200, 0.375), (400, 0.25), (600, 0.125), (700, 9.0)],
        "analysis/latent_lpi_excess_low": [(600, 0.0625)], "analysis/latent_lpi_excess_high": [(600, 0.1875)],
        "train/loss": [(10, 1.0)]})
    (tmp_path / "lafa_a-seed0" / "DONE").write_text("")
    # arm A seed 1 stops short of the criterion; arm B seed 0 learns; arm B seed 1 never started
    _write(tmp_path / "lafa_a-seed1" / "tb", {"val/k2/latent_rel_mse": [(200, 1.25), (400, 0.75)],
                                              "analysis/latent_lpi_excess": [(200, 0.5), (400, 0.375)]})
    _write(tmp_path / "lafa_b-seed0" / "tb", {"val/k2/latent_rel_mse": [(200, 0.4375)],
                                              "analysis/latent_alpha_excess": [(200, -0.1)]})
    frontier = frontier_report(study)
    a, b = frontier["arms"]["lafa_a"], frontier["arms"]["lafa_b"]
    points = a["seeds"]["0"]["points"]
    assert [p["step"] for p in points] == [200, 400, 600]  # step 700 has no reconstruction: not a point
    assert [p["lpi_excess"] for p in points] == [0.375, 0.25, 0.125]
    assert points[-1]["lpi_excess_low"] == 0.0625 and points[-1]["val/k2/posterior_rel_mse"] == 0.25
    assert a["seeds"]["0"]["learned"] and a["seeds"]["0"]["finished"]
    assert a["seeds"]["0"]["first_step_at_threshold"] == 400 + 200 * (0.5 - 0.625) / (0.375 - 0.625)  # 500
    assert not a["seeds"]["1"]["learned"] and not a["learned"]  # one seed missed: the arm missed
    assert b["seeds"]["0"]["learned"] and b["missing"] == ["1"] and not b["learned"]
    assert a["final_rel_mse"] == [0.375, 0.75]
    table = frontier_markdown(frontier)
    assert "| A | 0 | 600 | 0.375 | 0.250 | yes | 0.125 [0.062, 0.188] |" in table
    assert "| B | 1 | not started |" in table
    assert plot_frontier(frontier, tmp_path / "frontier.png")
    assert (tmp_path / "frontier.png").read_bytes()[:4] == b"\x89PNG"
    assert build_report(study)["frontier"]["arms"]["lafa_a"]["label"] == "A"


def test_no_frontier_without_lafa_logs(tmp_path):
    frontier = frontier_report(_study(tmp_path))
    assert all(not arm["seeds"] for arm in frontier["arms"].values())
    assert not plot_frontier(frontier, tmp_path / "frontier.png")


def test_dit_criteria_gap_closed_and_exclusion(tmp_path):
    """closed = (untrained - final) / (untrained - floor); a DiT on an arm that missed its criterion is excluded."""
    from lafa.study.frontier import dit_criteria, dit_criteria_markdown

    study = _study(tmp_path)
    _write(tmp_path / "lafa_a-seed0" / "tb", {"val/k2/latent_rel_mse": [(200, 0.375)]})  # learned
    _write(tmp_path / "lafa_a-seed1" / "tb", {"val/k2/latent_rel_mse": [(200, 0.75)]})   # missed
    _write(tmp_path / "dit_a-seed0" / "tb", {"val/fd_mel_untrained": [(0, 100.0)], "val/fd_mel_floor": [(0, 20.0)],
                                             "val/fd_mel": [(100, 60.0), (200, 36.0)]})
    _write(tmp_path / "dit_a-seed1" / "tb", {"val/fd_mel_untrained": [(0, 100.0)], "val/fd_mel_floor": [(0, 20.0)],
                                             "val/fd_mel": [(200, 30.0)]})
    criteria = dit_criteria(study, frontier_report(study))
    s0, s1 = criteria["runs"]["dit_a"]["seeds"]["0"], criteria["runs"]["dit_a"]["seeds"]["1"]
    assert s0["closed"] == pytest.approx((100 - 36) / (100 - 20)) and s0["learned"] and not s0["excluded"]
    assert s0["latent_learned"] is True
    assert s1["closed"] == pytest.approx(70 / 80) and s1["learned"]
    assert s1["latent_learned"] is False and s1["excluded"]  # its LAFA (seed 1) missed: left out
    rot = criteria["runs"]["dit_rot"]["seeds"]["1"]  # no logs: not learned; its rotation reads lafa_a seed 1
    assert rot["latent_learned"] is False and rot["excluded"]
    assert criteria["runs"]["dit_rot"]["seeds"]["0"]["latent_learned"] is True
    table = dit_criteria_markdown(criteria)
    assert "| dit_a | 0 | 100.0 | 20.0 | 36.0 | 0.80 | yes | no |" in table
    assert "| dit_a | 1 | 100.0 | 20.0 | 30.0 | 0.88 | yes | yes |" in table


def test_seeds_that_missed_a_criterion_are_left_out_of_the_convergence_summary(tmp_path):
    """The issue's rule: a run (or seed) that missed a learning criterion is reported as such and never averaged
    in. dit_a seed 1 reads a LAFA that missed its criterion: dit_a's summary is seed 0's alone; dit_rot reads the
    same LAFA through the rotation, so it keeps seed 0 too; with the baseline's every seed missed, nothing is left."""
    from lafa.study.report import EXCLUDED, markdown_table

    study = _study(tmp_path)
    _write(tmp_path / "lafa_a-seed0" / "tb", {"val/k2/latent_rel_mse": [(200, 0.375)]})  # learned
    _write(tmp_path / "lafa_a-seed1" / "tb", {"val/k2/latent_rel_mse": [(200, 0.75)]})   # missed
    fd = {"val/fd_mel_untrained": [(0, 100.0)], "val/fd_mel_floor": [(0, 20.0)], "val/fd_mel": [(200, 30.0)]}
    losses = {("dit_a", 0): [(100, 2.0), (200, 1.0)], ("dit_a", 1): [(100, 9.0), (200, 8.0)],
              ("dit_rot", 0): [(100, 1.0), (200, 0.5)], ("dit_rot", 1): [(100, 7.0), (200, 6.0)]}
    for (name, seed), curve in losses.items():
        _write(tmp_path / f"{name}-seed{seed}" / "tb", {**fd, "val/loss": curve})
    report = build_report(study)
    a, rot = report["runs"]["dit_a"], report["runs"]["dit_rot"]
    assert a["excluded_seeds"] == ["1"] and rot["excluded_seeds"] == ["1"]
    assert a["summary"]["val/loss"]["final"] == {"mean": 1.0, "std": None, "n": 1}  # seed 1's 8.0 not averaged in
    assert rot["summary"]["val/loss"]["steps_to_target"] == {"mean": 100.0, "std": None, "n": 1}
    assert set(a["seeds"]) == {"0", "1"}  # the curves of every seed stay in the report (and its figure)
    table = markdown_table(report)
    assert "| dit_a (unfinished) (seeds 1 excluded) | - | - | 1.0000 |" in table
    assert "left out of its summary" in table

    _write(tmp_path / "lafa_a-seed0" / "tb", {"val/k2/latent_rel_mse": [(400, 0.875)]})  # now seed 0 missed too
    report = build_report(study)
    assert report["runs"]["dit_a"]["summary"]["val/loss"]["speedup"] == EXCLUDED
    assert report["runs"]["dit_rot"]["summary"]["val/loss"]["final"] == EXCLUDED  # its baseline is gone
    assert "| dit_a (unfinished) | - | - | excluded | excluded | excluded |" in markdown_table(report)


def test_locality_is_compared_at_one_reconstruction_level_with_paired_intervals():
    """The matched level is the worst final relative MSE; each arm is read at its own crossing of it (linear
    between validations), and reference - other is paired seed by seed with a Student-t interval."""
    import math
    import statistics

    from scipy.stats import t

    from lafa.study.frontier import at_level, matched_locality, matched_markdown

    m = "val/k2/latent_rel_mse"
    pts = [{"step": 200, m: 1.5, "lpi_excess": 0.5}, {"step": 400, m: 0.9, "lpi_excess": 0.2},
           {"step": 600, m: 0.6, "lpi_excess": 0.1}]
    assert at_level(pts, m, 1.2, "lpi_excess") == pytest.approx(0.5 + 0.5 * (0.2 - 0.5))  # halfway 1.5 -> 0.9
    assert at_level(pts, m, 0.9, "lpi_excess") == pytest.approx(0.2)  # on a validation
    assert at_level(pts, m, 0.5, "lpi_excess") is None  # never reached
    assert at_level(pts, m, 2.0, "lpi_excess") is None  # started below: the crossing was not observed

    def arm(label, seeds):  # seed -> (lpi excess at rel MSE 2.0, at 1.0, final rel MSE)
        return {"label": label, "missing": [], "seeds": {
            s: {"points": [{"step": 1, m: 2.0, "lpi_excess": a}, {"step": 2, m: 1.0, "lpi_excess": b},
                           {"step": 3, m: final, "lpi_excess": b}], "final": {"step": 3, m: final}}
            for s, (a, b, final) in seeds.items()}}

    frontier = {"metric": m, "arms": {
        "span": arm("span", {"0": (0.6, 0.2, 1.5), "1": (0.8, 0.4, 0.4), "2": (0.7, 0.3, 0.4)}),
        "off": arm("off", {"0": (0.2, 0.0, 0.3), "1": (0.4, 0.2, 0.3), "2": (0.6, 0.0, 0.3)}),
        "prefix": arm("prefix", {"0": (0.5, 0.5, 0.3), "1": (0.5, 0.5, 0.3)})}}
    matched = matched_locality(frontier, reference="span")
    assert matched["level"] == 1.5  # span seed 0 ended there: the one level every arm and seed reached
    span = [0.4, 0.6, 0.5]  # halfway between the two first validations
    off = [0.1, 0.3, 0.3]
    assert [matched["arms"]["span"]["seeds"][s]["lpi_excess"] for s in "012"] == pytest.approx(span)
    diff = matched["contrasts"]["span - off"]["difference"]["lpi_excess"]
    d = [a - b for a, b in zip(span, off, strict=True)]
    half = t.ppf(0.975, 2) * statistics.stdev(d) / math.sqrt(3)
    assert diff["mean"] == pytest.approx(sum(d) / 3) and diff["ci95"] == pytest.approx([diff["mean"] - half,
                                                                                       diff["mean"] + half])
    assert matched["contrasts"]["span - prefix"]["seeds"] == ["0", "1"]  # paired over the common seeds only
    table = matched_markdown(matched)
    assert "falls to 1.500" in table and "| span - off | 0, 1, 2 |" in table


def test_report_html_holds_the_frontier_matched_and_criteria_tables(tmp_path):
    from lafa.analysis.html import markdown_tables
    from lafa.study.report import write_report

    assert markdown_tables("Caption here:\n\n| a | b |\n|---|---|\n| 1 | 2 |\n") == (
        "<div class='scroll'><table><caption class='note'>Caption here:</caption><thead><tr><th>a</th><th>b</th>"
        "</tr></thead><tbody><tr><td>1</td><td>2</td></tr></tbody></table></div>")
    study = _study(tmp_path)
    for arm, seed, finals in (("lafa_a", 0, (0.875, 0.375)), ("lafa_b", 0, (1.0, 0.625))):
        _write(tmp_path / f"{arm}-seed{seed}" / "tb", {
            "val/k2/latent_rel_mse": [(200, finals[0]), (400, finals[1])],
            "analysis/latent_lpi_excess": [(200, 0.5), (400, 0.25)]})
    _write(tmp_path / "dit_a-seed0" / "tb", {"val/fd_mel_untrained": [(0, 100.0)], "val/fd_mel_floor": [(0, 20.0)],
                                             "val/fd_mel": [(200, 36.0)], "val/loss": [(200, 1.0)]})
    page = write_report(build_report(study), tmp_path / "report")["html"].read_text()
    for heading in ("LAFA arms at their final checkpoint", "locality at matched reconstruction",
                    "learning criteria of the DiTs"):
        assert f"<h2>{heading}</h2>" in page
    # arm B ends at 0.625, the matched level; arm A crosses it halfway between its validations: LPI excess 0.375
    assert "<td>A</td><td>1</td><td>0.375</td>" in page and "<td>B</td><td>1</td><td>0.250</td>" in page


def test_a_seeded_latents_alpha_and_lpi_come_from_the_latent_table(tmp_path):
    """A DiT's latent repeated per seed has no single checkpoint: the convergence table shows the latent table's
    means over seeds (and `analyze_latents` does not report it as 'not ready')."""
    from lafa.study.report import _from_latent_table, analyze_latents

    study = parse_study({
        "name": "t", "factor": "remedy", "factor_keys": ["x"], "out_dir": str(tmp_path), "baseline": "dit_a",
        "metrics": {"val/loss": "min"}, "seeds": [0, 1], "analysis": {"args": []},
        "latents": {"runs": ["lafa_a"]}, "stages": {"lafa": ["unused.yaml"], "dit": ["unused.yaml"]},
        "runs": {"lafa_a": {"stage": "lafa", "seeded": True},
                 "dit_a": {"stage": "dit", "compare": True, "latent": "lafa_a",
                           "set": {"model.init_args.autoencoder_ckpt": "@lafa_a"}}}})
    table = {"runs": {"lafa_a": {"summary": {"alpha": {"mean": 0.6, "n": 2}, "lpi": {"mean": 0.3, "n": 2}}}}}
    assert _from_latent_table(study, table)["dit_a"] == {
        "latent": "lafa_a", "alpha": 0.6, "lpi": 0.3, "seeds": 2, "source": "latent table: mean over seeds"}
    said = []
    assert analyze_latents(study, log=said.append) == {} and said == []
