"""Pre-encoded latent shards: audio shards -> any Autoencoder's latents (.npy) + the sample's JSON.

Each audio chunk is encoded whole (zero padded to a multiple of the downsampling ratio), so the
LatentDataModule can crop any window; `latent_frames` = ceil(num_samples / ratio) frames cover real audio.
One output shard per input shard, same name, written atomically; finished shards are skipped on a re-run,
after their fingerprint (`encode_fingerprint`: the autoencoder's weights and settings, lafa's version) is
checked. One writer per folder (lafa.output_lock); audio is decoded in `workers` processes that die with their
parent. The fingerprint records, the refusals and the throughput report: docs/data.md.
"""

from __future__ import annotations

import errno
import io
import json
import multiprocessing
import os
import resource
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import soundfile as sf
import torch
from tqdm import tqdm
from webdataset.tariterators import tarfile_samples

from lafa.audio import convert
from lafa.children import die_with_parent
from lafa.data.datamodule import AUDIO_KEYS, clip_lossy, member
from lafa.data.latent_corpus import (
    FINGERPRINT_MEMBER,
    EncodeFolderError,
    shard_fingerprint,
)
from lafa.data.tario import add_member, atomic_tar, remove_stale_temporaries
from lafa.fingerprint import fingerprint, read_record, weights_digest
from lafa.output_lock import acquire, output_lock

RECORD_NAME = "lafa-encode.json"  # the output folder's record: fingerprint, what made it, inputs
STALE = ".stale"  # shards of another encode moved aside by --overwrite
NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


def encode_fingerprint(autoencoder: Any, dtype: str = "float32", vae_dtype: str = "float32") -> dict:
    """What decides a latent shard's bytes: {"fingerprint": 16 hex digits, "made_by": the record it hashes}.
    Call it on the autoencoder as loaded (before `.to(device)` or inference folding: the weights as stored)."""
    made_by = {"kind": "lafa encode", "autoencoder_weights": weights_digest(autoencoder),
               "autoencoder_class": type(autoencoder).__name__,
               "sample_rate": int(autoencoder.sample_rate), "io_channels": int(autoencoder.io_channels),
               "downsampling_ratio": int(autoencoder.downsampling_ratio), "dtype": dtype, "vae_dtype": vae_dtype}
    return {"fingerprint": fingerprint(made_by), "made_by": made_by}


def _audio(sample: dict, sample_rate: int, channels: int) -> torch.Tensor:
    ext = member(sample, AUDIO_KEYS, f"audio ({AUDIO_KEYS})")
    try:
        with sf.SoundFile(io.BytesIO(sample[ext])) as f:
            data, sr = clip_lossy(f, f.read(dtype="float32", always_2d=True)), f.samplerate
    except sf.LibsndfileError as e:
        raise ValueError(f"cannot decode {sample['__key__']}.{ext} in {sample.get('__url__')}: {e}") from e
    return convert(torch.from_numpy(np.ascontiguousarray(data.T)), sr, sample_rate, channels)


def _decode_worker_init(parent_pid: int) -> None:
    die_with_parent(parent_pid)  # a killed `lafa encode` leaves no decode worker running
    torch.set_num_threads(1)  # one core per decode worker; the encoder keeps the main process's threads


def _decode(sample: dict, sample_rate: int, channels: int) -> np.ndarray:
    """In a worker: one sample's bytes -> (C, S) float32 at the autoencoder's rate and channel count."""
    return _audio(sample, sample_rate, channels).numpy()


def _decoded(samples: Iterator[dict], sr: int, channels: int, pool, ahead: int) -> Iterator[tuple[dict, torch.Tensor]]:
    """(sample, audio (C, S)) in shard order, decoded by `pool` up to `ahead` samples in advance (bounded memory);
    in this process when pool is None."""
    if pool is None:
        for sample in samples:
            yield sample, _audio(sample, sr, channels)
        return
    pending: deque = deque()
    for sample in samples:
        pending.append((sample, pool.apply_async(_decode, (sample, sr, channels))))
        if len(pending) >= ahead:
            s, result = pending.popleft()
            yield s, torch.from_numpy(result.get())
    while pending:
        s, result = pending.popleft()
        yield s, torch.from_numpy(result.get())


