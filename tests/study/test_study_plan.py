"""`--plan` lists exactly the runs of the study YAML in dependency order; runs differ only in the named factor."""

import shlex
from pathlib import Path

import pytest
import yaml

from lafa.commands.study import main as study_main
from lafa.study.merge import check_one_factor, config_differences, deep_merge, run_config
from lafa.study.runner import fit_config, instances
from lafa.study.spec import load_study

REPO = Path(__file__).resolve().parents[2]


def _write(path: Path, data) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return str(path)


@pytest.fixture
def study_files(tmp_path):
    stage = lambda cls, **args: {"seed_everything": 1, "model": {"class_path": cls, "init_args": args},  # noqa: E731
                                 "trainer": {"max_steps": 100, "val_check_interval": 10,
                                             "check_val_every_n_epoch": None, "callbacks": [
                                     {"class_path": "lightning.pytorch.callbacks.LearningRateMonitor"},
                                     {"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                                      "init_args": {"dirpath": "runs/shared/checkpoints", "save_last": True}}]}}
    vae = _write(tmp_path / "vae.yaml", stage("x.Vae", latent_dim=64))
    lafa = _write(tmp_path / "lafa.yaml", stage("x.Lafa", vae_ckpt=None, mask_ratio=1.0))
    dit = _write(tmp_path / "dit.yaml", stage("x.Dit", autoencoder_ckpt=None, width=32))
    dit_tiny = _write(tmp_path / "tiny_dit.yaml", {"trainer": {"max_steps": 20}, "model": {"init_args": {"width": 8}}})
    study = {
        "name": "converge", "factor": "latent space", "out_dir": str(tmp_path / "out"),
        "factor_keys": ["model.init_args.autoencoder_ckpt"], "baseline": "dit_vae", "seeds": [0, 1],
        "metrics": {"val/fd_mel": "min", "val/loss": "min"},
        "stages": {"vae": {"config": [vae]}, "lafa": [lafa], "dit": {"config": [dit], "set": {"trainer.max_steps": 50}}},
        # listed out of order on purpose: the plan must put every run after the runs it needs
        "runs": {
            "dit_lafa": {"stage": "dit", "compare": True, "latent": "lafa",
                         "set": {"model.init_args.autoencoder_ckpt": "@lafa"}},
            "dit_vae": {"stage": "dit", "compare": True, "latent": "vae",
                        "set": {"model.init_args.autoencoder_ckpt": "@vae"}},
            "lafa": {"stage": "lafa", "set": {"model.init_args.vae_ckpt": "@vae"}},
            "vae": {"stage": "vae"},
        },
    }
    overlay = {"out_dir": str(tmp_path / "tiny"), "stages": {"dit": {"config": [dit, dit_tiny]}}}
    return _write(tmp_path / "study.yaml", study), _write(tmp_path / "tiny_study.yaml", overlay), tmp_path


def test_plan_lists_every_run_in_dependency_order(study_files, capsys):
    paper, tiny, tmp = study_files
    assert study_main(["--config", paper, "--config", tiny, "--plan"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    out = tmp / "tiny"
    names = ["vae", "lafa", "dit_lafa-seed0", "dit_lafa-seed1", "dit_vae-seed0", "dit_vae-seed1"]
    assert lines == [shlex.join(["lafa", "fit", "--config", str(out / n / "fit.yaml"), "--ckpt_path", "last"])
                     for n in names]
    # each command's config exists and is a complete, resolved `lafa fit` config
    dit = yaml.safe_load((out / "dit_lafa-seed1" / "fit.yaml").read_text())
    assert dit["model"]["init_args"] == {"autoencoder_ckpt": str(out / "lafa" / "checkpoints" / "last.ckpt"),
                                         "width": 8}
    assert dit["seed_everything"] == 1 and dit["trainer"]["max_steps"] == 50  # study `set` beats the overlay
    assert dit["trainer"]["logger"]["init_args"] == {"save_dir": str(out / "dit_lafa-seed1"), "name": "",
                                                     "version": "tb"}
    # the stage's shared checkpoint folder is gone: every run resumes only from its own checkpoints
    lr_monitor, ckpt = dit["trainer"]["callbacks"]
    assert lr_monitor == {"class_path": "lightning.pytorch.callbacks.LearningRateMonitor"}
    assert ckpt["class_path"] == "lightning.pytorch.callbacks.ModelCheckpoint"
    assert ckpt["init_args"]["dirpath"] == str(out / "dit_lafa-seed1" / "checkpoints")
    assert ckpt["init_args"]["save_last"] == "link" and "every_n_train_steps" not in ckpt["init_args"]


def test_reused_checkpoint_is_not_planned_and_is_what_dependants_read(study_files):
    paper, tiny, tmp = study_files
    reuse = _write(tmp / "reuse.yaml", {"runs": {"vae": {"ckpt": "/models/sao_vae.ckpt"}}})
    study = load_study([paper, reuse])
    assert [i.name for i in instances(study) if not i.reused][0] == "lafa"
    lafa = next(i for i in instances(study) if i.name == "lafa")
    assert fit_config(study, lafa)["model"]["init_args"]["vae_ckpt"] == "/models/sao_vae.ckpt"


def test_runs_differ_only_in_the_factor(study_files):
    paper, tiny, tmp = study_files
    study = load_study([paper, tiny])
    check_one_factor(study)
    configs = {n: run_config(study, study.runs[n], 0) for n in ("dit_vae", "dit_lafa")}
    assert config_differences(configs) == {"model.init_args.autoencoder_ckpt"}

    stray = _write(tmp / "stray.yaml", {"runs": {"dit_lafa": {"set": {"trainer.max_steps": 10}}}})
    with pytest.raises(ValueError, match=r"differ in \['trainer.max_steps'\]"):
        check_one_factor(load_study([paper, tiny, stray]))
    with pytest.raises(ValueError, match="trainer.max_steps"):
        study_main(["--config", paper, "--config", stray, "--plan"])


def test_runs_must_evaluate_at_their_last_step(study_files):
    paper, tiny, tmp = study_files
    odd = _write(tmp / "odd.yaml", {"stages": {"dit": {"set": {"trainer.max_steps": 55}}}})
    with pytest.raises(ValueError, match="max_steps 55, not a multiple of trainer.val_check_interval 10"):
        study_main(["--config", paper, "--config", odd, "--plan"])


def test_bad_study_configs_are_named(study_files):
    paper, tiny, tmp = study_files
    cycle = _write(tmp / "cycle.yaml", {"runs": {"vae": {"set": {"model.init_args.x": "@dit_vae"}}}, "seeds": None})
    with pytest.raises(ValueError, match="dependency cycle"):
        load_study([paper, cycle])
    unknown = _write(tmp / "unknown.yaml", {"runs": {"lafa": {"set": {"model.init_args.vae_ckpt": "@vea"}}}})
    with pytest.raises(ValueError, match="unknown run 'vea'"):
        load_study([paper, unknown])
    with pytest.raises(ValueError, match=r"unknown keys \['checkpoint_evry'\]"):
        load_study([paper, _write(tmp / "k.yaml", {"checkpoint_evry": 5})])
    with pytest.raises(ValueError, match="metrics"):
        load_study([paper, _write(tmp / "m.yaml", {"metrics": {"val/loss": "lower"}})])


def test_deep_merge_follows_jsonargparse_rules():
    base = {"model": {"class_path": "a.A", "init_args": {"x": 1, "y": [1, 2]}}, "trainer": {"devices": 1}}
    assert deep_merge(base, {"model": {"init_args": {"y": [3]}}})["model"]["init_args"] == {"x": 1, "y": [3]}
    assert deep_merge(base, {"model": {"class_path": "b.B", "init_args": {"z": 0}}})["model"] == {
        "class_path": "b.B", "init_args": {"z": 0}}
    assert base["model"]["init_args"]["y"] == [1, 2]  # inputs untouched


@pytest.mark.parametrize("name", ["converge", "masking", "mask_ratio", "latent_dim"])
def test_shipped_studies_differ_only_in_their_factor(name, monkeypatch):
    """The committed study YAMLs (paper scale and tiny overlay) name existing stage configs and vary one factor."""
    monkeypatch.chdir(REPO)
    paths = [REPO / "configs" / "studies" / f"{name}.yaml", REPO / "configs" / "tiny" / "studies" / f"{name}.yaml"]
    assert all(p.exists() for p in paths), paths
    for variant in (paths[:1], paths):
        study = load_study(variant)
        missing = [c for s in study.stages.values() for c in s.config if not Path(c).exists()]
        assert not missing, f"stage configs missing: {missing}"
        check_one_factor(study)


def test_a_second_study_into_the_same_folder_is_refused(tmp_path):
    """One writer per study folder: while a study holds out_dir, another `lafa study` on it stops in one line."""
    import subprocess
    import sys
    import textwrap

    from lafa.commands.study import main
    from lafa.errors import LafaUserError

    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import time
        from lafa.output_lock import acquire
        acquire({str(tmp_path)!r}, "lafa study")
        print("held", flush=True)
        time.sleep(60)
        """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        overlay = tmp_path / "out.yaml"
        overlay.write_text(f"out_dir: {tmp_path}\n")
        with pytest.raises(LafaUserError, match=f"{tmp_path}: another job writes into this folder: pid {holder.pid}"):
            main(["--config", "configs/studies/converge.yaml", "--config", "configs/tiny/studies/converge.yaml",
                  "--config", str(overlay), "--report"])
    finally:
        holder.kill()


def test_a_run_may_repeat_over_fewer_seeds_than_the_study(study_files, capsys):
    """runs.<name>.seeds: a subset of the study's seeds; the runs it reads must run those seeds too."""
    paper, tiny, tmp = study_files
    fewer = _write(tmp / "fewer.yaml", {"seeds": [0, 1, 2], "runs": {
        "lafa": {"seeded": True, "seeds": [0, 1]},
        "dit_lafa": {"seeds": [1]}}})
    study = load_study([paper, tiny, fewer])
    assert [i.name for i in instances(study)] == [
        "vae", "lafa-seed0", "lafa-seed1", "dit_lafa-seed1", "dit_vae-seed0", "dit_vae-seed1", "dit_vae-seed2"]
    # seed 1 of the DiT reads seed 1 of the LAFA: one whole chain per seed
    config = run_config(study, study.runs["dit_lafa"], 1)
    assert config["model"]["init_args"]["autoencoder_ckpt"] == str(tmp / "tiny" / "lafa-seed1" / "checkpoints" / "last.ckpt")

    wider = _write(tmp / "wider.yaml", {"seeds": [0, 1, 2], "runs": {"lafa": {"seeded": True, "seeds": [0]},
                                                                     "dit_lafa": {"seeds": [0, 2]}}})
    with pytest.raises(ValueError, match=r"dit_lafa runs seeds \[2\] that 'lafa', which it reads, does not run"):
        load_study([paper, wider])
    outside = _write(tmp / "outside.yaml", {"runs": {"dit_lafa": {"seeds": [5]}}})
    with pytest.raises(ValueError, match=r"seeds \[5\] must be a non-empty subset of the study's seeds \[0, 1\]"):
        load_study([paper, outside])
    once = _write(tmp / "once.yaml", {"runs": {"vae": {"seeds": [0]}}})
    with pytest.raises(ValueError, match="seeds only apply to a run with compare: true or seeded: true"):
        load_study([paper, once])


def test_a_study_run_from_another_folder_names_the_missing_stage_config(tmp_path):
    """A newcomer runs a shipped study from outside the repository: its stage configs are relative paths, so one
    line names the missing file and the folder paths are relative to, with exit 2 (it was a traceback)."""
    import subprocess
    import sys

    res = subprocess.run([sys.executable, "-m", "lafa", "study", "-c", str(REPO / "configs/studies/converge.yaml"),
                          "--plan"], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                         env={**__import__("os").environ, "PYTHONPATH": str(REPO)})
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert res.returncode == 2 and len(lines) == 1 and "Traceback" not in res.stderr, res.stderr
    assert lines[0].startswith("lafa study: error: --config ") and "stage config not found: configs/" in lines[0]
    assert f"relative to the folder it runs from, {tmp_path}" in lines[0]
    assert list(tmp_path.iterdir()) == []  # nothing written
