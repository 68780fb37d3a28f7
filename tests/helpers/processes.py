"""Watching real subprocesses in fault tests: the one line a user sees, a child's children, whether a pid lives."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path


def one_line(stderr: str) -> str:
    """The only non-blank line of stderr (fails the test on more lines or a traceback)."""
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


def wait_for(predicate: Callable[[], bool], seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def children(pid: int) -> list[int]:
    """The pids whose parent is `pid` (any of its threads), from /proc."""
    kids = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        kids += [int(c) for c in (task / "children").read_text().split()]
    return kids


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has exited


def survivors(pids: list[int], seconds: float = 10) -> list[int]:
    """The pids still alive after waiting up to `seconds` for all of them to exit."""
    deadline = time.monotonic() + seconds
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    return [p for p in pids if alive(p)]


def on_tmpfs(folder: Path, options: str) -> list[str]:
    """A command prefix that runs the command with a tmpfs (`mount -o options`) on `folder`, in a user namespace
    (`unshare -rm`): a full or read-only disk without root."""
    return ["unshare", "-rm", "sh", "-c", f'mount -t tmpfs -o {options} tmpfs "{folder}" && exec "$0" "$@"']


def ctrl_c_default() -> None:
    """A Popen `preexec_fn` for tests that press Ctrl-C: SIGINT back to its default in the child. A suite started
    as a background job of a non-interactive shell (`nohup make test &`) inherits SIGINT ignored, and Python
    then installs no KeyboardInterrupt handler, so the child would never see the Ctrl-C the test sends."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)
