"""LightningDataModules over WebDataset shards: `AudioDataModule` (audio + JSON from data_prep) and
`LatentDataModule` (latent .npy + JSON from `lafa encode`). Batch dicts follow docs/architecture.md.
"""

from __future__ import annotations

import io
import json
import logging
import random
import warnings
from typing import Any

import numpy as np
import soundfile as sf
import torch
from lightning.pytorch import LightningDataModule

from lafa.audio import SAMPLE_RATE, convert
from lafa.data.captions import caption_rng, draw_caption
from lafa.data.epoch_loader import EpochLoader
from lafa.data.geometry import timing
from lafa.data.latent_corpus import EncodeFolderError, check_latent_corpus
from lafa.data.stream import DamagedDataError, ShardStream, expand_shards, split_shards
from lafa.data.tario import scan_shard
from lafa.data.transforms import crop_pad, draw_start
from lafa.errors import BadInput

AUDIO_KEYS = ("flac", "wav", "mp3", "ogg", "opus")
ShardSpec = str | list[str] | None
log = logging.getLogger(__name__)


def member(sample: dict, exts: tuple[str, ...], what: str) -> str:
    """The first of `exts` a shard sample holds (KeyError naming the sample and `what` it lacks)."""
    ext = next((k for k in exts if k in sample), None)
    if ext is None:
        raise KeyError(f"sample {sample.get('__key__')} in {sample.get('__url__')} has no {what}")
    return ext


def _metadata(sample: dict) -> dict:
    return json.loads(sample[member(sample, ("json",), ".json member")])


def _caption(meta: dict, rng: random.Random | None, key: str, epoch: int, seed: int, fresh: bool) -> str:
    """Train: a fresh draw from the raw metadata every epoch; val/test: the caption stored at prep time."""
    if rng is not None and fresh and meta.get("metadata"):
        return draw_caption(meta["metadata"], caption_rng(seed, key, epoch))
    return meta.get("caption") or draw_caption(meta.get("metadata") or {}, caption_rng(seed, key))


def collate(examples: list[dict]) -> dict[str, Any]:
    """Examples -> the batch dict: tensors stacked, strings and metadata as lists."""
    data_key = "audio" if "audio" in examples[0] else "latent"
    return {
        data_key: torch.stack([e[data_key] for e in examples]),
        "keep": torch.stack([e["keep"] for e in examples]),
        "real_samples": torch.tensor([e["real_samples"] for e in examples], dtype=torch.long),
        "seconds_start": torch.tensor([e["seconds_start"] for e in examples], dtype=torch.float32),
        "seconds_total": torch.tensor([e["seconds_total"] for e in examples], dtype=torch.float32),
        "caption": [e["caption"] for e in examples],
        "id": [e["id"] for e in examples],
        "metadata": [e["metadata"] for e in examples],
    }


def seek_is_exact(f: sf.SoundFile) -> bool:
    """Whether seek + read gives the full decode's samples at that place. Not for MP3 (libsndfile 1.2's decoder
    returns wrong samples after a seek, off by up to the signal's amplitude) nor Opus (float rounding
    differences after a seek); exact for FLAC, WAV and Ogg Vorbis (tests/data/test_datamodule.py)."""
    return f.format != "MP3" and f.subtype != "OPUS"


def clip_lossy(f: sf.SoundFile, data: np.ndarray) -> np.ndarray:
    """A lossy member's samples (MP3, Vorbis, Opus) clipped to [-1, 1] in place, as data_prep clips every chunk it
    encodes to FLAC: a decoder's output can exceed full scale (up to ~2 on clipped masters), so a copied
    source and its FLAC encoding then differ only by 16-bit rounding (<= 1/32768)."""
    if f.format == "MP3" or f.subtype in ("VORBIS", "OPUS"):
        np.clip(data, -1.0, 1.0, out=data)
    return data


