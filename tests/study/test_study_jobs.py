"""`jobs: 2`: a study trains two runs at once, each as soon as the runs it reads are finished, and a killed
study leaves no training behind. Real `lafa study` / `lafa fit` subprocesses on tests/study/fake_stage.py."""

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


def _study(tmp_path: Path, jobs: int, step_sleep: float = 0.02) -> Path:
    stage = tmp_path / "reg.yaml"
    stage.write_text(yaml.safe_dump({
        "seed_everything": 0,
        "model": {"class_path": "tests.study.fake_stage.LinearRegression",
                  "init_args": {"dim": 8, "lr": 0.01, "step_sleep": step_sleep}},
        "data": {"class_path": "tests.study.fake_stage.StepTicks"},
        "trainer": {"max_steps": 20, "val_check_interval": 10, "accelerator": "cpu", "devices": 1,
                    "enable_progress_bar": False, "enable_model_summary": False, "num_sanity_val_steps": 0},
    }))
    study = tmp_path / "study.yaml"
    study.write_text(yaml.safe_dump({
        "name": "toy", "factor": "learning rate", "out_dir": str(tmp_path / "out"), "jobs": jobs,
        "factor_keys": ["model.init_args.lr", "model.init_args.autoencoder_ckpt"],
        "baseline": "a", "metrics": {"val/loss": "min"}, "stages": {"reg": [str(stage)]},
        "runs": {"a": {"stage": "reg", "compare": True, "set": {"model.init_args.lr": 0.02}},
                 "c": {"stage": "reg", "compare": True, "set": {"model.init_args.autoencoder_ckpt": "@a"}},
                 "b": {"stage": "reg", "compare": True, "set": {"model.init_args.lr": 0.06}}},
    }, sort_keys=False))
    return study


def _command(study: Path) -> tuple[list[str], dict]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
               LAFA_TRUSTED_CLASSES="tests.study.fake_stage", OMP_NUM_THREADS="1")
    return [sys.executable, "-m", "lafa", "study", "--config", str(study)], env


@pytest.mark.slow
def test_two_runs_at_once_and_a_dependant_only_after_its_dependency(tmp_path):
    command, env = _command(_study(tmp_path, jobs=2))
    log = subprocess.run(command, env=env, cwd=REPO, check=True, capture_output=True, text=True).stdout
    events = [line.split("] ", 1)[1] for line in log.splitlines() if line.startswith("[study toy]")]
    # c reads a's checkpoint: b (independent, listed after c) starts beside a; c only once a is done
    assert events[:2] == ["a: starting", "b: starting"], events
    assert events.index("c: starting") > events.index("a: done"), events
    for run in "abc":
        assert (tmp_path / "out" / run / "DONE").exists()
        assert "Trainer.fit` stopped" in (tmp_path / "out" / run / "fit.log").read_text()  # its own log
    # the same study with one job at a time writes the same report
    parallel = json.loads((tmp_path / "out" / "report" / "report.json").read_text())
    (tmp_path / "serial").mkdir()
    command, env = _command(_study(tmp_path / "serial", jobs=1))
    subprocess.run(command, env=env, cwd=REPO, check=True, capture_output=True)
    serial = json.loads((tmp_path / "serial" / "out" / "report" / "report.json").read_text())
    assert serial["runs"] == parallel["runs"]


@pytest.mark.slow
def test_a_killed_study_leaves_no_training_running(tmp_path):
    """SIGKILL to the study process alone (not its group): its `lafa fit` children die with it."""
    command, env = _command(_study(tmp_path, jobs=2, step_sleep=0.2))
    proc = subprocess.Popen(command, env=env, cwd=REPO, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    out = tmp_path / "out"
    start = time.monotonic()
    children: list[str] = []
    while len(children) < 2:  # both runs started (a and b; c waits for a)
        assert proc.poll() is None and time.monotonic() - start < 120
        time.sleep(0.05)
        children = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
    assert len(children) == 2
    proc.kill()
    proc.wait()
    deadline = time.monotonic() + 20
    while any(Path(f"/proc/{pid}").exists() for pid in children) and time.monotonic() < deadline:
        time.sleep(0.1)
    alive = [pid for pid in children if Path(f"/proc/{pid}").exists()
             and "zombie" not in Path(f"/proc/{pid}/status").read_text().lower()]
    assert not alive, f"lafa fit still running after its study was killed: {alive}"
    for pid in children:  # nothing to reap (reparented), but never leave one behind
        try:
            os.kill(int(pid), signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert not (out / "a" / "DONE").exists()  # nothing marked done that did not finish
