"""Every run a study YAML names outside `runs:` (lab contrasts, link 1's runs and control, latents,
baseline, "@run") must exist: a misspelled one used to drop silently out of the report. `lafa study` stops
at load, before anything runs, with one line naming the section, the name and the names that exist; exit 2,
nothing written."""

from pathlib import Path

import pytest
import yaml

from lafa.cli import main
from lafa.study.spec import load_study

REPO = Path(__file__).resolve().parents[2]
FIX = "see docs/study.md for a study's keys (configs/studies/ holds examples)"


def _lab_contrast(raw):
    raw["lab"]["contrasts"][3] = ["dit_flt", "dit_local"]


def _lab_link1_run(raw):
    raw["lab"]["link1"]["runs"] = ["lafa_span", "lafa_of", "lafa_prefix"]


def _lab_link1_control(raw):
    raw["lab"]["link1"]["control"] = "lafa_of"


def _latents(raw):
    raw["latents"]["contrast"] = ["lafa_mask", "lafa_nomsk"]


MISSPELLED = {
    "lab.contrasts": ("ground_truth", _lab_contrast,
                      "lab.contrasts names unknown run 'dit_flt' "
                      "(compared runs: dit_local, dit_permuted, dit_rotated, dit_flat, dit_vae_like)"),
    "lab.link1.runs": ("ground_truth", _lab_link1_run,
                       "lab.link1.runs names unknown run 'lafa_of' (runs: dit_local, dit_permuted, "
                       "dit_rotated, dit_flat, dit_vae_like, lafa_span, lafa_off, lafa_prefix)"),
    "lab.link1.control": ("ground_truth", _lab_link1_control,
                          "lab.link1.control names unknown run 'lafa_of' "
                          "(lab.link1.runs: lafa_span, lafa_off, lafa_prefix)"),
    "latents": ("locality_control", _latents,
                "latents names unknown run 'lafa_nomsk' (runs: standin, lafa_mask, lafa_nomask, rotate_y, "
                "dit_y, dit_rot, dit_plain)"),
}


@pytest.mark.parametrize("plan", [True, False], ids=["plan", "run"])
@pytest.mark.parametrize("section", list(MISSPELLED))
def test_a_misspelled_run_stops_the_study_at_load(section, plan, tmp_path, monkeypatch, capsys):
    study, misspell, what = MISSPELLED[section]
    monkeypatch.chdir(REPO)
    raw = yaml.safe_load((REPO / "configs" / "studies" / f"{study}.yaml").read_text())
    raw["out_dir"] = str(tmp_path / "out")
    misspell(raw)
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))

    assert main(["study", "--config", str(path), *(["--plan"] if plan else [])]) == 2
    captured = capsys.readouterr()
    assert captured.err.splitlines() == [f"lafa study: error: --config {path}: {what}; {FIX}"]
    assert captured.out == ""
    assert not (tmp_path / "out").exists()


def test_baseline_and_run_references_name_the_runs_that_exist(tmp_path):
    raw = yaml.safe_load((REPO / "configs" / "studies" / "ground_truth.yaml").read_text())
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump({**raw, "baseline": "dit_locl"}, sort_keys=False))
    compared = "dit_local, dit_permuted, dit_rotated, dit_flat, dit_vae_like"
    with pytest.raises(ValueError, match=rf"baseline 'dit_locl' must be a run with compare: true "
                                         rf"\(compared runs: {compared}\)$"):
        load_study([path])
    raw["runs"]["dit_local"]["set"]["model.init_args.autoencoder_ckpt"] = "@lafa_spn"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    with pytest.raises(ValueError, match=r"runs.dit_local refers to unknown run 'lafa_spn' "
                                         r"\(runs: dit_local, .*, lafa_prefix\)$"):
        load_study([path])


def test_contrasts_must_be_pairs(tmp_path):
    raw = yaml.safe_load((REPO / "configs" / "studies" / "ground_truth.yaml").read_text())
    raw["lab"]["contrasts"] = [["dit_flat", "dit_local", "dit_rotated"]]
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    with pytest.raises(ValueError, match=r"lab.contrasts entries must be \[a, b\] pairs"):
        load_study([path])


@pytest.mark.parametrize("name", sorted(p.stem for p in (REPO / "configs" / "studies").glob("*.yaml")))
def test_every_shipped_study_loads(name, monkeypatch):
    """No false alarm: each committed study, alone and with its tiny / GPU overlay, names only runs it has."""
    monkeypatch.chdir(REPO)
    base = REPO / "configs" / "studies" / f"{name}.yaml"
    overlays = [REPO / "configs" / size / "studies" / f"{name}.yaml" for size in ("tiny", "gpu")]
    for paths in [[base]] + [[base, o] for o in overlays if o.exists()]:
        study = load_study(paths)
        assert study.runs and study.baseline in study.runs


@pytest.mark.parametrize("section, edit, unknown, known", [
    ("lab", lambda lab: lab.update(excess_targt=lab.pop("excess_target")), "excess_targt",
     "excess_target, contrasts, window, permutations, link1"),
    ("lab.link1", lambda lab: lab["link1"].update(clip=256), "clip",
     "runs, control, clips, window, permutations, prefix_channels"),
])
def test_a_misspelled_lab_setting_is_refused_not_defaulted(section, edit, unknown, known, tmp_path):
    """`excess_targt: 0.2` used to be ignored and the report ran without its target (steps-to-target silently
    absent); every key of `lab` and `lab.link1` is one lafa.study.lab_report reads."""
    raw = yaml.safe_load((REPO / "configs" / "studies" / "ground_truth.yaml").read_text())
    edit(raw["lab"])
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    with pytest.raises(ValueError, match=rf"unknown key\(s\) in {section}: {unknown} \(known: {known}\)$"):
        load_study([path])
