"""Worker processes that die with their parent (decode workers of `lafa encode`, data_prep's jobs).

A multiprocessing worker whose parent is killed (`kill -9`, the OOM killer, a cluster's preemption) is left
running, reparented to init, decoding for nobody and holding memory. `die_with_parent(parent_pid)` in a
worker's initializer asks Linux to SIGKILL the worker when its parent dies (`prctl(PR_SET_PDEATHSIG)`, via
ctypes), and starts a daemon thread that polls the parent pid once a second as a fallback (other systems, or a
parent thread that exits: the death signal follows the thread that forked the worker).
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time

PR_SET_PDEATHSIG = 1
POLL_SECONDS = 1.0


def prctl_death_signal(sig: int) -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)  # the running process's symbols: libc's prctl
        return libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _watch(parent_pid: int) -> None:
    while True:
        if os.getppid() != parent_pid:
            os._exit(1)
        time.sleep(POLL_SECONDS)


def die_with_parent(parent_pid: int) -> None:
    """Call in a child (a Pool initializer): the child exits as soon as `parent_pid` is gone."""
    prctl_death_signal(signal.SIGKILL)
    if os.getppid() != parent_pid:  # the parent died before the death signal was armed
        os._exit(1)
    threading.Thread(target=_watch, args=(parent_pid,), name="die-with-parent", daemon=True).start()
