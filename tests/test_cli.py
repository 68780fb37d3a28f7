"""The CLI stores the merged config in checkpoints, and `lafa test --ckpt_path X` runs from it alone."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from lafa.checkpoints import CHECKPOINT_CONFIG_KEY
from lafa.cli import main, with_checkpoint_config

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
