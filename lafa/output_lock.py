"""One writer per output folder: `with output_lock(folder, "lafa encode"):` around any job that writes there.

The lock is the file `folder/.lafa.lock`, held with an exclusive `flock` for the job's life (forked workers
inherit it) and holding the holder's pid, host, start time and command. A second job into the same folder
refuses with one line naming the holder (`OutputLockedError`: exit 2). The kernel releases an `flock` when its
holder dies (even by `kill -9`), so a lock file whose lock is free is stale: the next job takes it over with a
warning naming the dead holder (docs/faults.md).
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from lafa.errors import LafaUserError

LOCK_NAME = ".lafa.lock"


class OutputLockedError(LafaUserError):
    """Another live job writes into the folder."""


def _holder_text(info: dict) -> str:
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info["started"])) if "started" in info else "?"
    return (f"pid {info.get('pid', '?')} on {info.get('host', '?')} ({info.get('command', '?')}, "
            f"since {since})")


def _read(fd: int) -> dict:
    raw = os.pread(fd, os.fstat(fd).st_size, 0)
    try:
        info = json.loads(raw.decode() or "null")
    except (UnicodeDecodeError, json.JSONDecodeError):
        return {"damaged": raw[:80].decode(errors="replace")}
    return info if isinstance(info, dict) else {}


def _is_at(fd: int, path: Path) -> bool:
    """Whether `fd` is still the file at `path` (a releasing holder unlinks it)."""
    try:
        return os.fstat(fd).st_ino == os.stat(path).st_ino
    except FileNotFoundError:
        return False


class OutputLock:
    """A held lock on a folder; `release()` (or leaving `output_lock`'s block) frees it."""

    def __init__(self, folder: Path, fd: int, path: Path) -> None:
        self.folder, self.fd, self.path = folder, fd, path

    def release(self) -> None:
        if self.fd < 0:
            return
        try:  # unlink first, while still holding it: a waiting opener then sees another inode and retries
            if _is_at(self.fd, self.path):
                self.path.unlink(missing_ok=True)
        finally:
            os.close(self.fd)
            self.fd = -1


def acquire(folder: str | Path, command: str) -> OutputLock:
    """Lock `folder` (created if missing) for this process or raise OutputLockedError naming the holder (its
message is `<folder>: <what>; <fix>`: the command prints it after `<prog>: error: `)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            info = _read(fd)
            os.close(fd)
            raise OutputLockedError(
                f"{folder}: another job writes into this folder: {_holder_text(info)}; wait for "
                f"it to finish, stop it, or write to another folder (the lock is {path})") from None
        except BaseException:
            os.close(fd)
            raise
        if _is_at(fd, path):  # the holder may have unlinked it between our open and flock
            break
        os.close(fd)
    old = _read(fd)
    if old:
        print(f"{command}: warning: {folder}: taking over a stale lock left by {_holder_text(old)} (no longer "
              f"running)", file=sys.stderr)
    info = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(), "command": command}
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(info).encode(), 0)
    return OutputLock(folder, fd, path)


@contextmanager
def output_lock(folder: str | Path, command: str) -> Iterator[OutputLock]:
    """`acquire` for the block; released when it ends (a `kill -9` releases it too: the kernel drops flocks)."""
    lock = acquire(folder, command)
    try:
        yield lock
    finally:
        lock.release()
