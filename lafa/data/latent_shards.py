"""Pre-encoded latent shards: audio shards -> any Autoencoder's latents (.npy) + the sample's JSON.

Each audio chunk is encoded whole (zero padded to a multiple of the downsampling ratio), so the
LatentDataModule can crop any window; `latent_frames` = ceil(num_samples / ratio) frames cover real audio.
One output shard per input shard, same name, written atomically; finished shards are skipped on a re-run.

Throughput: audio decoding (soundfile + resampling) runs in `workers` processes, a bounded number of samples
ahead of the encoder; equal-length clips are encoded `batch_size` at a time. `encode_corpus` reports audio
seconds, wall and CPU time (this process and the decode workers) and audio-hours per CPU-hour.
"""

from __future__ import annotations

import io
import json
import multiprocessing
import resource
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import torch
from tqdm import tqdm
from webdataset.tariterators import tarfile_samples

from lafa.audio import convert
from lafa.data.datamodule import AUDIO_KEYS, clip_lossy
from lafa.data.tario import add_member, atomic_tar, remove_stale_temporaries


def _audio(sample: dict, sample_rate: int, channels: int) -> torch.Tensor:
    ext = next((k for k in AUDIO_KEYS if k in sample), None)
    if ext is None:
        raise KeyError(f"sample {sample['__key__']} in {sample.get('__url__')} has no audio ({AUDIO_KEYS})")
    try:
        with sf.SoundFile(io.BytesIO(sample[ext])) as f:
            data, sr = clip_lossy(f, f.read(dtype="float32", always_2d=True)), f.samplerate
    except sf.LibsndfileError as e:
        raise ValueError(f"cannot decode {sample['__key__']}.{ext} in {sample.get('__url__')}: {e}") from e
    return convert(torch.from_numpy(np.ascontiguousarray(data.T)), sr, sample_rate, channels)


def _decode_worker_init() -> None:
    torch.set_num_threads(1)  # one core per decode worker; the encoder keeps the main process's threads


def _decode(job: tuple[dict, int, int]) -> np.ndarray:
    """In a worker: one sample's bytes -> (C, S) float32 at the autoencoder's rate and channel count."""
    sample, sample_rate, channels = job
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
        pending.append((sample, pool.apply_async(_decode, ((sample, sr, channels),))))
        if len(pending) >= ahead:
            s, result = pending.popleft()
            yield s, torch.from_numpy(result.get())
    while pending:
        s, result = pending.popleft()
        yield s, torch.from_numpy(result.get())


@torch.no_grad()
def _encode(autoencoder: Any, audios: list[torch.Tensor], device: torch.device) -> list[np.ndarray]:
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
                 ahead: int = 16, progress: _Progress | None = None) -> tuple[int, float]:
    """Encode one audio shard into one latent shard; returns (samples written, audio seconds)."""
    ratio = int(autoencoder.downsampling_ratio)
    sr, channels = int(autoencoder.sample_rate), int(autoencoder.io_channels)
    device = torch.device(device)
    written, seconds = 0, 0.0
    pending: list[tuple[dict, torch.Tensor, int]] = []

    def flush(tar) -> None:
        nonlocal written, seconds
        latents = _encode(autoencoder, [a for _, a, _ in pending], device)
        for (sample, _, length), z in zip(pending, latents, strict=True):
            meta = json.loads(sample["json"])
            meta.update(latent_frames=-(-length // ratio), latent_dim=int(z.shape[0]), downsampling_ratio=ratio,
                        latent_rate=sr / ratio, sample_rate=sr, autoencoder=source)
            buf = io.BytesIO()
            np.save(buf, z.astype(dtype))
            add_member(tar, f"{sample['__key__']}.npy", buf.getvalue())
            add_member(tar, f"{sample['__key__']}.json", json.dumps(meta, sort_keys=True, ensure_ascii=False).encode())
            written += 1
            seconds += length / sr
        if progress is not None:
            progress.update(sum(length for _, _, length in pending) / sr)
        pending.clear()

    samples = (s for s in tarfile_samples([{"url": url}]))
    with atomic_tar(out_path) as tar:
        for sample, audio in _decoded(samples, sr, channels, pool, ahead):  # audio (C, S)
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


def encode_corpus(autoencoder: Any, urls: list[str], out_dir: str | Path, batch_size: int = 8,
                  device: str | torch.device = "cpu", dtype: str = "float32", source: str = "",
                  overwrite: bool = False, workers: int = 0) -> EncodeStats:
    """Encode every audio shard to `out_dir/<same name>` (shards already there are kept unless overwrite), with
    `workers` decode processes (0: decode in this process); progress in audio seconds and audio-hours/s."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(out_dir)
    stats = EncodeStats()
    t0, cpu0 = time.perf_counter(), time.process_time()
    children0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    pool = (multiprocessing.get_context("fork").Pool(workers, initializer=_decode_worker_init)
            if workers > 0 else None)
    progress = _Progress()
    try:
        for url in urls:
            out = out_dir / _out_name(url)
            if overwrite or not out.is_file():
                n, seconds = encode_shard(autoencoder, url, out, batch_size, device, dtype, source, pool,
                                          ahead=max(2 * batch_size, 4 * workers), progress=progress)
                stats.shards_encoded += 1
                stats.samples += n
                stats.audio_seconds += seconds
            else:
                stats.shards_skipped += 1
            stats.outputs.append(out)
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


def encode_shards(autoencoder: Any, urls: list[str], out_dir: str | Path, batch_size: int = 8,
                  device: str | torch.device = "cpu", dtype: str = "float32", source: str = "",
                  overwrite: bool = False, workers: int = 0) -> list[Path]:
    """`encode_corpus`, returning only the output shard paths."""
    return encode_corpus(autoencoder, urls, out_dir, batch_size, device, dtype, source, overwrite, workers).outputs
