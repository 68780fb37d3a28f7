"""Seeded chains (a LAFA per seed, the DiT of that seed on it) and the per-seed latent report with intervals."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from torch.utils.tensorboard import SummaryWriter

from lafa.study.latents import interval, latent_runs_report, latents_markdown
from lafa.study.merge import run_config
from lafa.study.spec import parse_study

REPO = Path(__file__).resolve().parents[2]


def _raw(out_dir: Path, **extra) -> dict:
    raw = {
        "name": "chain", "factor": "masking", "factor_keys": ["model.init_args.model.mask_ratio", "model.init_args.ckpt"],
        "out_dir": str(out_dir), "baseline": "dit_a", "metrics": {"val/loss": "min"}, "seeds": [0, 1, 2],
        "analysis": {"args": ["--num_clips", "4"]},
        "stages": {"base": ["unused.yaml"], "lafa": ["unused.yaml"], "dit": ["unused.yaml"]},
        "runs": {
            "base": {"stage": "base"},
            "mask": {"stage": "lafa", "seeded": True, "set": {"model.init_args.ckpt": "@base"}},
            "nomask": {"stage": "lafa", "seeded": True,
                       "set": {"model.init_args.ckpt": "@base", "model.init_args.model.mask_ratio": 0.0}},
            "dit_a": {"stage": "dit", "compare": True, "set": {"model.init_args.ckpt": "@mask"}},
        },
        "latents": {"runs": ["base", "mask", "nomask"], "metrics": ["val/k2/latent_rel_mse"],
                    "contrast": ["mask", "nomask"]},
    }
    raw.update(extra)
    return raw


def test_a_seeded_run_reads_the_same_seeds_instance(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr("lafa.study.merge._load_yaml", lambda path: {})
    study = parse_study(_raw(tmp_path))
    assert study.seeds_of(study.runs["mask"]) == [0, 1, 2] and study.seeds_of(study.runs["base"]) == [None]
    for seed in (0, 1, 2):
        config = run_config(study, study.runs["dit_a"], seed)
        assert config["model"]["init_args"]["ckpt"] == str(tmp_path / f"mask-seed{seed}" / "checkpoints" / "last.ckpt")
        assert config["seed_everything"] == seed
        assert run_config(study, study.runs["mask"], seed)["model"]["init_args"]["ckpt"] == str(
            tmp_path / "base" / "checkpoints" / "last.ckpt")  # a run-once dependency stays one instance
        assert run_config(study, study.runs["mask"], seed)["seed_everything"] == seed


def test_a_run_once_may_not_read_a_seeded_run(tmp_path: Path) -> None:
    raw = _raw(tmp_path)
    raw["runs"]["once"] = {"stage": "dit", "set": {"model.init_args.ckpt": "@mask"}}
    with pytest.raises(ValueError, match="runs once but depends on 'mask'"):
        parse_study(raw)
    with pytest.raises(ValueError, match="latents names unknown run 'ghost'"):
        parse_study(_raw(tmp_path, latents={"runs": ["ghost"]}))
    with pytest.raises(ValueError, match="contrast must name two"):
        parse_study(_raw(tmp_path, latents={"runs": ["mask"], "contrast": ["mask", "nomask"]}))
    with pytest.raises(ValueError, match="needs an analysis section"):
        parse_study(_raw(tmp_path, analysis=None))


def test_interval_is_the_student_t_interval() -> None:
    stat = interval([1.0, 2.0, 3.0])
    p = 0.975  # Student t with 2 degrees of freedom has the closed-form quantile (2p - 1) / sqrt(2 p (1 - p))
    half = (2 * p - 1) / math.sqrt(2 * p * (1 - p)) / math.sqrt(3)  # t * s / sqrt(n), s = 1
    assert stat["mean"] == 2.0 and stat["std"] == 1.0 and stat["n"] == 3
    assert stat["ci95"] == pytest.approx([2.0 - half, 2.0 + half], rel=1e-12)
    assert interval([5.0]) == {"mean": 5.0, "std": None, "ci95": None, "n": 1}


def _finish(study, name: str, rel_mse: float | None) -> None:
    run_dir = study.run_dir(name)
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "checkpoints" / "last.ckpt").write_bytes(b"x")
    (run_dir / "DONE").write_text("{}\n")
    if rel_mse is not None:
        writer = SummaryWriter(str(run_dir / "tb"))
        writer.add_scalar("val/k2/latent_rel_mse", 2.0, 100)
        writer.add_scalar("val/k2/latent_rel_mse", rel_mse, 200)  # the final value counts
        writer.close()


def test_latent_report_gives_intervals_and_the_paired_contrast(tmp_path: Path) -> None:
    """Known per-seed numbers in, their means, t-intervals and paired differences out; an unfinished instance is
    listed, not silently averaged."""
    study = parse_study(_raw(tmp_path))
    lpi = {"mask": [0.2, 0.3, 0.4], "nomask": [0.5, 0.5, 0.9]}
    rel = {"mask": [0.8, 0.9, 1.0], "nomask": [0.4, 0.5, 0.6]}
    summary = {"base": {"alpha": 0.6, "lpi": 0.05}, "mel": {"alpha": 2.2, "lpi": 0.9}}
    _finish(study, "base", None)
    for run in ("mask", "nomask"):
        for seed in (0, 1, 2):
            if run == "nomask" and seed == 2:
                continue  # not finished
            _finish(study, f"{run}-seed{seed}", rel[run][seed])
            summary[f"{run}-seed{seed}"] = {"alpha": 1.0 + seed, "lpi": lpi[run][seed], "nested": {"x": 1.0}}
    out = tmp_path / "analysis_latents"
    out.mkdir()
    (out / "report.json").write_text(json.dumps({"summary": summary}))  # reused: no `lafa analyze` runs
    report = latent_runs_report(study, log=lambda _: None)
    assert report["missing"] == ["nomask-seed2"]
    mask = report["runs"]["mask"]
    assert set(mask["seeds"]) == {"0", "1", "2"}
    assert mask["summary"]["lpi"]["mean"] == pytest.approx(0.3)
    assert mask["summary"]["val/k2/latent_rel_mse"]["mean"] == pytest.approx(0.9)
    assert mask["summary"]["nested.x"]["mean"] == 1.0
    assert report["runs"]["base"]["summary"]["lpi"] == {"mean": 0.05, "std": None, "ci95": None, "n": 1}
    diff = report["contrast"]["difference"]
    assert report["contrast"]["seeds"] == ["0", "1"]  # paired on the seeds both finished
    assert diff["lpi"]["mean"] == pytest.approx(((0.2 - 0.5) + (0.3 - 0.5)) / 2)
    assert diff["val/k2/latent_rel_mse"]["mean"] == pytest.approx(0.4)
    assert report["mel"] == {"alpha": 2.2, "lpi": 0.9}
    text = latents_markdown(report)
    assert "Paired difference `mask` - `nomask`" in text and "nomask-seed2" in text
    assert "0.300 [" in text  # mean [interval]


def test_shipped_locality_control_study_plans(monkeypatch, tmp_path: Path) -> None:
    """The paper-scale study and its tiny overlay parse, differ only in their factor and plan 19 runs."""
    from lafa.study.runner import plan
    from lafa.study.spec import load_study

    monkeypatch.chdir(REPO)
    paths = [REPO / "configs" / "studies" / "locality_control.yaml",
             REPO / "configs" / "tiny" / "studies" / "locality_control.yaml"]
    for overlay in (paths[:1], paths):
        study = load_study(overlay)
        study.out_dir = str(tmp_path / study.name)
        commands = plan(study)
        assert len(commands) == 1 + 3 * 2 + 3 + 3 * 3
        assert study.latents.contrast == ["lafa_mask", "lafa_nomask"]
    assert commands[0].startswith("OMP_NUM_THREADS=1 lafa fit")  # the tiny overlay's env reaches every run
