"""Batch geometry (`lafa.data.geometry`) against closed forms, and the shard -> batch path it describes: data_prep
shards of a file longer than the crop, through AudioDataModule and LatentDataModule, carry each crop's real
length and its timing (seconds_start in the source file, seconds_total of the crop)."""

import json

import numpy as np
import pytest
import soundfile as sf
import torch

from data_prep.process import ChunkSettings
from data_prep.shards import BuildSettings, build
from data_prep.sources import read_folder
from lafa.data import AudioDataModule, LatentDataModule
from lafa.data.geometry import (
    frame_keep,
    frames_for,
    keep_from_lengths,
    real_samples,
    seconds_to_samples,
    seconds_total,
    timing,
    trim,
)
from lafa.data.latent_shards import encode_corpus
from lafa.data.transforms import crop_pad
from tests.data.test_latent_shards import RATIO, PoolProjectAutoencoder

SR = 44100


def test_timing_is_the_crops_closed_form():
    assert timing(2 * SR + 5, SR // 2, SR) == (2.0, 1.0)  # 2.0001 s into the file, half a second of audio
    assert timing(SR - 1, SR, SR) == (0.0, 1.0)  # exactly one second is 1, not 2
    assert timing(0, SR + 1, SR) == (0.0, 2.0) and timing(0, 1, SR) == (0.0, 1.0)
    assert seconds_total(30 * SR, SR) == 30.0 and seconds_to_samples(0.3, SR) == 13230
    with pytest.raises(ValueError):
        seconds_to_samples(0.0, SR)


@pytest.mark.parametrize("ratio", [1, 4, 32])
def test_frame_keep_marks_ceil_real_over_ratio_frames(ratio):
    """Frame n is real when its first sample is: ceil(L / r) real frames for L real samples (crop_pad's masks)."""
    size = 8 * ratio
    for real in range(0, size + 1, max(ratio // 3, 1)):
        _, mask = crop_pad(torch.ones(1, real), size, 0)
        for frames in (8, 11):  # a latent as long as the crop, and one longer (frames past the mask: padding)
            keep = frame_keep(mask[None], ratio, frames)[0]
            expected = [n < -(-real // ratio) for n in range(frames)]
            assert keep.tolist() == expected
            assert frames_for(real, ratio) == sum(expected)
    assert frame_keep(None, ratio, 8) is None
    assert keep_from_lengths(torch.tensor([0, 2, 3]), 3).tolist() == [[False] * 3, [True, True, False], [True] * 3]


def test_real_samples_and_trim():
    audio = torch.randn(2, 1, 10)
    mask = torch.arange(10)[None] < torch.tensor([[4], [10]])
    assert real_samples({"audio": audio, "keep": mask}).tolist() == [4, 10]
    assert real_samples({"audio": audio}).tolist() == [10, 10]
    assert real_samples({"latent": audio, "keep": mask}, ratio=32).tolist() == [128, 320]
    assert real_samples({"latent": audio, "keep": mask, "real_samples": [100, 300]}, 32).tolist() == [100, 300]
    clips = trim(audio, [4, 10])
    assert [c.shape[-1] for c in clips] == [4, 10] and torch.equal(clips[0], audio[0, :, :4])
    with pytest.raises(ValueError):
        trim(audio, [11, 1])
    with pytest.raises(ValueError):
        trim(audio, [1])


@pytest.fixture(scope="module")
def long_file(tmp_path_factory):
    """One 3.5 s file (noise), data_prep chunks of 2 s: [0, 2 s) and [2 s, 3.5 s)."""
    root = tmp_path_factory.mktemp("geometry")
    src = root / "src"
    src.mkdir()
    x = (0.3 * np.random.default_rng(0).standard_normal((int(3.5 * SR), 2))).astype(np.float32)
    sf.write(src / "take.wav", x, SR, subtype="PCM_16")
    (src / "take.json").write_text(json.dumps({"title": "take", "genre": "noise", "split": "train"}))
    build(read_folder(src), BuildSettings(out=root / "audio", chunk=ChunkSettings(chunk_seconds=2.0), jobs=1), [], {})
    return root, sf.read(src / "take.wav", dtype="float32")[0].T  # (2, S)


def _offset_in(source: np.ndarray, piece: np.ndarray) -> int:
    """Where a crop's first 64 samples occur in the source file (noise: one place)."""
    windows = np.lib.stride_tricks.sliding_window_view(source[0], 64)
    hits = np.flatnonzero((windows == piece[0, :64]).all(axis=1))
    assert len(hits) == 1
    return int(hits[0])


@pytest.mark.parametrize("size", [30000, 100000])  # a crop shorter than the chunks, and one longer
def test_audio_crops_of_a_long_file_carry_their_real_length_and_timing(long_file, size):
    root, source = long_file
    dm = AudioDataModule(train_shards=str(root / "audio" / "train-*.tar"), sample_size=size, batch_size=1,
                         num_workers=0, shuffle_buffer=0, seed=3)
    seen = 0
    for batch in dm.train_dataloader():  # random crops (train)
        real = int(batch["real_samples"][0])
        assert int(batch["keep"][0].sum()) == real
        offset = _offset_in(source, batch["audio"][0].numpy())
        chunk_end = 2 * SR if offset < 2 * SR else source.shape[-1]
        assert real == min(size, chunk_end - offset)  # the crop's own audio, cut at its chunk's end
        np.testing.assert_array_equal(batch["audio"][0, :, :real].numpy(), source[:, offset: offset + real])
        assert float(batch["seconds_start"][0]) == offset // SR  # in the source file
        assert float(batch["seconds_total"][0]) == -(-real // SR)  # the crop's, never the file's 4
        seen += 1
    assert seen == 2


def test_latent_crops_carry_their_real_samples(long_file, tmp_path):
    root, source = long_file
    encode_corpus(PoolProjectAutoencoder(), sorted(str(p) for p in (root / "audio").glob("*.tar")), tmp_path / "lat")
    dm = LatentDataModule(val_shards=str(tmp_path / "lat"), latent_size=400, batch_size=2, num_workers=0)
    (batch,) = list(dm.val_dataloader())
    by_chunk = dict(zip([m["chunk"] for m in batch["metadata"]], range(2), strict=True))
    for chunk, (start, length) in {0: (0, 2 * SR), 1: (2 * SR, source.shape[-1] - 2 * SR)}.items():
        i = by_chunk[chunk]
        assert int(batch["real_samples"][i]) == length  # 88200 and 66150: not a whole number of 256-sample frames
        assert int(batch["keep"][i].sum()) == -(-length // RATIO)
        assert float(batch["seconds_start"][i]) == start // SR and float(batch["seconds_total"][i]) == -(-length // SR)
