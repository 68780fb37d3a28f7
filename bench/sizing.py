"""Sizing a benchmark to the machine it runs on (issue 25): memory checked before each case, a case that
cannot fit skipped and reported with why, the run's length said up front, a worker that dies reported as a
failed case with its exit signal instead of a BrokenPipeError traceback.

Memory model: the resident memory a VAE call adds grows linearly with the latent frames it holds at once
(frames x batch; lafa's chunked inference holds at most one window of frames). The bytes per frame start from
a measured figure (below) and are raised by every case's measured peak (VmHWM, reset per call through
/proc/self/clear_refs where Linux allows), so a small case run first sizes the larger ones.
"""

from __future__ import annotations

import math
import signal
from dataclasses import dataclass, field
from pathlib import Path

GIB = 2**30
# Measured (issue 25): the reference's 30 s x batch 4 whole-clip case held 16 GB resident when the kernel killed
# it: 16e9 / (646 frames x 4) = 6.2 MB per latent frame of batch (the SAO VAE's full-rate stage: ~6 live float32
# activations of 128 channels x 2048 samples per frame). Used for every side until a case has been measured.
BYTES_PER_FRAME = 6.2e6
MARGIN = 1.25  # the estimate is multiplied by this before it is compared with the memory available
RESERVE = 0.5 * GIB  # left free for the other process and the system
# Seconds of wall time per latent frame of batch for one encode or decode call at 2 threads (docs/benchmarks.md,
# inference matrix with Winograd, 10 s cases: lafa 6.93 / 7.89 s, reference 18.0 / 21.75 s for 215 frames);
# the reference's batch cost grows faster than linearly, so this is a lower bound for batch > 1.
SECONDS_PER_FRAME = {"lafa": 0.035, "lafa_whole": 0.035, "reference": 0.093}


def _meminfo_available(path: str = "/proc/meminfo") -> int | None:
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _cgroup_available(root: str = "/sys/fs/cgroup") -> int | None:
    """memory.max - memory.current of this process's cgroup v2 (a container's limit), None without a limit."""
    try:
        limit = Path(root, "memory.max").read_text().strip()
        if limit == "max":
            return None
        return int(limit) - int(Path(root, "memory.current").read_text())
    except (OSError, ValueError):
        return None


def available_memory(override_gib: float | None = None) -> int:
    """Bytes this run may still use: the smaller of the kernel's MemAvailable and the cgroup's headroom;
    override_gib (the bench's --memory-gib, or a test) replaces both."""
    if override_gib is not None:
        return int(override_gib * GIB)
    figures = [f for f in (_meminfo_available(), _cgroup_available()) if f is not None]
    return min(figures) if figures else 2**62


def peak_reset() -> bool:
    """Reset this process's peak resident set (VmHWM) to its current size; False where Linux refuses."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def resident() -> tuple[int, int]:
    """(current resident bytes VmRSS, peak VmHWM) of this process; (0, 0) where /proc is missing."""
    rss = hwm = 0
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) * 1024
            elif line.startswith("VmHWM:"):
                hwm = int(line.split()[1]) * 1024
    except OSError:
        pass
    return rss, hwm


@dataclass
class MemoryModel:
    """Bytes per latent frame of batch of each side, from the default and every measured case."""

    bytes_per_frame: dict[str, float] = field(default_factory=dict)
    measured: dict[str, list] = field(default_factory=dict)

    def per_frame(self, side: str) -> float:
        return self.bytes_per_frame.get(side, BYTES_PER_FRAME)

    def observe(self, side: str, frames_held: int, added_bytes: int) -> None:
        """A call that held `frames_held` frames x batch added `added_bytes` to the peak resident set. The
        first measurement replaces the default; later ones can only raise it (the largest cost seen)."""
        if frames_held <= 0 or added_bytes <= 0:
            return
        rate = added_bytes / frames_held
        first = side not in self.measured
        self.measured.setdefault(side, []).append({"frames": frames_held, "added_bytes": added_bytes})
        self.bytes_per_frame[side] = rate if first else max(rate, self.per_frame(side))

    def need(self, side: str, frames_held: int) -> float:
        return MARGIN * frames_held * self.per_frame(side)


def frames_held(side: str, frames: int, batch: int, chunk_frames: int | None, overlap_frames: int = 0) -> int:
    """Latent frames x batch one call of `side` holds at once: lafa's chunked path one window, the rest all."""
    if side == "lafa" and chunk_frames and frames > chunk_frames:
        return batch * (chunk_frames + overlap_frames)
    return batch * frames


def check_case(needs: dict[str, float], available: int, reserve: float = RESERVE) -> str | None:
    """None when every side's estimated need fits the memory available; else the reason it is skipped."""
    worst = max(needs, key=needs.get)
    if needs[worst] + reserve <= available:
        return None
    parts = ", ".join(f"{side} ~{need / GIB:.1f} GiB" for side, need in needs.items())
    return (f"needs {parts} (estimate x{MARGIN} margin, + {reserve / GIB:.1f} GiB reserve); "
            f"{available / GIB:.1f} GiB available")


def estimate_seconds(cases: list[tuple[float, int, int]], sides: dict, rounds: int, threads: int) -> float:
    """Wall seconds of the timed matrix: every case x encode/decode x its sides x rounds, at the measured
    seconds per frame scaled from 2 threads. sides: (seconds, batch, frames) case -> its side names."""
    total = 0.0
    for case in cases:
        _, batch, frames = case
        for side in sides(case):
            total += 2 * rounds * SECONDS_PER_FRAME[side] * frames * batch * 2 / max(1, min(threads, 2))
    return total


def describe_exit(returncode: int | None) -> str:
    """'killed by SIGKILL (...)' / 'exited with code 3' / 'still running' from a subprocess return code."""
    if returncode is None:
        return "still running"
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        hint = " (the kernel's out-of-memory killer sends SIGKILL: see `dmesg`)" if name == "SIGKILL" else ""
        return f"killed by {name}{hint}"
    return f"exited with code {returncode}"


class WorkerDied(RuntimeError):
    """The reference worker ended while it had a command: its exit code or signal is in the message."""

    def __init__(self, command: str, returncode: int | None) -> None:
        self.command, self.returncode = command, returncode
        self.signal = signal.Signals(-returncode).name if returncode is not None and returncode < 0 and \
            -returncode in {s.value for s in signal.Signals} else None
        super().__init__(f"reference worker {describe_exit(returncode)} during {command}")


def minutes(seconds: float) -> str:
    return f"{math.ceil(seconds / 60)} min" if seconds >= 60 else f"{seconds:.0f} s"
