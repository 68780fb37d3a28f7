"""Steps-to-target and speed-up on synthetic curves with known answers, read back from real TensorBoard logs."""

import json
import math
import sys

import pytest
from torch.utils.tensorboard import SummaryWriter

from lafa.study.report import NOT_REACHED, build_report, read_curves, steps_to_target, summarise, write_report
from lafa.study.spec import parse_study


@pytest.mark.parametrize(("target", "expected"), [
    (2.0, 25.0),   # between (20, 3) and (30, 1): 20 + (2 - 3) * 10 / (1 - 3)
    (3.0, 20.0),   # exactly an evaluation
    (1.5, 27.5),
    (6.0, 10.0),   # already reached at the first evaluation: that evaluation's step
    (0.5, None),   # never reached
])
def test_steps_to_target_min(target, expected):
    curve = [(10, 5.0), (20, 3.0), (30, 1.0), (40, 1.2)]
    assert steps_to_target(curve, target, "min") == expected


def test_steps_to_target_max_and_first_crossing():
    # higher is better (e.g. CLAP); the first crossing counts even if the curve falls back later
    curve = [(100, 0.1), (200, 0.3), (300, 0.25), (400, 0.5)]
    assert steps_to_target(curve, 0.2, "max") == pytest.approx(150.0)
    assert steps_to_target(curve, 0.4, "max") == pytest.approx(300 + 100 * (0.4 - 0.25) / (0.5 - 0.25))
    assert steps_to_target(curve, 0.6, "max") is None


def test_summarise_seeds():
    assert summarise([2.0, 4.0]) == {"mean": 3.0, "std": math.sqrt(2.0), "n": 2}
    assert summarise([2.5]) == {"mean": 2.5, "std": None, "n": 1}
    assert summarise([2.0, None]) == NOT_REACHED


def _log(tb_dir, points, tag="val/loss"):
    writer = SummaryWriter(str(tb_dir))
    for step, value in points:
        writer.add_scalar(tag, value, step)
    writer.close()


def test_read_curves_keeps_last_value_of_a_relogged_step(tmp_path):
    # a run killed after logging step 30 and resumed from its step-20 checkpoint logs 30 again
    _log(tmp_path, [(10, 4.0), (20, 3.0), (30, 9.9)])
    _log(tmp_path, [(30, 2.0), (40, 1.0)])
    assert read_curves(tmp_path)["val/loss"] == [(10, 4.0), (20, 3.0), (30, 2.0), (40, 1.0)]


def _study(out_dir, seeds):
    return parse_study({
        "name": "synthetic", "factor": "latent space", "factor_keys": ["model.init_args.autoencoder"],
        "out_dir": str(out_dir), "baseline": "base", "metrics": {"val/loss": "min"}, "seeds": seeds,
        "stages": {"dit": ["unused.yaml"]},
        "runs": {name: {"stage": "dit", "compare": True} for name in ("base", "twice", "never", "once")},
    })