@torch.no_grad()
def _encode(autoencoder: Any, audios: list[torch.Tensor], device: str | torch.device) -> list[np.ndarray]:
    """Equal-length (C, S) clips -> their (latent_dim, S // ratio) latents, in one batch."""
    batch = torch.stack(audios).to(device)  # (B, C, S)
    return [z.float().cpu().numpy() for z in autoencoder.encode(batch)]  # B x (latent_dim, N)


@dataclass
class EncodeStats:
    """What a corpus encode did and how fast: audio seconds over wall and CPU time (main + decode workers)."""

    outputs: list[Path] = field(default_factory=list)
    shards_encoded: int = 0
    shards_skipped: int = 0
    samples: int = 0
    audio_seconds: float = 0.0
    wall_seconds: float = 0.0
    cpu_seconds: float = 0.0
    moved: list[str] = field(default_factory=list)  # another encode's shards moved to out/.stale (--overwrite)

    @property
    def audio_hours_per_cpu_hour(self) -> float:
        return self.audio_seconds / self.cpu_seconds if self.cpu_seconds else float("nan")

    @property
    def audio_hours_per_second(self) -> float:
        return self.audio_seconds / 3600 / self.wall_seconds if self.wall_seconds else float("nan")

    def summary(self) -> str:
        return (f"encoded {self.samples} clips, {self.audio_seconds / 3600:.4f} audio-hours in {self.shards_encoded} "
                f"shards ({self.shards_skipped} already done) in {self.wall_seconds:.1f} s wall, "
                f"{self.cpu_seconds:.1f} CPU-s: {self.audio_hours_per_second * 3600:.2f} audio-s/s, "
                f"{self.audio_hours_per_cpu_hour:.2f} audio-hours per CPU-hour")


