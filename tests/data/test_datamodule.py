"""The streaming DataModules: batch dicts, crop/pad/mask, DDP x worker splitting, captions per epoch."""

import io
import json
import random
import tarfile
import types

import numpy as np
import pytest
import soundfile as sf
import torch

import lafa.data.stream as stream
from data_prep.process import ChunkSettings
from data_prep.shards import BuildSettings, build
from data_prep.sources import read_folder
from lafa.data import AudioDataModule
from lafa.data.datamodule import AudioDecoder
from lafa.data.stream import expand_shards
from lafa.data.transforms import crop_pad, draw_start

SR = 44100
LENGTHS = [9000, 30000, 2000, 25000, 16384, 40000, 12000, 5000, 20000, 33000, 7000, 18000]


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """12 clips with known lengths and a level that encodes their index, in several small train shards."""
    root = tmp_path_factory.mktemp("corpus")
    src = root / "src"
    src.mkdir()
    for i, n in enumerate(LENGTHS):
        x = np.full((n, 2), 0.05 * (i + 1), np.float32)
        x[:, 1] *= -1
        sf.write(src / f"c{i:02d}.wav", x, SR, subtype="PCM_16")
        meta = {"genre": "drone", "title": f"clip {i}", "artist": "tester", "year": "2020", "split": "train"}
        (src / f"c{i:02d}.json").write_text(json.dumps(meta))
    settings = BuildSettings(out=root / "shards", chunk=ChunkSettings(chunk_seconds=1.0, min_tail_seconds=0.01,
                                                                      silence_dbfs=-60, min_clip_seconds=0.0), shard_bytes=40_000, jobs=1)
    build(read_folder(src), settings, [], {})
    return root / "shards"


def test_crop_pad_and_mask_closed_form():
    x = torch.arange(10, dtype=torch.float32).view(1, 10)
    out, mask = crop_pad(x, 6, 7)
    assert out.tolist() == [[7, 8, 9, 0, 0, 0]] and mask.tolist() == [True] * 3 + [False] * 3
    out, mask = crop_pad(x, 4, 2)
    assert out.tolist() == [[2, 3, 4, 5]] and bool(mask.all())
    import random

    rng = random.Random(0)
    starts = {draw_start(10, 4, rng) for _ in range(500)}
    assert starts == set(range(7)) and draw_start(10, 4, None) == 0 and draw_start(3, 4, rng) == 0


def test_batches_have_the_documented_shape_and_masks(shards):
    dm = AudioDataModule(train_shards=str(shards / "train-*.tar"), val_shards=str(shards / "train-*.tar"),
                         sample_size=16384, batch_size=3, num_workers=0)
    batches = list(dm.val_dataloader())
    assert sum(len(b["id"]) for b in batches) == len(LENGTHS)
    b = batches[0]
    assert set(b) == {"audio", "keep", "real_samples", "seconds_start", "seconds_total", "caption", "id",
                      "metadata"}
    assert b["audio"].shape == (3, 2, 16384) and b["audio"].dtype == torch.float32
    assert b["keep"].shape == (3, 16384) and b["keep"].dtype == torch.bool
    assert b["seconds_start"].dtype == torch.float32 and b["seconds_total"].shape == (3,)
    assert isinstance(b["caption"][0], str) and isinstance(b["metadata"][0], dict)
    for batch in batches:
        for audio, mask, meta, total in zip(batch["audio"], batch["keep"], batch["metadata"],
                                            batch["seconds_total"], strict=True):
            real = min(meta["num_samples"], 16384)
            assert int(mask.sum()) == real and bool(mask[:real].all())  # val: deterministic start 0
            assert float(audio[:, real:].abs().sum()) == 0.0  # zero padding after the real audio
            level = 0.05 * (int(meta["path"][1:3]) + 1)  # c07.wav
            assert torch.allclose(audio[0, :real], torch.full((real,), level), atol=1e-4)
            assert torch.allclose(audio[1, :real], torch.full((real,), -level), atol=1e-4)
            assert total == np.ceil(real / SR)  # the crop's real seconds (lafa.data.geometry), not the file's


def test_train_crops_are_random_windows_with_timing(shards):
    dm = AudioDataModule(train_shards=str(shards), sample_size=4096, batch_size=4, num_workers=0, shuffle_buffer=8)
    starts = []
    for batch in dm.train_dataloader():
        for audio, mask, meta, s0 in zip(batch["audio"], batch["keep"], batch["metadata"],
                                         batch["seconds_start"], strict=True):
            real = min(4096, meta["num_samples"])
            assert int(mask.sum()) == real and float(audio[:, real:].abs().sum()) == 0.0
            assert float(audio[0, :real].min()) > 0.04  # a window of the clip itself, never padding
            assert s0 >= meta["seconds_start"]
            starts.append(s0)
    assert len(starts) == 12  # 12 chunks, batches of 4, drop_last


