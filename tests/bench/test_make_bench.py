"""`make bench VENV=<a venv elsewhere>` (a clone reusing another checkout's venv): every step runs that venv's
python, the reference's installer included (it used to fall back to ./.venv/bin/python, absent in such a clone,
and stop the run after the other benchmarks had taken their time)."""

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs make")


def test_make_bench_runs_the_reference_installer_with_the_given_venv(tmp_path):
    bin_dir = tmp_path / "venv" / "bin"
    bin_dir.mkdir(parents=True)
    log = tmp_path / "calls.log"
    python = bin_dir / "python"  # a stand-in that says the reference imports (setup_reference.sh's check)
    python.write_text(f'#!/bin/sh\necho "$@" >> {log}\nexit 0\n')
    python.chmod(0o755)
    plan = subprocess.run(["make", "-n", "bench", f"VENV={tmp_path / 'venv'}"], cwd=ROOT, capture_output=True,
                          text=True, check=True).stdout.splitlines()
    steps = [line for line in plan if "bench/" in line]
    assert steps and all(str(python) in line for line in steps), steps
    installer = next(line for line in steps if "setup_reference.sh" in line)
    done = subprocess.run(["bash", "-c", installer], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "reference already installed" in done.stdout
    assert "import stable_audio_tools" in log.read_text()  # the check ran on the given venv's python