def test_report_speedup_across_seeds_and_not_reached(tmp_path):
    study = _study(tmp_path, [0, 1])
    base = [(10, 4.0), (20, 3.0), (30, 2.0), (40, 1.0)]  # target 1.0, reached at step 40
    curves = {
        ("base", 0): base, ("base", 1): base,
        ("twice", 0): [(10, 3.0), (20, 1.0), (30, 0.5), (40, 0.4)],   # 20 steps -> speed-up 2
        ("twice", 1): [(10, 1.0), (20, 0.8), (30, 0.5), (40, 0.4)],   # 10 steps -> speed-up 4
        ("never", 0): [(10, 5.0), (20, 4.0), (30, 3.0), (40, 2.0)],
        ("never", 1): [(10, 5.0), (20, 4.0), (30, 3.0), (40, 1.5)],
        ("once", 0): [(10, 3.0), (20, 2.0), (30, 1.5), (40, 0.0)],    # 40 - 10 * (1 / 1.5) steps
        ("once", 1): [(10, 3.0), (20, 2.0), (30, 1.5), (40, 1.2)],    # not reached
    }
    for (name, seed), points in curves.items():
        _log(tmp_path / f"{name}-seed{seed}" / "tb", points)
        (tmp_path / f"{name}-seed{seed}" / "DONE").write_text("{}")

    report = build_report(study)
    runs = report["runs"]
    assert runs["base"]["summary"]["val/loss"]["speedup"] == {"mean": 1.0, "std": 0.0, "n": 2}
    twice = runs["twice"]["summary"]["val/loss"]
    assert twice["speedup"]["mean"] == pytest.approx(3.0)
    assert twice["speedup"]["std"] == pytest.approx(math.sqrt(2.0))
    assert twice["steps_to_target"]["mean"] == pytest.approx(15.0)
    assert runs["never"]["summary"]["val/loss"]["speedup"] == NOT_REACHED
    assert runs["never"]["seeds"]["1"]["steps_to_target"]["val/loss"] == NOT_REACHED
    once = runs["once"]
    assert once["seeds"]["0"]["steps_to_target"]["val/loss"] == pytest.approx(40 - 10 / 1.5)
    assert once["seeds"]["0"]["speedup"]["val/loss"] == pytest.approx(40 / (40 - 10 / 1.5))
    assert once["seeds"]["1"]["speedup"]["val/loss"] == NOT_REACHED
    assert once["summary"]["val/loss"]["speedup"] == NOT_REACHED

    paths = write_report(report, tmp_path / "report")
    assert json.loads(paths["json"].read_text()) == json.loads(json.dumps(report))
    table = paths["markdown"].read_text()
    assert "| twice | - | - | 0.4000 +- 0.0000 | 15 +- 7 | 3.00 +- 1.41 |" in table
    assert "| never | - | - | 1.7500 +- 0.3536 | not reached | not reached |" in table
    assert paths["curves"].stat().st_size > 10_000
    assert "factor" not in paths  # no run carries a numeric factor level


def test_factor_plot_when_runs_carry_levels(tmp_path):
    study = parse_study({
        "name": "ratio", "factor": "mask ratio", "factor_keys": ["model.init_args.model.mask_ratio"],
        "out_dir": str(tmp_path), "baseline": "vae", "metrics": {"val/fd_mel": "min"},
        "stages": {"dit": ["unused.yaml"]},
        "runs": {"vae": {"stage": "dit", "compare": True},
                 **{f"r{v}": {"stage": "dit", "compare": True, "value": v, "label": f"rho={v}"} for v in (0.3, 0.5, 1.0)}},
    })
    for name, final in (("vae", 5.0), ("r0.3", 6.0), ("r0.5", 4.0), ("r1.0", 3.0)):
        _log(tmp_path / name / "tb", [(10, 9.0), (20, final)], tag="val/fd_mel")
    report = build_report(study)
    assert [r["summary"]["val/fd_mel"]["final"]["mean"] for r in report["runs"].values()] == [5.0, 6.0, 4.0, 3.0]
    assert report["runs"]["r0.3"]["summary"]["val/fd_mel"]["speedup"] == NOT_REACHED
    paths = write_report(report, tmp_path / "report")
    assert paths["factor"].stat().st_size > 5_000
    assert "| rho=0.3 (unfinished) |" in paths["markdown"].read_text()  # no DONE marker: reported as such


