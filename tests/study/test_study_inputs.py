"""A study folder remembers what made it (lafa.study.inputs): the same study resumes; the same study over data
shards rebuilt with other settings (the same paths) is refused in one line naming both fingerprints, with nothing
in the folder touched; a folder from before the record gets one, said once; --overwrite moves the old runs aside."""

import hashlib
import json
import tarfile

import pytest
import yaml

from lafa.cli import main as lafa_main
from lafa.errors import BadInput
from lafa.study.inputs import RECORD, STALE, check_study_inputs, shard_set_fingerprint, study_record
from lafa.study.runner import DONE, fit_config, instances, plan, run_study
from lafa.study.spec import load_study


def _shards(folder, fingerprint):
    """A data_prep-like shard folder: one tar and its state record (the plan fingerprint data_prep writes)."""
    (folder / ".state").mkdir(parents=True, exist_ok=True)
    with tarfile.open(folder / "train-000000.tar", "w"):
        pass
    (folder / ".state" / "train-000000.tar.json").write_text(json.dumps({"fingerprint": fingerprint}))


def _study(tmp_path, shards):
    stage = tmp_path / "reg.yaml"
    stage.write_text(yaml.safe_dump({
        "model": {"class_path": "tests.study.fake_stage.LinearRegression", "init_args": {"dim": 8, "lr": 0.01}},
        "data": {"class_path": "lafa.data.AudioDataModule",
                 "init_args": {"train_shards": str(shards / "train-*.tar")}},
        "trainer": {"max_steps": 30, "val_check_interval": 5},
    }))
    study = tmp_path / "study.yaml"
    study.write_text(yaml.safe_dump({
        "name": "toy", "factor": "learning rate", "factor_keys": ["model.init_args.lr"],
        "out_dir": str(tmp_path / "out"), "baseline": "slow", "metrics": {"val/loss": "min"},
        "stages": {"reg": [str(stage)]},
        "runs": {"slow": {"stage": "reg", "compare": True, "set": {"model.init_args.lr": 0.02}},
                 "fast": {"stage": "reg", "compare": True, "set": {"model.init_args.lr": 0.06}}},
    }, sort_keys=False))
    return study


def _finished(study):
    """Every run as a finished study leaves it (fit.yaml and DONE): run_study skips them without training."""
    plan(study)
    for inst in instances(study):
        (inst.dir / DONE).write_text("{}\n")


def _snapshot(folder):
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_the_shard_fingerprint_follows_what_made_the_shards(tmp_path):
    _shards(tmp_path / "a", "1" * 64)
    _shards(tmp_path / "b", "1" * 64)
    _shards(tmp_path / "c", "2" * 64)
    a, b, c = (shard_set_fingerprint(str(tmp_path / x / "train-*.tar")) for x in "abc")
    assert a == b != c  # the same build elsewhere (a copied folder) is the same data; a rebuild is not
    assert shard_set_fingerprint(str(tmp_path / "none" / "*.tar")) == "missing"


def test_a_study_over_rebuilt_shards_is_refused_and_its_folder_untouched(tmp_path, capsys):
    shards = tmp_path / "shards"
    _shards(shards, "1" * 64)
    path = _study(tmp_path, shards)
    study = load_study([path])
    _finished(study)
    out = tmp_path / "out"
    run_study(study, log=lambda _: None)  # a folder from before the record: it gets one, with a note
    assert capsys.readouterr().err.count("holds runs but no record of the inputs that made them") == 1
    record = json.loads((out / RECORD).read_text())
    assert record["study"] == "toy" and list(record["data"]) == [f"data.init_args.train_shards {shards}/train-*.tar"]
    run_study(study, log=lambda _: None)  # the same inputs: skipped as done, no note again
    assert "no record" not in capsys.readouterr().err

    _shards(shards, "2" * 64)  # data_prep rebuilt the shards with other settings, same names
    before = _snapshot(out)
    assert lafa_main(["study", "-c", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    new = study_record("toy", [fit_config(study, i) for i in instances(study)])["fingerprint"]
    assert "\n" not in err and err.startswith(f"lafa study: error: out_dir {out}: was made from other inputs (its "
                                              f"fingerprint {record['fingerprint']}, this study's {new}; "
                                              f"data.init_args.train_shards {shards}/train-*.tar: ")
    assert err.endswith(f"pass --overwrite to move its runs to {out / STALE / record['fingerprint']} and start "
                        f"over, or set another out_dir")
    assert _snapshot(out) == before
    with pytest.raises(BadInput):
        run_study(study, log=lambda _: None)


def test_overwrite_moves_the_runs_aside_and_records_the_new_inputs(tmp_path):
    shards = tmp_path / "shards"
    _shards(shards, "1" * 64)
    study = load_study([_study(tmp_path, shards)])
    _finished(study)
    out, dirs = tmp_path / "out", [i.dir for i in instances(study)]
    old = study_record("toy", [fit_config(study, i) for i in instances(study)])
    check_study_inputs(out, old, dirs, overwrite=False)
    _shards(shards, "2" * 64)
    new = study_record("toy", [fit_config(study, i) for i in instances(study)])
    with pytest.raises(BadInput, match="was made from other inputs"):
        check_study_inputs(out, new, dirs, overwrite=False)
    check_study_inputs(out, new, dirs, overwrite=True, log=lambda _: None)
    assert not any(d.exists() for d in dirs)
    assert sorted(p.name for p in (out / STALE / old["fingerprint"]).iterdir()) == sorted(d.name for d in dirs)
    assert json.loads((out / RECORD).read_text())["fingerprint"] == new["fingerprint"]
