"""The ground-truth lab's report (lafa.study.lab_report) on synthetic logs with known answers, and its closed-form
columns against lafa.lab."""

import math

import numpy as np
import pytest
from scipy import stats
from torch.utils.tensorboard import SummaryWriter

from lafa.lab.alignment import alignment_permuted, alignment_white
from lafa.lab.floors import loss_floors
from lafa.lab.locality import population_measures
from lafa.lab.spec import GaussianLatentSpec
from lafa.study.lab_report import lab_markdown, lab_section
from lafa.study.spec import parse_study

SEEDS = [0, 1, 2]
STEPS = [49, 99, 149, 199]


def _study(out_dir):
    return parse_study({
        "name": "lab", "factor": "basis", "factor_keys": ["data.init_args.basis", "data.init_args.spectrum",
                                                          "model.init_args.model.mask_ratio"],
        "out_dir": str(out_dir), "baseline": "local", "metrics": {"val/excess_loss": "min"}, "seeds": SEEDS,
        "lab": {"excess_target": 0.2, "window": 32, "permutations": 4,
                "contrasts": [["rotated", "local"], ["flat", "local"]],
                "link1": {"runs": ["lafa_span", "lafa_off"], "control": "lafa_off", "window": 32, "permutations": 4,
                          "clips": 24}},
        "stages": {"dit": {"config": ["configs/lab/dit_tiny.yaml"], "set": {"trainer.max_steps": 200,
                                                                              "trainer.val_check_interval": 50}},
                   "lafa": {"config": ["configs/lab/lafa_tiny.yaml"], "set": {"trainer.max_steps": 200}}},
        "runs": {
            "local": {"stage": "dit", "compare": True, "set": {"data.init_args.basis": "dct"}},
            "rotated": {"stage": "dit", "compare": True, "set": {"data.init_args.basis": "rotated"}},
            "flat": {"stage": "dit", "compare": True, "set": {"data.init_args.spectrum": "flat"}},
            "lafa_span": {"stage": "lafa", "seeded": True},
            "lafa_off": {"stage": "lafa", "seeded": True, "set": {"model.init_args.model.mask_ratio": 0.0}},
        },
    })


def excess(run, seed, step):
    """Known curves: local falls fastest; rotated is local + 0.01 (seed + 1); flat never reaches 0.2."""
    base = 0.4 - 0.0012 * step + 0.005 * seed
    return {"local": base, "rotated": base + 0.01 * (seed + 1), "flat": 0.45 - 0.0005 * step}[run]


def _write(study):
    for run in ("local", "rotated", "flat"):
        for seed in SEEDS:
            d = study.run_dir(f"{run}-seed{seed}")
            writer = SummaryWriter(str(d / "tb"))
            for step in STEPS:
                writer.add_scalar("val/excess_loss", excess(run, seed, step), step)
                writer.add_scalar("val/exact_fd", 2.0 + seed, step)
                writer.add_scalar("val/exact_fd_oracle", 1.5, step)
                writer.add_scalar("val/exact_fd_baseline", 1.0, step)
            writer.close()
            (d / "DONE").write_text("{}\n")


def t_interval(values):
    m, s = np.mean(values), np.std(values, ddof=1)
    half = stats.t.ppf(0.975, len(values) - 1) * s / math.sqrt(len(values))
    return m - half, m + half


def test_lab_section_against_known_curves_and_closed_forms(tmp_path):
    study = _study(tmp_path)
    _write(study)
    section = lab_section(study)
    local, rotated, flat = (section["arms"][r] for r in ("local", "rotated", "flat"))
    # closed forms: population measures of the run's own spec, and the mean exact floor over its val_t grid
    spec = GaussianLatentSpec(channels=32, frames=32, spectrum="power_law", noise_channels=4, basis="rotated")
    expected = population_measures(spec, window=32, permutations=4, seed=0)
    for key in ("alpha", "alpha_excess", "lpi", "lpi_excess", "participation_ratio"):
        assert rotated["closed_form"][key] == pytest.approx(expected[key])
    floors = loss_floors(spec, [0.1, 0.3, 0.5, 0.7, 0.9], "v", 1.0)
    assert rotated["closed_form"]["loss_floor"] == pytest.approx(sum(floors.values()) / 5)
    assert rotated["closed_form"]["loss_floor"] == pytest.approx(local["closed_form"]["loss_floor"], abs=1e-12)
    assert flat["closed_form"]["loss_floor"] != pytest.approx(local["closed_form"]["loss_floor"], abs=0.02)
    # final and mean excess over seeds with Student-t intervals
    finals = [excess("local", s, 199) for s in SEEDS]
    assert local["summary"]["final_excess"]["mean"] == pytest.approx(np.mean(finals), abs=1e-6)
    assert local["summary"]["final_excess"]["ci95"] == pytest.approx(t_interval(finals), abs=1e-5)
    means = [np.mean([excess("local", s, st) for st in STEPS]) for s in SEEDS]
    assert local["summary"]["mean_excess"]["mean"] == pytest.approx(np.mean(means), abs=1e-6)
    # steps to excess 0.2: the linear curves cross at (0.2 + 0.005 seed) / 0.0012, found by interpolation
    crossings = [(0.2 + 0.005 * s) / 0.0012 for s in SEEDS]
    assert [local["seeds"][str(s)]["steps_to_excess"] for s in SEEDS] == pytest.approx(crossings, abs=1e-3)
    assert local["summary"]["steps_to_excess"]["ci95"] == pytest.approx(t_interval(crossings), abs=1e-5)
    assert rotated["summary"]["steps_to_excess"] == "not reached 1/3"  # seed 2 ends at 0.2012
    assert flat["summary"]["steps_to_excess"] == "not reached 3/3"
    assert local["summary"]["final_fd_minus_oracle"]["mean"] == pytest.approx(1.5, abs=1e-6)
    # paired difference rotated - local: 0.01 (seed + 1) at every step and seed
    contrast = section["contrasts"][0]
    assert contrast["runs"] == ["rotated", "local"]
    diffs = [0.01 * (s + 1) for s in SEEDS]
    assert contrast["difference"]["final_excess"]["mean"] == pytest.approx(0.02, abs=1e-6)
    assert contrast["difference"]["final_excess"]["ci95"] == pytest.approx(t_interval(diffs), abs=1e-5)
    assert contrast["difference"]["final_exact_fd"]["mean"] == pytest.approx(0.0, abs=1e-6)
    # link 1: nothing trained, so every instance is listed as missing; the references are closed forms
    link = section["link1"]
    assert sorted(link["missing"]) == sorted(f"{r}-seed{s}" for r in ("lafa_span", "lafa_off") for s in SEEDS)
    ideal = GaussianLatentSpec(channels=32, frames=32, basis="dct").channel_covariance
    refs = link["references"]
    assert refs["ideal ordered latent (arm (1))"]["alignment"] == pytest.approx(1.0)
    assert refs["decorrelated channels"]["alignment"] == pytest.approx(alignment_white(ideal))
    assert refs["ideal in a random channel order (expectation)"]["alignment"] == pytest.approx(alignment_permuted(ideal))
    assert set(link["runs"]["untrained"]["seeds"]) == {"0", "1", "2"}  # the architecture-alone reference
    assert 0.0 <= link["runs"]["untrained"]["summary"]["alignment"]["mean"] <= 1.0
    text = lab_markdown(section)
    assert "steps_to_excess" not in contrast["difference"]  # not every seed of rotated reached it
    assert "Ground-truth lab" in text and "not reached 1/3" in text and "Link 1" in text
