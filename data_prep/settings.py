"""What a shard build is asked to do (`data_prep build`'s settings): one home, read by the planner, the build
record, the manifest and the builder alike."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from data_prep.process import ChunkSettings


@dataclass
class BuildSettings:
    out: Path
    chunk: ChunkSettings = field(default_factory=ChunkSettings)
    shard_bytes: int = 256 * 2**20  # target shard size (estimated before encoding)
    val_fraction: float = 0.05
    test_fraction: float = 0.05
    seed: int = 0
    jobs: int = 0  # 0: all cores
    prefix: str = ""  # shards are {prefix}{split}-000000.tar
    # "probe": each file's size from the FLAC size of an excerpt, shards closest to shard_bytes (within ~10% on
    # music); "pcm": a fixed FLAC/PCM ratio of 0.6, shards filled until they pass it (content-independent plan)
    size_estimate: str = "pcm"
    # the inputs that chose the files besides the source folders (tables, allow-lists, licence filter), recorded
    # with the settings in the folder's build record (data_prep.build_record)
    inputs: dict = field(default_factory=dict)
    overwrite: bool = False  # replace the shards of another build in `out` (else that folder is refused)

    def recorded(self) -> dict:
        """The settings manifest.json records (the build record adds size_estimate and prefix)."""
        return {**asdict(self.chunk), "shard_bytes": self.shard_bytes, "val_fraction": self.val_fraction,
                "test_fraction": self.test_fraction, "seed": self.seed}