def encode_shard(autoencoder: Any, url: str, out_path: str | Path, batch_size: int = 8,
                 device: str | torch.device = "cpu", dtype: str = "float32", source: str = "", pool=None,
                 ahead: int = 16, progress: _Progress | None = None,
                 stamp: dict | None = None) -> tuple[int, float]:
    """Encode one audio shard into one latent shard; returns (samples written, audio seconds). `stamp` (the
    shard's fingerprint record: encode_fingerprint + its input) is written as the first member."""
    ratio = int(autoencoder.downsampling_ratio)
    sr, channels = int(autoencoder.sample_rate), int(autoencoder.io_channels)
    written, seconds = 0, 0.0
    pending: list[tuple[dict, torch.Tensor, int]] = []

    def flush(tar) -> None:
        nonlocal written, seconds
        latents = _encode(autoencoder, [a for _, a, _ in pending], device)
        for (sample, _, length), z in zip(pending, latents, strict=True):
            meta = json.loads(sample["json"])
            meta.update(latent_frames=-(-length // ratio), latent_dim=int(z.shape[0]), downsampling_ratio=ratio,
                        latent_rate=sr / ratio, sample_rate=sr, autoencoder=source)
            if stamp is not None:
                meta["autoencoder_fingerprint"] = stamp["fingerprint"]
            buf = io.BytesIO()
            np.save(buf, z.astype(dtype))
            add_member(tar, f"{sample['__key__']}.npy", buf.getvalue())
            add_member(tar, f"{sample['__key__']}.json", json.dumps(meta, sort_keys=True, ensure_ascii=False).encode())
            written += 1
            seconds += length / sr
        if progress is not None:
            progress.update(sum(length for _, _, length in pending) / sr)
        pending.clear()

    with atomic_tar(out_path) as tar:
        if stamp is not None:
            add_member(tar, FINGERPRINT_MEMBER, json.dumps(stamp, sort_keys=True).encode())
        for sample, audio in _decoded(tarfile_samples([{"url": url}]), sr, channels, pool, ahead):  # audio (C, S)
            length = audio.shape[-1]
            padded = -(-length // ratio) * ratio
            audio = torch.nn.functional.pad(audio, (0, padded - length))  # (C, N * ratio)
            if pending and (len(pending) == batch_size or pending[0][1].shape[-1] != padded):
                flush(tar)
            pending.append((sample, audio, length))
        if pending:
            flush(tar)
    return written, seconds


class _Progress:
    """A tqdm bar in audio seconds with the audio-hours/s rate since the start."""

    def __init__(self) -> None:
        self.bar = tqdm(desc="encode", unit=" audio-s", unit_scale=True, disable=None)
        self.t0, self.seconds = time.perf_counter(), 0.0

    def update(self, seconds: float) -> None:
        self.seconds += seconds
        self.bar.update(seconds)
        self.bar.set_postfix_str(f"{self.seconds / 3600 / max(time.perf_counter() - self.t0, 1e-9):.4f} audio-h/s")

    def close(self) -> None:
        self.bar.close()


def _out_name(url: str) -> str:
    name = Path(url.split()[-1] if url.startswith("pipe:") else url).name
    return name if name.endswith(".tar") else f"{name}.tar"


def _input_bytes(url: str) -> int | None:
    return None if url.startswith("pipe:") or "://" in url else (os.path.getsize(url) if os.path.isfile(url) else None)


def _refuse(out_dir: Path, found: str, where: str, fp: str) -> EncodeFolderError:
    return EncodeFolderError(
        f"{where}: written by another encode (fingerprint {found}), this encode's fingerprint is {fp} (other "
        f"autoencoder weights, settings or lafa version); re-encode with --overwrite (shards of the other encode "
        f"are moved to {out_dir / STALE}) or write to another --out")


def check_output_folder(out_dir: Path, made: dict, urls: list[str], overwrite: bool) -> list[str]:
    """Before anything is skipped or written: refuse (EncodeFolderError) a folder whose record or finished
    shards another encode made, or whose finished shard came from another input; with overwrite, move shards
    of another encode that this run does not rewrite to out/.stale/ and return their names."""
    fp = made["fingerprint"]
    record_path = out_dir / RECORD_NAME
    if record_path.is_file() and not overwrite:
        record = read_record(record_path)  # {} when unreadable
        found = record.get("fingerprint", "unreadable") if isinstance(record, dict) else "unreadable"
        if found != fp:
            raise _refuse(out_dir, found, str(record_path), fp)
    outputs = {_out_name(u): u for u in urls}
    moved = []
    for shard in sorted(out_dir.glob("*.tar")):
        info = shard_fingerprint(shard)
        found = info["fingerprint"] if info else "none: written before lafa recorded fingerprints"
        if found == fp:
            url = outputs.get(shard.name)
            if url is not None and not overwrite and info.get("input_bytes") not in (None, _input_bytes(url)):
                raise EncodeFolderError(
                    f"{shard}: encoded from another {info.get('input')} ({info.get('input_bytes')} bytes; {url} now "
                    f"has {_input_bytes(url)}); re-encode with --overwrite or write to another --out")
            continue
        if not overwrite:
            raise _refuse(out_dir, found, str(shard), fp)
        if shard.name not in outputs:  # another encode's shard this run does not rewrite: out of the corpus
            (out_dir / STALE).mkdir(exist_ok=True)
            os.replace(shard, out_dir / STALE / shard.name)
            moved.append(shard.name)
    return moved


def _write_record(out_dir: Path, made: dict, urls: list[str]) -> None:
    path = out_dir / RECORD_NAME
    inputs: dict = {}
    try:
        old = json.loads(path.read_text())
        if old.get("fingerprint") == made["fingerprint"]:
            inputs = old.get("inputs", {})
    except (OSError, json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        pass
    inputs.update({_out_name(u): {"input": u, "input_bytes": _input_bytes(u)} for u in urls})
    tmp = out_dir / f".{RECORD_NAME}.tmp-{os.getpid()}"
    tmp.write_text(json.dumps({**made, "inputs": dict(sorted(inputs.items()))}, indent=1, sort_keys=True))
    os.replace(tmp, path)


def _raise_for_user(exc: OSError, where: Path, done: int) -> NoReturn:
    """A full disk, a read-only or forbidden folder: one line naming the file and what to do; else `exc`."""
    if exc.errno in NO_SPACE:
        raise EncodeFolderError(f"{where}: no space left on the device ({done} finished shards are kept, no partial "
                                f"one); free space (or choose another --out) and run the same command again to "
                                f"encode the rest") from None
    if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        raise EncodeFolderError(f"{where}: cannot write here ({exc.strerror}); choose a writable --out") from None
    raise exc


def prepare_output(out_dir: str | Path, command: str = "lafa encode"):
    """Create and lock the output folder (lafa.output_lock.acquire) before anything costly (loading a model):
    a folder lafa cannot write to or that another job writes into is refused here, in one line."""
    out_dir = Path(out_dir)
    try:
        return acquire(out_dir, command)
    except OSError as exc:
        _raise_for_user(exc, out_dir, 0)


def encode_corpus(autoencoder: Any, urls: list[str], out_dir: str | Path, batch_size: int = 8,
                  device: str | torch.device = "cpu", dtype: str = "float32", source: str = "",
                  overwrite: bool = False, workers: int = 0, made: dict | None = None,
                  locked: bool = False) -> EncodeStats:
    """Encode every audio shard to `out_dir/<same name>` (shards already there are kept unless overwrite, after
    their fingerprint is checked), with `workers` decode processes (0: decode in this process); progress in audio
    seconds and audio-hours/s. `made`: encode_fingerprint(autoencoder, dtype) as loaded (computed here if None);
    `locked`: the caller holds out_dir's lock (prepare_output)."""
    out_dir = Path(out_dir)
    made = made or encode_fingerprint(autoencoder, dtype)
    if locked:
        return _encode_corpus(autoencoder, urls, out_dir, batch_size, device, dtype, source, overwrite, workers, made)
    try:
        with output_lock(out_dir, "lafa encode"):
            return _encode_corpus(autoencoder, urls, out_dir, batch_size, device, dtype, source, overwrite, workers,
                                  made)
    except OSError as exc:
        _raise_for_user(exc, out_dir, 0)


def _encode_corpus(autoencoder: Any, urls: list[str], out_dir: Path, batch_size: int, device, dtype: str,
                   source: str, overwrite: bool, workers: int, made: dict) -> EncodeStats:
    remove_stale_temporaries(out_dir)
    stats = EncodeStats()
    stats.moved = check_output_folder(out_dir, made, urls, overwrite)
    _write_record(out_dir, made, urls)
    t0, cpu0 = time.perf_counter(), time.process_time()
    children0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    pool = (multiprocessing.get_context("fork").Pool(workers, initializer=_decode_worker_init,
                                                      initargs=(os.getpid(),))
            if workers > 0 else None)
    progress = _Progress()
    out = out_dir
    try:
        for url in urls:
            out = out_dir / _out_name(url)
            if overwrite or not out.is_file():
                stamp = {**made, "input": url, "input_bytes": _input_bytes(url)}
                n, seconds = encode_shard(autoencoder, url, out, batch_size, device, dtype, source, pool,
                                          ahead=max(2 * batch_size, 4 * workers), progress=progress, stamp=stamp)
                stats.shards_encoded += 1
                stats.samples += n
                stats.audio_seconds += seconds
            else:
                stats.shards_skipped += 1
            stats.outputs.append(out)
    except OSError as exc:
        _raise_for_user(exc, out, stats.shards_encoded + stats.shards_skipped)
    finally:
        progress.close()
        if pool is not None:
            pool.close()
            pool.join()
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    stats.wall_seconds = time.perf_counter() - t0
    stats.cpu_seconds = (time.process_time() - cpu0 + children.ru_utime + children.ru_stime
                         - children0.ru_utime - children0.ru_stime)
    return stats
