"""The CLI stores the merged config in checkpoints, and `lafa test --ckpt_path X` runs from it alone; every
entry point keeps one error contract (issue 25): a user mistake is one line
`lafa <sub>: error: <file or option>: <what is wrong>; <how to fix>` with exit code 2 and nothing left on disk,
`--debug` shows the traceback, Ctrl-C says what was kept and how to resume, no third-party adverts."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from lafa.checkpoints import CHECKPOINT_CONFIG_KEY
from lafa.cli import main, with_checkpoint_config
from tests.helpers.processes import ctrl_c_default

REPO = Path(__file__).resolve().parents[1]
TRUST = {"LAFA_TRUSTED_CLASSES": "tests.cli_fixtures"}  # the fixture classes these checkpoints name


@pytest.fixture(autouse=True)
def trust_fixtures(monkeypatch) -> None:
    monkeypatch.setenv(*next(iter(TRUST.items())))


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", **TRUST}
    return subprocess.run([sys.executable, "-m", "lafa", *args], cwd=cwd, env=env, capture_output=True, text=True)


@pytest.fixture(scope="module")
def fitted(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("fit")
    config = {
        "model": {"class_path": "tests.cli_fixtures.LineModel", "init_args": {"lr": 0.2}},
        "data": {"class_path": "tests.cli_fixtures.LineData", "init_args": {"slope": 2.5}},
        "trainer": {"max_steps": 30, "accelerator": "cpu", "default_root_dir": str(root),
                    "enable_progress_bar": False, "logger": False,
                    "callbacks": [{"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                                   "init_args": {"dirpath": str(root / "ckpt"), "save_last": True}}]},
    }
    (root / "fit.yaml").write_text(yaml.safe_dump(config))
    proc = _run(["fit", "--config", str(root / "fit.yaml")], cwd=root)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (root / "fit.console").write_text(proc.stdout + proc.stderr)
    return root


def test_checkpoint_carries_the_merged_config(fitted: Path) -> None:
    ckpt = torch.load(fitted / "ckpt" / "last.ckpt", weights_only=True)
    stored = yaml.safe_load(ckpt[CHECKPOINT_CONFIG_KEY])
    assert stored["model"]["class_path"] == "tests.cli_fixtures.LineModel"
    assert stored["model"]["init_args"]["lr"] == 0.2
    assert stored["data"]["init_args"]["slope"] == 2.5
    assert stored["trainer"]["max_steps"] == 30


def test_test_runs_from_the_checkpoint_alone(fitted: Path) -> None:
    proc = _run(["test", "--ckpt_path", str(fitted / "ckpt" / "last.ckpt")], cwd=fitted)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "test/mse" in proc.stdout


def test_a_later_config_overrides_the_stored_one(fitted: Path) -> None:
    override = fitted / "override.yaml"
    override.write_text(yaml.safe_dump({"data": {"init_args": {"slope": -7.0}}}))
    argv = with_checkpoint_config(["test", "--ckpt_path", str(fitted / "ckpt" / "last.ckpt"), "--config", str(override)])
    # the stored config comes first, so the user's --config (later) wins
    assert argv[1] == "--config" and argv[-1] == str(override)
    proc_same = _run(["test", "--ckpt_path", str(fitted / "ckpt" / "last.ckpt")], cwd=fitted)
    proc_over = _run(argv, cwd=fitted)
    assert proc_over.returncode == 0, proc_over.stderr[-3000:]

    def mse(out: str) -> float:
        line = next(ln for ln in out.splitlines() if "test/mse" in ln)
        return float(line.replace("│", " ").split()[-1])

    # the model learned slope 2.5; testing on slope -7 data must give a much larger error
    assert mse(proc_over.stdout) > 10 * mse(proc_same.stdout)


def test_model_arguments_override_the_checkpoint(fitted: Path) -> None:
    ckpt = str(fitted / "ckpt" / "last.ckpt")
    base = _run(["test", "--ckpt_path", ckpt], cwd=fitted)
    zeroed = _run(["test", "--ckpt_path", ckpt, "--model.init_args.test_scale", "0.0"], cwd=fitted)
    assert zeroed.returncode == 0, zeroed.stderr[-3000:]

    def mse(out: str) -> float:
        return float(next(ln for ln in out.splitlines() if "test/mse" in ln).replace("│", " ").split()[-1])

    # predictions scaled to zero: the error becomes E[y^2] = 2.5^2 * E[x^2], far above the trained model's
    assert mse(zeroed.stdout) > 1.0 > 100 * mse(base.stdout)


def test_missing_checkpoint_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        with_checkpoint_config(["test", "--ckpt_path", str(tmp_path / "nope.ckpt")])


def test_checkpoint_without_config_needs_one(tmp_path: Path) -> None:
    path = tmp_path / "plain.ckpt"
    torch.save({"state_dict": {}}, path)
    with pytest.raises(ValueError, match="carries no lafa config"):
        with_checkpoint_config(["test", "--ckpt_path", str(path)])


def test_help_lists_project_subcommands(capsys) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in ("analyze", "generate", "evaluate", "study", "encode", "export"):
        assert name in out


def test_lafa_test_reads_the_checkpoint_once(fitted: Path, monkeypatch) -> None:
    """The stored config, the trust and NaN checks and Lightning's restore share one read (three before)."""
    import lafa.checkpoints

    ckpt = str(fitted / "ckpt" / "last.ckpt")
    lafa.checkpoints._last.clear()
    loads, real = [], torch.load
    monkeypatch.setattr(torch, "load", lambda f, *a, **k: loads.append(str(f)) or real(f, *a, **k))
    monkeypatch.chdir(fitted)
    assert main(["test", "--ckpt_path", ckpt]) == 0
    assert loads == [ckpt]