def test_alpha_and_lpi_come_from_one_lafa_analyze_call(tmp_path):
    """The report asks `lafa analyze` once for every ready latent space (labels = the runs that made them), in the
    study's `env` as every run is."""
    analyze = tmp_path / "fake_lafa.py"
    analyze.write_text(
        "import json, os, sys, pathlib\n"
        "a = sys.argv[1:]\n"
        "assert a[0] == 'analyze'\n"
        "assert os.environ.get('LAFA_STUDY_MARK') == 'from-env', 'the study env did not reach lafa analyze'\n"
        "ckpts = a[a.index('--ckpt_path') + 1:a.index('--label')]\n"
        "labels = a[a.index('--label') + 1:a.index('--out')]\n"
        "out = pathlib.Path(a[a.index('--out') + 1])\n"
        "out.mkdir(parents=True, exist_ok=True)\n"
        "summary = {l: {'alpha': float(len(l)), 'lpi': len(c) / 1000} for l, c in zip(labels, ckpts)}\n"
        "summary['mel'] = {'alpha': 2.5, 'lpi': 0.9}\n"
        "(out / 'report.json').write_text(json.dumps({'summary': summary, 'args': a}))\n")
    vae = tmp_path / "sao_vae.ckpt"
    vae.write_bytes(b"weights")
    study = parse_study({
        "name": "c", "factor": "latent space", "factor_keys": ["model.init_args.autoencoder_ckpt"],
        "out_dir": str(tmp_path / "out"), "baseline": "dit_vae", "metrics": {"val/loss": "min"},
        "lafa": [sys.executable, str(analyze)], "analysis": {"args": ["--num_clips", 3]},
        "env": {"LAFA_STUDY_MARK": "from-env"},  # the runs' environment (threads, caches) is the report's too
        "stages": {"ae": ["unused.yaml"], "dit": ["unused.yaml"]},
        "runs": {"vae": {"stage": "ae", "ckpt": str(vae)}, "lafa": {"stage": "ae"},
                 "dit_vae": {"stage": "dit", "compare": True, "latent": "vae"},
                 "dit_lafa": {"stage": "dit", "compare": True, "latent": "lafa"}},
    })
    from lafa.study.report import analyze_latents

    assert set(analyze_latents(study, log=lambda _: None)) == {"dit_vae"}  # lafa is not trained yet
    lafa_dir = tmp_path / "out" / "lafa"
    (lafa_dir / "checkpoints").mkdir(parents=True)
    (lafa_dir / "checkpoints" / "last.ckpt").write_bytes(b"x")
    (lafa_dir / "DONE").write_text("{}")
    results = analyze_latents(study, log=lambda _: None)  # lafa is new: analysed again, with vae, on one call
    assert results["dit_vae"]["alpha"] == 3.0 and results["dit_lafa"]["alpha"] == 4.0
    assert results["dit_lafa"]["lpi"] == len(str(lafa_dir / "checkpoints" / "last.ckpt")) / 1000
    assert results["dit_vae"]["mel"] == {"alpha": 2.5, "lpi": 0.9}
    args = json.loads((tmp_path / "out" / "analysis" / "report.json").read_text())["args"]
    assert args[-2:] == ["--num_clips", "3"]


def test_a_failing_lafa_analyze_leaves_the_report_without_alpha_and_lpi(tmp_path):
    failing = tmp_path / "failing_lafa.py"
    failing.write_text("import sys\nsys.exit(3)\n")
    vae = tmp_path / "vae.ckpt"
    vae.write_bytes(b"weights")
    study = parse_study({
        "name": "c", "factor": "latent space", "factor_keys": ["model.init_args.autoencoder_ckpt"],
        "out_dir": str(tmp_path / "out"), "baseline": "dit_vae", "metrics": {"val/loss": "min"},
        "lafa": [sys.executable, str(failing)], "analysis": {"args": []},
        "stages": {"ae": ["unused.yaml"], "dit": ["unused.yaml"]},
        "runs": {"vae": {"stage": "ae", "ckpt": str(vae)}, "dit_vae": {"stage": "dit", "compare": True, "latent": "vae"}},
    })
    from lafa.study.report import analyze_latents

    logged = []
    assert analyze_latents(study, log=logged.append) == {}
    assert "failed (exit 3)" in logged[-1]


def test_markdown_lists_the_locality_controls_of_each_latent(tmp_path):
    """analyze_latents' controls (lafa analyze's summary) reach the report's second table, intervals included."""
    study = _study(tmp_path, None)
    for name in ("base", "twice", "never", "once"):
        _log(tmp_path / name / "tb", [(10, 2.0), (20, 1.0)])
    summary = {"alpha": 1.5, "lpi": 0.6, "lpi_permuted": 0.4, "lpi_excess": 0.2, "participation_ratio": 7.25,
               "intervals": {"lpi": [0.55, 0.65], "lpi_excess": [0.15, 0.25]}}
    latents = {"twice": {"latent": "vae", "alpha": 1.5, "lpi": 0.6, "mel": None,
                         "controls": {k: v for k, v in summary.items() if k not in ("alpha", "lpi")}}}
    table = write_report(build_report(study, latents), tmp_path / "report")["markdown"].read_text()
    assert "| representation | alpha | alpha perm. |" in table
    assert "| twice (vae) | 1.50 | - | - | 0.600 [0.550, 0.650] | 0.400 | 0.200 [0.150, 0.250] | 7.2 | - | - |" in table
