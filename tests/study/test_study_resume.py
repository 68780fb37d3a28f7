"""A study killed (SIGKILL) between runs and in the middle of one resumes and gives the same report.

Real `lafa study` / `lafa fit` subprocesses on a tiny deterministic stage (tests/study/fake_stage.py).
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
VAL_EVERY = 5  # the run checkpoints after every validation


def _study(tmp_path: Path, out: str, step_sleep: float) -> Path:
    stage = tmp_path / f"reg_{out}.yaml"
    stage.write_text(yaml.safe_dump({
        "seed_everything": 0,
        "model": {"class_path": "tests.study.fake_stage.LinearRegression",
                  "init_args": {"dim": 8, "lr": 0.01, "step_sleep": step_sleep}},
        "data": {"class_path": "tests.study.fake_stage.StepTicks"},
        "trainer": {"max_steps": 30, "val_check_interval": VAL_EVERY, "accelerator": "cpu", "devices": 1,
                    "enable_progress_bar": False, "enable_model_summary": False, "num_sanity_val_steps": 0},
    }))
    study = tmp_path / f"study_{out}.yaml"
    study.write_text(yaml.safe_dump({
        "name": "toy", "factor": "learning rate", "factor_keys": ["model.init_args.lr"],
        "out_dir": str(tmp_path / out), "baseline": "slow", "metrics": {"val/loss": "min"},
        "stages": {"reg": [str(stage)]},
        "runs": {"slow": {"stage": "reg", "compare": True, "set": {"model.init_args.lr": 0.02}},
                 "fast": {"stage": "reg", "compare": True, "set": {"model.init_args.lr": 0.06}}},
    }, sort_keys=False))
    return study


def _command(study: Path) -> tuple[list[str], dict]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
               LAFA_TRUSTED_CLASSES="tests.study.fake_stage")  # a resume checks the classes its checkpoint names
    return [sys.executable, "-m", "lafa", "study", "--config", str(study)], env


def _kill_when(study: Path, ready, timeout: float = 120.0) -> None:
    """Start the study in its own process group and SIGKILL the whole group (study + `lafa fit`) once ready()."""
    command, env = _command(study)
    proc = subprocess.Popen(command, env=env, cwd=REPO, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    start = time.monotonic()
    while not ready():
        assert proc.poll() is None, "the study ended before it could be killed"
        assert time.monotonic() - start < timeout
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _val_steps(run_dir: Path) -> list[int]:
    from lafa.study.report import read_curves

    return [step for step, _ in read_curves(run_dir / "tb").get("val/loss", [])]


@pytest.mark.slow
def test_killed_study_resumes_to_the_same_report(tmp_path):
    command, env = _command(_study(tmp_path, "reference", step_sleep=0.0))
    subprocess.run(command, env=env, cwd=REPO, check=True, capture_output=True)
    reference = json.loads((tmp_path / "reference" / "report" / "report.json").read_text())
    assert reference["runs"]["fast"]["summary"]["val/loss"]["speedup"]["mean"] > 1.5

    study = _study(tmp_path, "killed", step_sleep=0.05)
    out = tmp_path / "killed"
    # 1. killed between runs: as soon as the first run is marked done
    _kill_when(study, lambda: (out / "slow" / "DONE").exists())
    assert not (out / "fast" / "DONE").exists()
    # 2. killed in the middle of a run, between two evaluations, after its first checkpoint
    _kill_when(study, lambda: len(_val_steps(out / "fast")) >= 2)
    assert not (out / "fast" / "DONE").exists()
    # 3. the re-run skips the finished run, resumes the interrupted one and writes the same report
    command, env = _command(study)
    log = subprocess.run(command, env=env, cwd=REPO, check=True, capture_output=True, text=True).stdout
    assert "slow: done, skipped" in log and "fast: resuming from" in log
    assert len(list((out / "fast" / "tb").glob("events.out.tfevents.*"))) == 2  # it did restart mid-run
    resumed = json.loads((out / "report" / "report.json").read_text())
    assert resumed == reference