def _ids(ds, rank, world, worker, workers, monkeypatch):
    monkeypatch.setattr(stream, "get_worker_info", lambda: types.SimpleNamespace(id=worker, num_workers=workers))
    ds.rank, ds.world_size = rank, world
    return [k for batch in ds for k in batch["id"]]


@pytest.mark.parametrize("split_mode", ["shard", "sample"])
@pytest.mark.parametrize("split", ["train", "val"])
def test_two_ranks_two_workers_see_disjoint_samples_covering_the_set(shards, monkeypatch, split_mode, split):
    dm = AudioDataModule(train_shards=str(shards), val_shards=str(shards), sample_size=1024, batch_size=1,
                         num_workers=0, split_mode=split_mode)
    n_shards = len(expand_shards(str(shards)))
    assert n_shards >= 4
    seen = []
    for rank in range(2):
        for worker in range(2):
            ds = dm.stream(split, rank=rank, world_size=2)
            seen.append(_ids(ds, rank, 2, worker, 2, monkeypatch))
    flat = [k for ids in seen for k in ids]
    assert len(flat) == len(set(flat)) == len(LENGTHS)  # disjoint, and together the whole set
    assert all(seen)


def test_val_order_is_deterministic_and_train_captions_are_fresh_each_epoch(shards):
    dm = AudioDataModule(train_shards=str(shards), val_shards=str(shards), sample_size=1024, batch_size=2,
                         num_workers=0)
    loader = dm.val_dataloader()
    first = [(k, c) for b in loader for k, c in zip(b["id"], b["caption"], strict=True)]
    second = [(k, c) for b in loader for k, c in zip(b["id"], b["caption"], strict=True)]
    assert first == second
    train = dm.train_dataloader()
    epochs = [dict(kc for b in train for kc in zip(b["id"], b["caption"], strict=True)) for _ in range(2)]
    assert set(epochs[0]) == set(epochs[1])
    assert sum(epochs[0][k] != epochs[1][k] for k in epochs[0]) >= len(epochs[0]) // 3
    assert all("drone" in c.lower() for e in epochs for c in e.values())  # genre always kept


def test_resampled_mode_has_a_fixed_epoch_length(shards, monkeypatch):
    dm = AudioDataModule(train_shards=str(shards), sample_size=1024, batch_size=2, num_workers=0, resampled=True,
                         epoch_length=7)
    loader = dm.train_dataloader()
    assert len(loader) == 7 and len(list(loader)) == 7
    ds = dm.stream("train", rank=1, world_size=2)
    counts = [len(_ids(ds, 1, 2, w, 2, monkeypatch)) for w in range(2)]
    assert sum(counts) == 7 * 2  # 7 batches of 2 per rank, split over its workers


def test_shard_specs_expand_braces_globs_folders_and_remote(shards):
    names = sorted(p.name for p in shards.glob("train-*.tar"))
    last = len(names) - 1
    assert expand_shards(str(shards / f"train-{{000000..{last:06d}}}.tar")) == [str(shards / n) for n in names]
    assert expand_shards(str(shards)) == expand_shards(str(shards / "train-*.tar"))
    assert expand_shards("s3://bucket/a-{0..1}.tar") == ["pipe:aws s3 cp s3://bucket/a-0.tar -",
                                                         "pipe:aws s3 cp s3://bucket/a-1.tar -"]
    assert expand_shards("pipe:cat x.tar") == ["pipe:cat x.tar"]
    first = str(shards / names[0])
    local = AudioDataModule(val_shards=first, sample_size=512, batch_size=2, num_workers=0)
    piped = AudioDataModule(val_shards=[f"pipe:cat {first}"], sample_size=512, batch_size=2, num_workers=0)
    a, b = list(local.val_dataloader()), list(piped.val_dataloader())
    assert [x["id"] for x in a] == [x["id"] for x in b] and all(torch.equal(x["audio"], y["audio"]) for x, y in zip(a, b, strict=True))
    with pytest.raises(FileNotFoundError, match="nothing-here"):
        expand_shards(str(shards / "nothing-here-*.tar"))


def _signature(batches):
    return [(tuple(b["id"]), b["audio"].sum().item(), tuple(b["caption"])) for b in batches]


