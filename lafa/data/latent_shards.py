"""Pre-encoded latent shards: audio shards -> any Autoencoder's latents (.npy) + the sample's JSON.

Each audio chunk is encoded whole (zero padded to a multiple of the downsampling ratio), so the
LatentDataModule can crop any window; `latent_frames` = ceil(num_samples / ratio) frames cover real audio.
One output shard per input shard, same name, written atomically; finished shards are skipped on a re-run.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import torch
from tqdm import tqdm
from webdataset.tariterators import tarfile_samples

from lafa.audio import resample, to_channels
from lafa.data.datamodule import AUDIO_KEYS
from lafa.data.tario import add_member, atomic_tar, remove_stale_temporaries


def _audio(sample: dict, sample_rate: int, channels: int) -> torch.Tensor:
    ext = next((k for k in AUDIO_KEYS if k in sample), None)
    if ext is None:
        raise KeyError(f"sample {sample['__key__']} in {sample.get('__url__')} has no audio ({AUDIO_KEYS})")
    data, sr = sf.read(io.BytesIO(sample[ext]), dtype="float32", always_2d=True)
    return resample(to_channels(torch.from_numpy(np.ascontiguousarray(data.T)), channels), sr, sample_rate)


@torch.no_grad()
def _encode(autoencoder: Any, audios: list[torch.Tensor], device: torch.device) -> list[np.ndarray]:
    """Equal-length (C, S) clips -> their (latent_dim, S // ratio) latents, in one batch."""
    batch = torch.stack(audios).to(device)  # (B, C, S)
    return [z.float().cpu().numpy() for z in autoencoder.encode(batch)]  # B x (latent_dim, N)


def encode_shard(autoencoder: Any, url: str, out_path: str | Path, batch_size: int = 8,
                 device: str | torch.device = "cpu", dtype: str = "float32", source: str = "") -> int:
    """Encode one audio shard into one latent shard; returns the number of samples written."""
    ratio = int(autoencoder.downsampling_ratio)
    sr, channels = int(autoencoder.sample_rate), int(autoencoder.io_channels)
    device = torch.device(device)
    written = 0
    pending: list[tuple[dict, torch.Tensor, int]] = []

    def flush(tar) -> None:
        nonlocal written
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
        pending.clear()

    with atomic_tar(out_path) as tar:
        for sample in tarfile_samples([{"url": url}]):
            audio = _audio(sample, sr, channels)  # (C, S)
            length = audio.shape[-1]
            padded = -(-length // ratio) * ratio
            audio = torch.nn.functional.pad(audio, (0, padded - length))  # (C, N * ratio)
            if pending and (len(pending) == batch_size or pending[0][1].shape[-1] != padded):
                flush(tar)
            pending.append((sample, audio, length))
        if pending:
            flush(tar)
    return written


def encode_shards(autoencoder: Any, urls: list[str], out_dir: str | Path, batch_size: int = 8,
                  device: str | torch.device = "cpu", dtype: str = "float32", source: str = "",
                  overwrite: bool = False) -> list[Path]:
    """Encode every audio shard to `out_dir/<same name>`; shards already there are kept unless overwrite."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(out_dir)
    outputs = []
    for url in tqdm(urls, desc="encode", disable=None):
        name = Path(url.split()[-1] if url.startswith("pipe:") else url).name
        if not name.endswith(".tar"):
            name = f"{name}.tar"
        out = out_dir / name
        if overwrite or not out.is_file():
            encode_shard(autoencoder, url, out, batch_size, device, dtype, source)
        outputs.append(out)
    return outputs