# --- the error contract (issue 25) ---------------------------------------------------------------------------

ADVERTS = ("LightningCLI's args parameter", "litlogger", "litmodels", "Tip:")


def _one_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    return lines[0]


def test_no_third_party_adverts(fitted: Path) -> None:
    """`lafa fit --help` and a whole fit print neither Lightning's args warning nor its litlogger advert."""
    proc = _run(["fit", "--help"], cwd=fitted)
    assert proc.returncode == 0 and proc.stdout.startswith("usage: lafa"), proc.stderr[-2000:]
    console = proc.stdout + proc.stderr + (fitted / "fit.console").read_text()
    for advert in ADVERTS:
        assert advert not in console


def test_fit_on_a_missing_checkpoint_is_one_line_and_leaves_nothing(fitted: Path, tmp_path: Path) -> None:
    config = yaml.safe_load((fitted / "fit.yaml").read_text())
    config["trainer"]["default_root_dir"] = str(tmp_path / "runs")
    config["trainer"]["logger"] = {"class_path": "lightning.pytorch.loggers.TensorBoardLogger",
                                   "init_args": {"save_dir": str(tmp_path / "runs")}}
    (tmp_path / "fit.yaml").write_text(yaml.safe_dump(config))
    work = tmp_path / "work"
    work.mkdir()
    proc = _run(["fit", "-c", str(tmp_path / "fit.yaml"), "--ckpt_path", "nope"], cwd=work)
    assert proc.returncode == 2
    assert _one_line(proc.stderr) == (
        "lafa fit: error: --ckpt_path nope: no such file; give a .ckpt written by `lafa fit` (e.g. "
        "runs/<stage>/checkpoints/last.ckpt), or `--ckpt_path last` to resume the config's own last checkpoint")
    assert not (tmp_path / "runs").exists() and not any(work.iterdir())  # no empty version_0 left behind


def test_debug_shows_the_traceback(tmp_path: Path, capsys) -> None:
    from lafa.errors import BadInput

    with pytest.raises(BadInput, match="no such file"):
        main(["validate", "--ckpt_path", str(tmp_path / "nope.ckpt"), "--debug"])
    assert main(["validate", "--ckpt_path", str(tmp_path / "nope.ckpt")]) == 2
    assert _one_line(capsys.readouterr().err).startswith(f"lafa validate: error: --ckpt_path {tmp_path}/nope.ckpt")


