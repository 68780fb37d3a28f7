"""Tar I/O: deterministic, atomic writing (data_prep's audio shards, the latent-shard writer) and reading that
reports damaged shards instead of crashing (the DataModules' streams)."""

from __future__ import annotations

import io
import itertools
import os
import tarfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from webdataset.gopen import gopen
from webdataset.tariterators import base_plus_ext


def add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    """Add bytes with a fixed owner, mode and mtime, so identical inputs give identical shard bytes."""
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode, info.uid, info.gid, info.uname, info.gname = len(data), 0, 0o644, 0, 0, "", ""
    tar.addfile(info, io.BytesIO(data))


@contextmanager
def atomic_tar(final: str | Path) -> Iterator[tarfile.TarFile]:
    """Write `.{name}.tmp-{pid}` beside `final` and rename it when the block ends without error; an
    interrupted write leaves no file under the final name (and removes its temporary unless killed)."""
    final = Path(final)
    tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
    try:
        with tarfile.open(tmp, "w", format=tarfile.USTAR_FORMAT) as tar:
            yield tar
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, final)


def remove_stale_temporaries(folder: str | Path) -> None:
    """Temporaries left by a killed writer (SIGKILL skips the cleanup above)."""
    for stale in Path(folder).glob(".*.tar.tmp-*"):
        stale.unlink()


class ShardError(Exception):
    """A shard that cannot be opened or read to its end (0-byte, truncated, not a tar, a failing `pipe:`)."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"{url}: {reason}")
        self.url, self.reason = url, reason


def read_shard(url: str) -> Iterator[dict]:
    """The samples {__key__, __url__, ext: bytes} of one shard (local path or `pipe:` command), streamed, with
    WebDataset's key rule (a member's name up to the first dot of its last component). A damaged shard raises
    ShardError after yielding every sample it holds whole: the sample being read when the damage shows is
    dropped, and a shard cut at a member boundary (no end-of-archive block, where tarfile stops silently) is
    reported too."""
    try:
        stream = gopen(url)
    except Exception as exn:  # noqa: BLE001 - any opening failure is a damaged shard to report
        raise ShardError(url, f"cannot open ({exn})") from None
    sample: dict | None = None
    done = 0
    try:
        tar = tarfile.open(fileobj=stream, mode="r|*")
        for info in tar:
            key, ext = base_plus_ext(info.name)
            if not info.isreg() or key is None or info.name.startswith("__"):
                continue
            data = tar.extractfile(info).read()
            if sample is not None and key != sample["__key__"]:
                yield sample
                sample, done = None, done + 1
            if sample is None:
                sample = {"__key__": key, "__url__": url}
            sample[ext.lower()] = data
        if tar.fileobj.pos < tar.offset + tarfile.BLOCKSIZE:  # EOF where the end-of-archive block should be
            raise tarfile.ReadError("truncated: no end-of-archive block")
    except (tarfile.TarError, OSError, EOFError, ValueError) as exn:
        raise ShardError(url, f"{type(exn).__name__}: {exn or 'empty'} (after {done} whole samples)") from None
    finally:
        try:
            stream.close()
        except Exception:  # noqa: BLE001 - a failing pipe's exit status; the read error already names it
            pass
    if sample is not None:
        yield sample


def scan_shard(path: str | Path) -> tuple[int, str | None]:
    """Sample count of a local shard from its headers alone (tarfile seeks over the data), and what is wrong
    with it (None when whole). A damaged shard counts the whole samples read_shard will yield from it."""
    plain = str(path).endswith(".tar")
    members, problem = [], None
    try:
        with tarfile.open(path, "r:" if plain else "r:*") as tar:
            try:
                for m in tar:
                    if m.isreg() and not m.name.startswith("__"):
                        members.append(m)
            except (tarfile.TarError, OSError, EOFError) as exn:
                problem = f"{type(exn).__name__}: {exn}"
            if problem is None and plain:  # the end-of-archive block must be there, and every member before it
                size = os.path.getsize(path)
                tar.fileobj.seek(tar.offset)
                if tar.fileobj.read(tarfile.BLOCKSIZE) != bytes(tarfile.BLOCKSIZE) or any(
                        m.offset_data + m.size > size for m in members):
                    problem = "truncated: no end-of-archive block"
    except (tarfile.TarError, OSError, EOFError) as exn:
        return 0, f"{type(exn).__name__}: {exn}"
    keys = [k for k in (base_plus_ext(m.name)[0] for m in members) if k is not None]
    count = len(list(itertools.groupby(keys)))
    # read_shard drops the sample being read at the damage: it may miss members
    return (count, None) if problem is None else (max(count - 1, 0), problem)
