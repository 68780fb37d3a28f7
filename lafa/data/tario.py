"""Deterministic, atomic tar writing shared by data_prep's audio shards and the latent-shard writer."""

from __future__ import annotations

import io
import os
import tarfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


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