def test_predict_is_not_offered(capsys) -> None:
    assert main(["--help"]) == 0
    assert "predict" not in capsys.readouterr().out
    assert main(["predict", "--ckpt_path", "x.ckpt"]) == 2
    assert _one_line(capsys.readouterr().err) == (
        "lafa predict: error: predict: not offered by lafa; no lafa stage defines a prediction; use `lafa generate` "
        "(audio from a DiT), `lafa encode` (latents of an autoencoder) or `lafa analyze` (latent statistics)")
    assert main(["fitt"]) == 2
    assert _one_line(capsys.readouterr().err).startswith("lafa fitt: error: fitt: not a lafa subcommand; use one of")


def test_study_on_a_missing_config_is_one_line(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    for flag in ("--config", "-c"):
        assert main(["study", flag, "nope.yaml"]) == 2
        assert _one_line(capsys.readouterr().err) == (
            "lafa study: error: --config nope.yaml: no such file; give a study YAML, e.g. "
            "configs/studies/converge.yaml")
    (tmp_path / "bad.yaml").write_text("name: x\nrunz: {}\n")
    assert main(["study", "-c", "bad.yaml"]) == 2
    assert _one_line(capsys.readouterr().err).startswith("lafa study: error: --config bad.yaml: unknown keys ['runz']")
    assert main(["study"]) == 2
    assert "--config: is required" in _one_line(capsys.readouterr().err)
    assert list(tmp_path.iterdir()) == [tmp_path / "bad.yaml"]


def test_encode_takes_every_repeated_shards_option() -> None:
    from lafa.commands.encode import build_parser

    args = build_parser().parse_args(["--ckpt_path", "x", "--shards", "a-*.tar", "--shards", "b-*.tar", "--out", "o"])
    assert args.shards == ["a-*.tar", "b-*.tar"] and args.device == "auto"


def test_encode_mistakes_are_one_line(tmp_path: Path, capsys) -> None:
    assert main(["encode", "--ckpt_path", str(tmp_path / "x.ckpt"), "--shards", "a", "--out", "o"]) == 2
    assert _one_line(capsys.readouterr().err).startswith(f"lafa encode: error: --ckpt_path {tmp_path}/x.ckpt: no such")
    (tmp_path / "x.ckpt").write_bytes(b"")
    assert main(["encode", "-c", str(tmp_path / "none.yaml"), "--out", "o"]) == 2
    capsys.readouterr()
    assert main(["encode", "--ckpt_path", str(tmp_path / "x.ckpt"), "--shards", str(tmp_path / "none-*.tar"),
                 "--shards", str(tmp_path / "b-*.tar"), "--out", str(tmp_path / "o")]) == 2
    assert "matches no shard files" in _one_line(capsys.readouterr().err)
    assert not (tmp_path / "o").exists()


def test_ctrl_c_in_fit_says_what_was_kept_and_how_to_resume(fitted: Path, tmp_path: Path) -> None:
    config = yaml.safe_load((fitted / "fit.yaml").read_text())
    ckpt_dir = tmp_path / "ckpt"
    config["trainer"].update(max_steps=10**8, max_epochs=-1, default_root_dir=str(tmp_path))
    config["trainer"]["callbacks"][0]["init_args"].update(dirpath=str(ckpt_dir), every_n_train_steps=20)
    (tmp_path / "long.yaml").write_text(yaml.safe_dump(config))
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", **TRUST}
    proc = subprocess.Popen([sys.executable, "-m", "lafa", "fit", "-c", str(tmp_path / "long.yaml")], cwd=tmp_path,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=ctrl_c_default)
    deadline = time.monotonic() + 300
    while not (ckpt_dir / "last.ckpt").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.5)
    time.sleep(1.0)
    os.kill(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-3000:]
    last = [ln for ln in err.splitlines() if ln.strip()][-1]
    assert last.startswith("lafa fit: interrupted (Ctrl-C) at step "), err[-3000:]
    assert f"; kept {ckpt_dir}/last.ckpt (step " in last
    assert last.endswith(f"resume with: lafa fit -c {tmp_path}/long.yaml --ckpt_path {ckpt_dir}/last.ckpt")
    assert "Traceback" not in err