class AudioDecoder:
    """One shard sample -> {audio (C, sample_size), keep (sample_size,), real_samples, timing, caption,
    id, metadata}. Only the cropped window is decoded where seeking is exact (FLAC, WAV, Vorbis: 30 s chunks
    cost about one crop of work); MP3 and Opus members (`seek_is_exact`) are decoded from their start up to the
    crop's end when data_prep's JSON gives their validated length (a copied source), else whole, and sliced.
    Timing is the crop's (`lafa.data.geometry.timing`): seconds_start from its offset in the source file,
    seconds_total from its real samples."""

    def __init__(self, sample_size: int, sample_rate: int, channels: int, seed: int, fresh_captions: bool):
        self.sample_size, self.sample_rate, self.channels = sample_size, sample_rate, channels
        self.seed, self.fresh_captions = seed, fresh_captions

    def __call__(self, sample: dict, rng: random.Random | None, epoch: int) -> dict:
        meta = _metadata(sample)
        ext = member(sample, AUDIO_KEYS, f"audio ({AUDIO_KEYS})")
        with sf.SoundFile(io.BytesIO(sample[ext])) as f:
            sr = f.samplerate
            # crop in the file's own rate, then convert (a no-op for data_prep shards, already 44.1 kHz)
            size_in = -(-self.sample_size * sr // self.sample_rate)
            if seek_is_exact(f):
                length = f.frames
                start = draw_start(length, size_in, rng)
                f.seek(start)
                data = f.read(min(size_in, length - start), dtype="float32", always_2d=True)
            elif meta.get("stored") == "copy" and meta.get("num_samples"):  # a data_prep copy: length validated
                length = int(meta["num_samples"])  # decoded from its start, one read: the full decode's samples
                start = draw_start(length, size_in, rng)
                data = f.read(start + size_in, dtype="float32", always_2d=True)[start:]
            else:  # decoded whole and sliced (the header's length may be an estimate)
                whole = f.read(dtype="float32", always_2d=True)
                length = len(whole)
                start = draw_start(length, size_in, rng)
                data = whole[start : start + size_in]
            clip_lossy(f, data)
        audio = torch.from_numpy(np.ascontiguousarray(data.T))  # (C_file, s)
        audio = convert(audio, sr, self.sample_rate, self.channels)
        audio, mask = crop_pad(audio, self.sample_size, 0)  # (C, sample_size), (sample_size,)
        real = int(mask.sum())
        offset = meta.get("offset_samples", 0) * sr // meta.get("sample_rate", sr) + start  # in the source file
        seconds_start = float(offset // sr)  # offset in the file's rate, real samples in sample_rate
        seconds_total = timing(0, real, self.sample_rate)[1]
        return {"audio": audio, "keep": mask, "real_samples": real, "seconds_start": seconds_start,
                "seconds_total": seconds_total, "id": sample["__key__"], "metadata": meta,
                "caption": _caption(meta, rng, sample["__key__"], epoch, self.seed, self.fresh_captions)}


class LatentDecoder:
    """One latent-shard sample -> {latent (C, latent_size), keep (latent_size,), real_samples, timing,
    caption, ...}. real_samples counts the crop's audio samples (its last frame may be partly padding)."""

    def __init__(self, latent_size: int, seed: int, fresh_captions: bool):
        self.latent_size, self.seed, self.fresh_captions = latent_size, seed, fresh_captions

    def __call__(self, sample: dict, rng: random.Random | None, epoch: int) -> dict:
        meta = _metadata(sample)
        latent = np.load(io.BytesIO(sample[member(sample, ("npy",), ".npy latent")]))
        latent = torch.from_numpy(latent.astype(np.float32))  # (C, N)
        valid = int(meta.get("latent_frames", latent.shape[-1]))  # frames that cover real audio
        start = draw_start(valid, self.latent_size, rng)
        latent, mask = crop_pad(latent[:, :valid], self.latent_size, start)  # (C, latent_size), (latent_size,)
        ratio, sr = int(meta["downsampling_ratio"]), int(meta["sample_rate"])
        length = int(meta.get("num_samples", valid * ratio))  # the chunk's audio samples the latent covers
        real = min(int(mask.sum()) * ratio, length - start * ratio)
        seconds_start, seconds_total = timing(meta.get("offset_samples", 0) + start * ratio, real, sr)
        return {"latent": latent, "keep": mask, "real_samples": real, "seconds_start": seconds_start,
                "seconds_total": seconds_total, "id": sample["__key__"], "metadata": meta,
                "caption": _caption(meta, rng, sample["__key__"], epoch, self.seed, self.fresh_captions)}


class SplitLoaders(LightningDataModule):
    """The loaders of a DataModule with `_loader(split)`, and its training loader told (`taken(batch)`) when the
    trainer takes a batch: Lightning pre-fetches one, so only then does the position a checkpoint stores move."""

    _train_loader: Any = None

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        if self.trainer is not None and self.trainer.training and self._train_loader is not None:
            self._train_loader.taken(batch)
        return batch

    def val_dataloader(self) -> Any:
        return self._loader("val")

    def test_dataloader(self) -> Any:
        return self._loader("test")

    def predict_dataloader(self) -> Any:
        return self._loader("predict")


class _ShardDataModule(SplitLoaders):
    """Shared wiring of the audio and latent DataModules (shard specs, DDP slots, loaders, the stream position
    in checkpoints, damaged-data reports); a subclass's arguments are its hyperparameters, and it sets
    `self.decoder` (sample -> example)."""

    def __init__(self) -> None:
        super().__init__()
        self.save_hyperparameters()  # the subclass's constructor arguments
        self.specs = {split: self.hparams[f"{split}_shards"] for split in ("train", "val", "test", "predict")}
        self._scans: dict[tuple[str, ...], list[int] | None] = {}
        self._damaged: dict[str, str] = {}  # shard -> what the scan found wrong with it

    def _rank_world(self) -> tuple[int, int]:
        trainer = self.trainer
        if trainer is not None:
            return trainer.global_rank, trainer.world_size
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            return torch.distributed.get_rank(), torch.distributed.get_world_size()
        return 0, 1

    def _counts(self, urls: list[str]) -> list[int] | None:
        """Samples per shard from the tar headers of local shards (None with any `pipe:`/remote shard); damaged
        shards are named here, before any worker starts (strict: DamagedDataError)."""
        key = tuple(urls)
        if key not in self._scans:
            if any(u.startswith("pipe:") for u in urls):
                self._scans[key] = None
            else:
                scans = [scan_shard(u) for u in urls]
                damaged = {u: problem for u, (_, problem) in zip(urls, scans, strict=True) if problem}
                lines = [f"{u}: {problem}" for u, problem in damaged.items()]
                if damaged and self.hparams.strict:
                    raise DamagedDataError(f"{len(damaged)} damaged shard(s) (strict mode; strict: false skips "
                                           "them): " + "; ".join(lines))
                for line in lines:
                    log.warning("damaged shard, its readable samples are used: %s", line)
                self._scans[key] = [n for n, _ in scans]
                self._damaged.update(damaged)
        return self._scans[key]

    def stream(self, split: str, rank: int | None = None, world_size: int | None = None) -> ShardStream:
        """The ShardStream of one split for one rank (rank/world from the Trainer unless given)."""
        spec = self.specs[split]
        if spec is None:
            raise BadInput(f"data.init_args.{split}_shards", f"not given ({type(self).__name__} has no {split} split)",
                           f"pass --data.init_args.{split}_shards SPEC (a folder, a glob or a brace pattern of "
                           f".tar shards)")
        r, w = self._rank_world()
        r, w = (r if rank is None else rank), (w if world_size is None else world_size)
        hp = self.hparams
        train = split == "train"
        urls = split_shards(spec, split)
        counts = self._counts(urls)
        if train and w > 1 and counts is None and not hp.epoch_length:
            raise ValueError(f"{w} ranks reading remote/pipe: shards need epoch_length (batches per rank and epoch) "
                             "or resampled: true, so that every rank takes the same number of steps")
        return ShardStream(
            urls, self.decoder, collate, hp.batch_size if train else (hp.val_batch_size or hp.batch_size),
            train=train, shuffle_buffer=hp.shuffle_buffer if train else 0, resampled=hp.resampled and train,
            epoch_length=hp.epoch_length if train else None, split_mode=hp.split_mode, rank=r, world_size=w,
            seed=hp.seed, num_workers=hp.num_workers, counts=counts, strict=hp.strict)

    def _report(self, split: str, stats: dict) -> None:
        """End of a pass: damaged data to stderr (per rank) and to the Lightning loggers (rank 0's counts)."""
        trainer, rank = self.trainer, self._rank_world()[0]
        urls = set(expand_shards(self.specs[split]))
        stats = {**stats, "shards": sorted(set(stats["shards"]) | {u for u in self._damaged if u in urls})}
        if stats["shards"] or stats["samples"] or stats["repeats"]:
            log.warning("%s epoch %d, rank %d: skipped %d damaged shard(s) and %d damaged sample(s) in %d batches%s",
                        split, stats["epoch"], rank, len(stats["shards"]), stats["samples"], stats["batches"],
                        f"; {stats['repeats']} extra pass(es) to fill the epoch" if stats["repeats"] else "")
        if trainer is not None and not trainer.sanity_checking:
            for logger in trainer.loggers:
                logger.log_metrics({f"data/{split}_damaged_shards": float(len(stats["shards"])),
                                    f"data/{split}_damaged_samples": float(stats["samples"])},
                                   step=trainer.global_step)

    def _loader(self, split: str) -> EpochLoader:
        hp = self.hparams
        loader = EpochLoader(self.stream(split), batch_size=None, num_workers=hp.num_workers,
                             pin_memory=hp.pin_memory, persistent_workers=hp.persistent_workers and hp.num_workers > 0,
                             report=lambda stats: self._report(split, stats))
        loader.consume_on_yield = not (split == "train" and self.trainer is not None)
        return loader

    def train_dataloader(self) -> EpochLoader:
        # the stream's length is exact in every worker layout (ShardStream.quotas); Lightning's generic caution
        # about IterableDataset lengths does not apply
        warnings.filterwarnings("ignore", message="Your `IterableDataset` has `__len__` defined")
        self._train_loader = self._loader("train")
        return self._train_loader


class AudioDataModule(_ShardDataModule):
    """Audio shards (data_prep) -> {audio (B, channels, sample_size), keep (B, sample_size),
    seconds_start, seconds_total (B,), caption, id, metadata}. Every argument: docs/data.md."""

    def __init__(self, train_shards: ShardSpec = None, val_shards: ShardSpec = None, test_shards: ShardSpec = None,
                 predict_shards: ShardSpec = None, sample_size: int = 65536, sample_rate: int = SAMPLE_RATE,
                 channels: int = 2, batch_size: int = 8, val_batch_size: int | None = None, num_workers: int = 2,
                 shuffle_buffer: int = 1000, resampled: bool = False, epoch_length: int | None = None,
                 split_mode: str = "auto", fresh_captions: bool = True, seed: int = 0, pin_memory: bool = False,
                 persistent_workers: bool = False, strict: bool = False) -> None:
        super().__init__()
        self.decoder = AudioDecoder(sample_size, sample_rate, channels, seed, fresh_captions)


class LatentDataModule(_ShardDataModule):
    """Latent shards (`lafa encode`) -> {latent (B, C, latent_size), keep (B, latent_size),
    seconds_start, seconds_total (B,), caption, id, metadata}. Every argument: docs/data.md."""

    def __init__(self, train_shards: ShardSpec = None, val_shards: ShardSpec = None, test_shards: ShardSpec = None,
                 predict_shards: ShardSpec = None, latent_size: int = 32, batch_size: int = 8,
                 val_batch_size: int | None = None, num_workers: int = 2, shuffle_buffer: int = 1000,
                 resampled: bool = False, epoch_length: int | None = None, split_mode: str = "auto",
                 fresh_captions: bool = True, seed: int = 0, pin_memory: bool = False,
                 persistent_workers: bool = False, strict: bool = False) -> None:
        super().__init__()
        self.decoder = LatentDecoder(latent_size, seed, fresh_captions)
        self.latent_fingerprints: dict[str, str] = {}  # split -> the encode fingerprint its shards carry

    def _counts(self, urls: list[str]) -> list[int] | None:
        """A corpus mixing latents of several encodes (other autoencoder weights or settings) is refused, within a
        split and across splits (lafa.data.latent_corpus.check_latent_corpus), before anything is read."""
        key = tuple(urls)
        if key not in self._scans:
            split = next((k for k, v in self.specs.items() if v is not None and tuple(expand_shards(v)) == key), "?")
            fp = check_latent_corpus(urls, f"{split}_shards")
            others = {k: v for k, v in self.latent_fingerprints.items() if v != fp and k != split}
            if fp is not None and others:
                k, v = next(iter(others.items()))
                raise EncodeFolderError(f"{split}_shards: encoded with fingerprint {fp}, {k}_shards with {v}: the splits "
                                        f"come from different autoencoders or settings; encode both with one "
                                        f"autoencoder (`lafa encode ... --overwrite`)")
            if fp is not None:
                self.latent_fingerprints[split] = fp
        return super()._counts(urls)
