"""lafa.output_lock: one writer per folder, a stale lock taken over, the lock gone when released."""

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from lafa.errors import LafaUserError
from lafa.output_lock import LOCK_NAME, OutputLockedError, acquire, output_lock

ROOT = Path(__file__).resolve().parents[2]


def test_a_second_holder_is_refused_naming_the_first(tmp_path):
    with output_lock(tmp_path / "out", "lafa study") as lock:
        info = json.loads((tmp_path / "out" / LOCK_NAME).read_text())
        assert info["pid"] == os.getpid() and info["host"] == socket.gethostname() and info["command"] == "lafa study"
        with pytest.raises(OutputLockedError) as err:  # also from this process: flock is per open file
            acquire(tmp_path / "out", "lafa study")
        assert isinstance(err.value, LafaUserError)
        assert str(err.value).startswith(f"{tmp_path / 'out'}: another job writes into this folder: pid {os.getpid()} "
                                         f"on {socket.gethostname()} (lafa study, since ")
        assert lock.fd >= 0
    assert not (tmp_path / "out" / LOCK_NAME).exists()
    acquire(tmp_path / "out", "again").release()


def test_a_killed_holders_lock_is_taken_over_with_a_warning(tmp_path, capsys):
    code = ("import os, signal, sys; from lafa.output_lock import acquire; acquire(sys.argv[1], 'lafa study'); "
            "os.kill(os.getpid(), signal.SIGKILL)")
    dead = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert dead.wait() == -signal.SIGKILL
    with output_lock(tmp_path, "lafa study"):
        err = capsys.readouterr().err
        assert err.startswith(f"lafa study: warning: {tmp_path}: taking over a stale lock left by pid {dead.pid} on ")
        assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == os.getpid()