@pytest.mark.parametrize("command", ["analyze", "encode", "export", "generate", "evaluate", "study"])
def test_project_subcommands_take_c_for_config(command: str, capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    assert "-c CONFIG, --config CONFIG" in capsys.readouterr().out


def test_data_prep_keeps_the_contract(tmp_path: Path, capsys) -> None:
    from data_prep.__main__ import main as data_prep

    with pytest.raises(SystemExit):
        data_prep(["demo", "--help"])
    help_ = " ".join(capsys.readouterr().out.split())
    assert "(default: 4MB)" in help_ and "(default: 4.0)" in help_ and "(default: flac)" in help_
    assert data_prep(["build", "--out", str(tmp_path / "out"), "--folder", str(tmp_path / "nope")]) == 2
    assert _one_line(capsys.readouterr().err) == (
        f"data_prep: error: --folder {tmp_path}/nope: that folder does not exist; check the path")
    (tmp_path / "empty").mkdir()
    assert data_prep(["build", "--out", str(tmp_path / "out"), "--folder", str(tmp_path / "empty")]) == 2
    assert _one_line(capsys.readouterr().err).startswith(f"data_prep: error: {tmp_path}/empty: no audio files")
    assert not list((tmp_path / "out").rglob("*.tar")) and not (tmp_path / "out" / ".lafa.lock").exists()


def test_evaluating_a_run_with_a_fixed_log_version_leaves_its_curves_alone(tmp_path: Path) -> None:
    """A study run logs to `<run>/tb` (a TensorBoardLogger with version "tb") and its report reads its curves from
    there, the last value at a step winning. `lafa test/validate --ckpt_path` on such a checkpoint used to log into
    that same folder; it now logs to a new version beside it, and `--trainer.logger ...` given by the user wins."""
    tb_logger = {"class_path": "lightning.pytorch.loggers.TensorBoardLogger",
                 "init_args": {"save_dir": str(tmp_path), "name": "", "version": "tb"}}
    config = {
        "model": {"class_path": "tests.cli_fixtures.LineModel"},
        "data": {"class_path": "tests.cli_fixtures.LineData"},
        "trainer": {"max_steps": 10, "accelerator": "cpu", "default_root_dir": str(tmp_path), "logger": tb_logger,
                    "log_every_n_steps": 1, "enable_progress_bar": False,
                    "callbacks": [{"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                                   "init_args": {"dirpath": str(tmp_path / "ckpt"), "save_last": True}}]},
    }
    (tmp_path / "fit.yaml").write_text(yaml.safe_dump(config))
    assert _run(["fit", "--config", str(tmp_path / "fit.yaml")], cwd=tmp_path).returncode == 0
    before = {p.name: p.stat().st_size for p in (tmp_path / "tb").iterdir()}

    proc = _run(["test", "--ckpt_path", str(tmp_path / "ckpt" / "last.ckpt")], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert {p.name: p.stat().st_size for p in (tmp_path / "tb").iterdir()} == before  # the run's curves untouched
    events = list((tmp_path / "version_0").glob("events.out.tfevents.*"))
    assert len(events) == 1 and b"test/mse" in events[0].read_bytes()

    argv = with_checkpoint_config(["test", "--ckpt_path", str(tmp_path / "ckpt" / "last.ckpt"),
                                   "--trainer.logger", "false"])
    assert yaml.safe_load(argv[2])["trainer"]["logger"]["init_args"]["version"] == "tb"  # as stored: user's wins
