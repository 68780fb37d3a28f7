"""Damaged shards and members in real data_prep shards: a 0-byte shard, a truncated shard, a member whose
FLAC does not decode and one whose JSON does not parse are skipped, named and counted; strict mode fails
with one clear message instead; nothing crashes inside a worker."""

import io
import json
import logging
import shutil
import tarfile

import numpy as np
import pytest
import soundfile as sf

from data_prep.process import ChunkSettings
from data_prep.shards import BuildSettings, build
from data_prep.sources import read_folder
from lafa.data import AudioDataModule
from lafa.data.stream import DamagedDataError
from lafa.data.tario import add_member, atomic_tar


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    """12 one-chunk clips in 4 or more real shards."""
    root = tmp_path_factory.mktemp("faults")
    src = root / "src"
    src.mkdir()
    for i in range(12):
        sf.write(src / f"c{i:02d}.wav", np.full((8000, 2), 0.01 * (i + 1), np.float32), 44100, subtype="PCM_16")
        (src / f"c{i:02d}.json").write_text(json.dumps({"genre": "drone", "split": "train"}))
    build(read_folder(src), BuildSettings(out=root / "shards", shard_bytes=45_000, jobs=1,
                                          chunk=ChunkSettings(copy_sources=False)), [], {})  # FLAC members
    shards = sorted((root / "shards").glob("train-*.tar"))
    assert len(shards) >= 4
    return shards


def _keys(path):
    with tarfile.open(path) as tar:
        return sorted({m.name.split(".")[0] for m in tar.getmembers()})


def _rewrite(path, damage):
    """Rewrite a real shard with damage(name, bytes) -> bytes applied to its members."""
    with tarfile.open(path) as tar:
        members = [(m.name, tar.extractfile(m).read()) for m in tar.getmembers()]
    with atomic_tar(path) as tar:
        for name, data in members:
            add_member(tar, name, damage(name, data))


@pytest.fixture
def damaged(clean, tmp_path):
    """The clean shards with: shard 0 emptied (0 bytes), shard 1 cut mid-member, one FLAC and one JSON of
    shard 2 garbled. Returns (folder, the keys that must still arrive, what was damaged)."""
    paths = [shutil.copy(p, tmp_path / p.name) for p in clean]
    k0, k1, k2 = _keys(paths[0]), _keys(paths[1]), _keys(paths[2])
    open(paths[0], "wb").close()
    data = open(paths[1], "rb").read()
    with tarfile.open(paths[1]) as tar:
        last = tar.getmembers()[-1]
    open(paths[1], "wb").write(data[: last.offset_data + last.size // 2])  # cut inside the last member
    bad_flac, bad_json = f"{k2[0]}.flac", f"{k2[1]}.json"
    _rewrite(paths[2], lambda n, d: b"fLaC" + bytes(200) if n == bad_flac else b"{not json" if n == bad_json else d)
    good = set(k1[:-1]) | set(k2[2:]) | {k for p in paths[3:] for k in _keys(p)}
    lost = set(k0) | {k1[-1]} | set(k2[:2])
    return tmp_path, good, {"empty": paths[0], "cut": paths[1], "flac": k2[0], "json": k2[1]}, lost


def test_damaged_shards_and_members_are_skipped_named_and_counted(damaged, caplog):
    folder, good, what, lost = damaged
    dm = AudioDataModule(val_shards=str(folder), sample_size=2048, batch_size=2, num_workers=2)
    with caplog.at_level(logging.WARNING, logger="lafa.data"):
        seen = [k for batch in dm.val_dataloader() for k in batch["id"]]
    assert sorted(seen) == sorted(good) and not set(seen) & lost  # every whole sample, once
    text = caplog.text
    for name in (str(what["empty"]), str(what["cut"]), what["flac"], what["json"]):
        assert name in text, f"{name} not named in the warnings"
    assert "empty file" in text and "unexpected end of data" in text and "JSONDecodeError" in text
    assert "val epoch 1, rank 0: skipped 2 damaged shard(s) and 2 damaged sample(s)" in text


def test_train_epoch_with_damage_keeps_its_length_and_runs_in_workers(damaged, caplog):
    folder, good, _, _ = damaged
    dm = AudioDataModule(train_shards=str(folder), sample_size=2048, batch_size=2, num_workers=2, shuffle_buffer=4)
    loader = dm.train_dataloader()
    with caplog.at_level(logging.WARNING, logger="lafa.data"):
        batches = list(loader)
    assert len(batches) == len(loader) > 0  # damaged members are made up for, not left as a short epoch
    assert {k for b in batches for k in b["id"]} <= good
    assert "damaged" in caplog.text


def test_strict_mode_fails_with_one_clear_message(damaged, clean, tmp_path):
    folder, _, what, _ = damaged
    dm = AudioDataModule(val_shards=str(folder), sample_size=2048, batch_size=2, num_workers=0, strict=True)
    with pytest.raises(DamagedDataError, match="damaged shard.*empty file"):
        dm.val_dataloader()
    only_members = tmp_path / "members"
    only_members.mkdir()
    shutil.copy(folder / clean[2].name, only_members)  # whole tar, a garbled FLAC and JSON inside
    dm = AudioDataModule(val_shards=str(only_members), sample_size=2048, batch_size=2, num_workers=1, strict=True)
    with pytest.raises(DamagedDataError) as info:
        list(dm.val_dataloader())
    message = str(info.value)
    assert what["flac"] in message and "strict" in message and "Traceback" not in message


def test_val_json_damage_is_a_decode_error_not_a_crash(clean, tmp_path):
    path = shutil.copy(clean[3], tmp_path / clean[3].name)
    _rewrite(path, lambda n, d: io.BytesIO(d).read()[:3] if n.endswith(".json") else d)
    dm = AudioDataModule(val_shards=str(tmp_path), sample_size=2048, batch_size=2, num_workers=0)
    assert list(dm.val_dataloader()) == []  # every sample's metadata is unreadable: nothing, and no exception
