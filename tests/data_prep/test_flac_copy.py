"""A 16-bit 44.1 kHz stereo FLAC source that is one whole chunk is copied into the shard (tags dropped), and the
copy decodes to exactly the samples the re-encoding path stores; anything else is still encoded."""

import io
import json
import tarfile

import numpy as np
import pytest
import soundfile as sf

from data_prep.passthrough import flac_passthrough
from data_prep.process import ChunkSettings
from data_prep.shards import BuildSettings, build
from data_prep.sources import read_folder

SR = 44100


def _signal(seconds: float, channels: int = 2, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    x = 0.3 * np.sin(2 * np.pi * 330 * t) + 0.05 * rng.standard_normal(len(t))
    return np.stack([x, np.roll(x, 50)][:channels], 1).astype(np.float32)


def _write(folder, name, audio, rate=SR, subtype="PCM_16", title=None):
    path = folder / name
    with sf.SoundFile(path, "w", rate, audio.shape[1], subtype=subtype, format="FLAC") as f:
        if title:
            f.title = title  # a VORBIS_COMMENT block the copy must not carry into the shard
        f.write(audio)
    (folder / f"{path.stem}.json").write_text(json.dumps({"genre": "test", "split": "train"}))
    return path


def _members(out) -> dict[str, bytes]:
    members = {}
    for tar_path in sorted(out.glob("train-*.tar")):
        with tarfile.open(tar_path) as tar:
            for m in tar.getmembers():
                if m.name.endswith(".flac"):
                    members[m.name] = tar.extractfile(m).read()
    return members


def _blocks(data: bytes) -> list[int]:
    """Metadata block types of a FLAC stream."""
    pos, kinds, last = 4, [], False
    while not last:
        last, kind = bool(data[pos] & 0x80), data[pos] & 0x7F
        kinds.append(kind)
        pos += 4 + int.from_bytes(data[pos + 1 : pos + 4], "big")
    return kinds


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    src = tmp_path_factory.mktemp("src")
    _write(src, "a_tagged.flac", _signal(2.0), title="a title with ünïcode")  # one chunk: copied
    _write(src, "b_long.flac", _signal(5.0, seed=1))  # 3 chunks of 2 s: encoded
    _write(src, "c_mono.flac", _signal(1.5, channels=1, seed=2))  # mono: copied (readers duplicate it)
    _write(src, "d_24bit.flac", _signal(1.5, seed=3), subtype="PCM_24")  # needs 16 bit: encoded
    _write(src, "e_48k.flac", _signal(1.5, seed=4), rate=48000)  # needs resampling: encoded
    return src


def _build(src, out, copy):
    chunk = ChunkSettings(chunk_seconds=2.0, min_tail_seconds=0.5, copy_sources=copy)
    return build(read_folder(src), BuildSettings(out=out, chunk=chunk, shard_bytes=10**8, jobs=1), [], {})


def test_copied_chunks_decode_to_the_encoded_samples(corpus, tmp_path):
    copied, encoded = _build(corpus, tmp_path / "copy", True), _build(corpus, tmp_path / "enc", False)
    assert copied["chunks"] == encoded["chunks"] == 1 + 3 + 1 + 1 + 1
    a, b = _members(tmp_path / "copy"), _members(tmp_path / "enc")
    assert a.keys() == b.keys()
    (key,) = [k for k in a if "a_tagged" in k]
    (mono,) = [k for k in a if "c_mono" in k]
    same_bytes = {k for k in a if a[k] == b[k]}
    assert same_bytes == set(a) - {key, mono}  # everything else is the encoder's output, unchanged
    source = (corpus / "a_tagged.flac").read_bytes()
    copy = a[key]
    assert copy != source and copy[-1000:] == source[-1000:]  # the source's audio frames, its tags dropped
    assert 4 in _blocks(source) and _blocks(copy) == [0]  # VORBIS_COMMENT gone, STREAMINFO kept
    for k in a:  # every chunk decodes to the same integers either way (the mono copy to both channels)
        x, sx = sf.read(io.BytesIO(a[k]), dtype="int16", always_2d=True)
        y, sy = sf.read(io.BytesIO(b[k]), dtype="int16", always_2d=True)
        assert sx == sy == SR and x.shape[1] == (1 if k == mono else 2) and np.array_equal(np.repeat(x, 2 // x.shape[1], 1), y)
    want, _ = sf.read(corpus / "a_tagged.flac", dtype="int16")
    assert np.array_equal(sf.read(io.BytesIO(copy), dtype="int16")[0], want)
    # a re-run is byte-identical (the copy is deterministic) and the two settings are separate plans
    again = _build(corpus, tmp_path / "copy2", True)
    assert again["chunks"] == copied["chunks"] and _members(tmp_path / "copy2") == a


def test_passthrough_refuses_what_it_cannot_vouch_for(tmp_path):
    path = _write(tmp_path, "x.flac", _signal(1.0))
    data = path.read_bytes()
    s = ChunkSettings()
    n = SR
    assert flac_passthrough(data, n, s) is not None
    assert flac_passthrough(data, n - 1, s) is None  # not the decoded length
    assert flac_passthrough(b"ID3\x03\x00\x00\x00\x00\x00\x00" + data, n, s) is None  # ID3 tag in front
    assert flac_passthrough(data[:20], n, s) is None  # cut inside the metadata
    assert flac_passthrough(data, n, ChunkSettings(flac_subtype="PCM_24")) is None
    deep = _write(tmp_path, "y.flac", _signal(1.0), subtype="PCM_24").read_bytes()  # 24-bit: copied into 24-bit shards
    assert flac_passthrough(deep, n, s) is None and flac_passthrough(deep, n, ChunkSettings(flac_subtype="PCM_24"))
    assert flac_passthrough(data, n, ChunkSettings(sample_rate=48000)) is None
    assert flac_passthrough((tmp_path / "x.json").read_bytes(), n, s) is None


def test_a_mono_copy_candidate_that_cannot_be_copied_is_encoded_as_stereo(tmp_path):
    """A mono FLAC with an ID3v2 tag in front of its stream (libsndfile reads it; the copy refuses it) is decoded
    mono as a copy candidate, then encoded: the member must be stereo, both channels the source's samples."""
    src = tmp_path / "src"
    src.mkdir()
    path = _write(src, "tagged_mono.flac", _signal(1.5, channels=1, seed=5))
    id3 = b"ID3\x03\x00\x00" + bytes([0, 0, 0, 10]) + b"TIT2" + (0).to_bytes(4, "big") + b"\x00\x00"  # 10-byte frame area
    path.write_bytes(id3 + path.read_bytes())
    want, _ = sf.read(path, dtype="int16", always_2d=True)
    assert want.shape[1] == 1 and flac_passthrough(path.read_bytes(), len(want), ChunkSettings()) is None
    manifest = build(read_folder(src), BuildSettings(out=tmp_path / "out", shard_bytes=10**8, jobs=1), [], {})
    assert manifest["stored"] == {"flac": 1, "copy": {}}
    (member,) = [v for k, v in _members(tmp_path / "out").items() if k.endswith(".flac")]
    got, sr = sf.read(io.BytesIO(member), dtype="int16", always_2d=True)
    assert sr == SR and got.shape == (len(want), 2) and np.array_equal(got, np.repeat(want, 2, 1))