@pytest.mark.parametrize("workers", [0, 2])
def test_a_restored_stream_position_yields_exactly_the_rest_of_the_epoch(shards, workers):
    def make():
        return AudioDataModule(train_shards=str(shards), sample_size=2048, batch_size=2, num_workers=workers,
                               shuffle_buffer=4).train_dataloader()

    straight = make()
    epochs = [_signature(straight), _signature(straight)]
    assert len(epochs[0]) == len(straight) and epochs[0] != epochs[1]
    for cut in (1, 3):  # 3 with 2 workers: the resumed pass starts in the middle of a worker round
        first = make()
        it = iter(first)
        head = _signature([next(it) for _ in range(cut)])
        state = first.state_dict()
        assert state["ranks"][0]["consumed"] == cut
        resumed = make()
        resumed.load_state_dict(state)
        assert head + _signature(resumed) == epochs[0]
        assert _signature(resumed) == epochs[1]  # and the next epoch is the uninterrupted one's


def test_ranks_get_equal_batch_counts_from_uneven_shards_without_repeats(shards):
    dm = AudioDataModule(train_shards=str(shards), sample_size=1024, batch_size=2, num_workers=0, shuffle_buffer=1)
    per_rank = []
    for rank in range(3):
        ds = dm.stream("train", rank=rank, world_size=3)
        batches = list(ds)
        assert len(batches) == len(ds)
        per_rank.append([k for b in batches for k in b["id"]])
    assert [len(ids) for ids in per_rank] == [4, 4, 4]  # 12 samples in uneven shards: 4 each
    flat = [k for ids in per_rank for k in ids]
    assert len(flat) == len(set(flat)) == len(LENGTHS)  # nothing repeated, nothing left out
    # whole shards per rank would be uneven; the batch counts are still equalised (the smallest rank's)
    counts = dm._counts(expand_shards(str(shards)))
    assert len({sum(counts[r::3]) for r in range(3)}) > 1
    shard = AudioDataModule(train_shards=str(shards), sample_size=1024, batch_size=2, num_workers=0, split_mode="shard")
    lengths = [len(list(shard.stream("train", rank=r, world_size=3))) for r in range(3)]
    assert len(set(lengths)) == 1 and lengths[0] == min(sum(counts[r::3]) // 2 for r in range(3))


def test_a_position_from_another_layout_restarts_the_epoch_with_a_warning(shards, caplog):
    def make(batch_size):
        return AudioDataModule(train_shards=str(shards), sample_size=1024, batch_size=batch_size, num_workers=0,
                               shuffle_buffer=4).train_dataloader()

    first = make(2)
    it = iter(first)
    next(it)
    other = make(3)
    other.load_state_dict(first.state_dict())
    epoch = [k for b in other for k in b["id"]]
    assert "cannot resume at batch 1 of epoch 1" in caplog.text
    assert epoch == [k for b in make(3) for k in b["id"]]  # epoch 1 from its first batch


def test_remote_shards_under_ddp_need_an_epoch_length():
    dm = AudioDataModule(train_shards=["pipe:cat a.tar", "pipe:cat b.tar"], num_workers=0)
    with pytest.raises(ValueError, match="epoch_length"):
        dm.stream("train", rank=0, world_size=2)
    assert len(AudioDataModule(train_shards=["pipe:cat a.tar"], num_workers=0, epoch_length=5)
               .stream("train", rank=1, world_size=2)) == 5


def _tone(seconds: float, rate: int, noise: float = 0.0) -> np.ndarray:
    """A pure tone (libsndfile 1.2's MP3 decoder goes wrong after a seek on it) plus optional noise."""
    n = int(seconds * rate)
    x = 0.3 * np.sin(np.arange(n) * 0.05) + noise * np.random.default_rng(0).standard_normal(n)
    return np.stack([x, np.roll(x, 50)], 1).astype(np.float32)


@pytest.mark.parametrize("fmt,subtype,rate,ext", [("MP3", None, SR, "mp3"), ("OGG", "VORBIS", SR, "ogg"),
                                                  ("OGG", "OPUS", 48000, "opus"), ("FLAC", "PCM_16", SR, "flac"),
                                                  ("WAV", "PCM_16", SR, "wav")])
def test_training_crops_are_the_full_decode_at_that_place(fmt, subtype, rate, ext):
    """The crop a training step gets equals the whole member decoded and sliced at the drawn start, sample for
    sample, for every member format data_prep stores (MP3 and Opus are read whole: seeking there is not exact)."""
    buf = io.BytesIO()
    sf.write(buf, _tone(3.0, rate, noise=0.02 if subtype == "OPUS" else 0.0), rate, format=fmt, subtype=subtype)
    full = torch.from_numpy(sf.read(io.BytesIO(buf.getvalue()), dtype="float32", always_2d=True)[0].T.copy())
    size = 20000
    decoder = AudioDecoder(size, rate, 2, seed=0, fresh_captions=False)
    copy = {"sample_rate": rate, "stored": "copy", "num_samples": full.shape[-1]}  # data_prep's JSON of a copy
    for meta in ({"sample_rate": rate}, copy):  # MP3/Opus: decoded whole, or from the start to the crop's end
        sample = {"__key__": "k", ext: buf.getvalue(), "json": json.dumps(meta).encode()}
        for seed in range(20):  # Opus: seeds 13 and 16 land where a seek + read differs by 6e-8
            start = draw_start(full.shape[-1], size, random.Random(seed))
            example = decoder(sample, random.Random(seed), 0)
            assert example["real_samples"] == size and example["seconds_start"] == start // rate
            assert torch.equal(example["audio"], full[:, start : start + size]), (ext, seed, start, meta)


@pytest.fixture(scope="module")
def copied_mp3_shards(tmp_path_factory):
    """A real build with copied 44.1 kHz mp3 members: stereo, mono (readers duplicate it) and one above full scale."""
    root = tmp_path_factory.mktemp("copied")
    src = root / "src"
    src.mkdir()
    sf.write(src / "tone é.mp3", _tone(2.0, SR), SR, format="MP3")
    sf.write(src / "mono.mp3", _tone(1.0, SR)[:, 0], SR, format="MP3")
    loud = np.clip(np.random.default_rng(0).standard_normal((SR, 2)) * 0.6, -1, 1)
    sf.write(src / "loud.mp3", loud, SR, format="MP3")  # decodes above full scale: readers clip it
    for name in ("tone é", "mono", "loud"):
        (src / f"{name}.json").write_text(json.dumps({"genre": "tone", "split": "train"}))
    manifest = build(read_folder(src), BuildSettings(out=root / "shards", jobs=1), [], {})
    assert manifest["stored"] == {"flac": 0, "copy": {"mp3": 3}}
    raw = sf.read(src / "loud.mp3", dtype="float32", always_2d=True)[0].T
    assert np.abs(raw).max() > 1.2
    return root, sf.read(src / "tone é.mp3", dtype="float32", always_2d=True)[0].T, np.clip(raw, -1, 1)


def test_a_copied_mp3_member_reads_through_the_datamodule_analysis_and_lafa_encode(copied_mp3_shards):
    from lafa.commands.analyze import read_clips
    from lafa.data.latent_shards import encode_corpus

    root, source, loud = copied_mp3_shards  # (2, S): the build's own decode of the files (loud: clipped)
    spec = str(root / "shards" / "train-*.tar")
    n = source.shape[-1]
    dm = AudioDataModule(val_shards=spec, train_shards=spec, sample_size=n + 1000, batch_size=3, num_workers=0)
    (batch,) = list(dm.val_dataloader())
    i = batch["id"].index(next(k for k in batch["id"] if "tone" in k))
    assert batch["metadata"][i]["stored"] == "copy" and int(batch["keep"][i].sum()) == n
    assert torch.equal(batch["audio"][i, :, :n], torch.from_numpy(source))  # the whole clip, exactly
    j = batch["id"].index(next(k for k in batch["id"] if "loud" in k))
    assert torch.equal(batch["audio"][j, :, : loud.shape[-1]], torch.from_numpy(loud))  # clipped to full scale
    dm = AudioDataModule(train_shards=spec, sample_size=4096, batch_size=1, num_workers=1, shuffle_buffer=0, seed=3)
    crops = [b["audio"][0].numpy() for b in dm.train_dataloader() if "tone" in b["id"][0]]
    assert len(crops) == 1  # a training crop, decoded in a worker: a slice of the same samples
    assert sum(np.array_equal(crops[0], source[:, s : s + 4096]) for s in range(n - 4095)) == 1
    clips = dict(read_clips(spec, 3, SR, 2, 30.0))  # `lafa analyze`'s reader
    assert torch.equal(next(v for k, v in clips.items() if "tone" in k), torch.from_numpy(source))
    assert torch.equal(next(v for k, v in clips.items() if "loud" in k), torch.from_numpy(loud))

    class Mean(torch.nn.Module):  # an Autoencoder-shaped encoder: the mean of each 256 samples
        sample_rate, io_channels, latent_dim, downsampling_ratio = SR, 2, 2, 256

        def encode(self, audio):
            return torch.nn.functional.avg_pool1d(audio, 256)

    (out,) = encode_corpus(Mean(), sorted(str(p) for p in (root / "shards").glob("*.tar")), root / "lat", batch_size=2).outputs
    with tarfile.open(out) as tar:
        names = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
    for name, audio in (("tone", source), ("loud", loud)):
        (key,) = [k[:-4] for k in names if k.endswith(".npy") and name in k]
        latent = np.load(io.BytesIO(names[f"{key}.npy"]))
        frames = -(-audio.shape[-1] // 256)
        padded = np.pad(audio, ((0, 0), (0, frames * 256 - audio.shape[-1])))
        assert latent.shape == (2, frames) and np.allclose(latent, padded.reshape(2, frames, 256).mean(-1), atol=1e-6)
