"""member_format "wav": converted chunks stored as PCM WAV instead of FLAC. The WAV members hold the very integers
the FLAC build stores (checked by decoding both), load through the training decoder to the same tensors, are
planned at their exact size, and a rebuild in another member format rewrites every shard. Also the integer path
for long 16-bit sources: their chunks are the source's own samples, and silent chunks are found at the float
decode's levels. Built from sources that each need a different conversion (48 kHz mp3 and wav, 24-bit, mono
22.05 kHz, a 70 s wav with a silent middle), beside a copied mp3."""

import io
import json
import math
import random

import numpy as np
import pytest
import soundfile as sf
from source_files import SR, shard_members
from source_files import music as _music
from source_files import write_source as _write

from data_prep.__main__ import main as data_prep_main
from data_prep.plan import MEMBER_OVERHEAD, file_header
from data_prep.process import ChunkSettings
from data_prep.shards import BuildSettings, build
from data_prep.sources import read_folder
from lafa.data.datamodule import AudioDecoder
from lafa.errors import BadInput


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    src = tmp_path_factory.mktemp("src")
    _write(src, "rate48k.mp3", _music(1.2, rate=48000, seed=1), rate=48000, format="MP3")
    _write(src, "rate48k.wav", _music(1.0, rate=48000, seed=2), rate=48000, subtype="PCM_16")
    _write(src, "deep.wav", _music(1.0, seed=3), subtype="PCM_24")
    _write(src, "mono22k.wav", _music(1.5, channels=1, rate=22050, seed=4), rate=22050, subtype="PCM_16")
    long = _music(70.0, seed=5)
    long[30 * SR : 60 * SR] *= 1e-4  # chunk 1 peaks near -71 dBFS: dropped as silent
    _write(src, "long.wav", long, subtype="PCM_16")
    _write(src, "copied.mp3", _music(1.0, seed=6), format="MP3")  # needs no change: stored as it is either way
    return src


def _audio_members(members) -> dict[str, tuple[str, bytes, dict]]:
    """key -> (audio extension, audio bytes, JSON)."""
    out = {}
    for name, data in members.items():
        if name.endswith(".json"):
            meta = json.loads(data)
            (audio,) = [n for n in members if n.startswith(meta["key"] + ".") and not n.endswith(".json")]
            out[meta["key"]] = (audio.split(".", 1)[1], members[audio], meta)
    return out


def _build(corpus, out, fmt, **kw):
    chunk = ChunkSettings(member_format=fmt)
    return build(read_folder(corpus), BuildSettings(out=out, chunk=chunk, shard_bytes=10**8, jobs=1, **kw), [], {})


@pytest.fixture(scope="module")
def builds(corpus, tmp_path_factory):
    return {fmt: (out, _build(corpus, out, fmt)) for fmt in ("flac", "wav")
            for out in [tmp_path_factory.mktemp(f"shards_{fmt}")]}


def test_wav_members_hold_the_integers_the_flac_build_stores(builds):
    flac = _audio_members(shard_members(builds["flac"][0]))
    wav = _audio_members(shard_members(builds["wav"][0]))
    assert flac.keys() == wav.keys() and len(flac) == 4 + 2 + 1  # long.wav: chunks 0 and 2
    for key, (ext, data, meta) in wav.items():
        flac_ext, flac_data, flac_meta = flac[key]
        if meta["path"] == "copied.mp3":
            assert (ext, meta["stored"]) == (flac_ext, flac_meta["stored"]) == ("mp3", "copy")
            assert data == flac_data
            continue
        assert (ext, meta["stored"], flac_ext, flac_meta["stored"]) == ("wav", "wav", "flac", "flac")
        info = sf.info(io.BytesIO(data))
        assert (info.format, info.subtype, info.samplerate, info.channels) == ("WAV", "PCM_16", SR, 2)
        ints = sf.read(io.BytesIO(data), dtype="int16")[0]
        assert np.array_equal(ints, sf.read(io.BytesIO(flac_data), dtype="int16")[0]), key
        assert len(data) == 44 + ints.size * 2  # canonical header + PCM: nothing else in the member
        assert {k: v for k, v in meta.items() if k != "stored"} == {k: v for k, v in flac_meta.items() if k != "stored"}
    assert builds["wav"][1]["stored"] == {"wav": 6, "copy": {"mp3": 1}}
    assert builds["flac"][1]["stored"] == {"flac": 6, "copy": {"mp3": 1}}


def test_wav_members_load_to_the_same_training_crops_as_flac(builds):
    flac = _audio_members(shard_members(builds["flac"][0]))
    wav = _audio_members(shard_members(builds["wav"][0]))
    decoder = AudioDecoder(sample_size=30000, sample_rate=SR, channels=2, seed=0, fresh_captions=False)
    for key in flac:
        for seed in range(3):
            got = [decoder({"__key__": key, m[key][0]: m[key][1], "json": json.dumps(m[key][2]).encode()},
                           random.Random(seed), 0) for m in (flac, wav)]
            assert got[0]["audio"].equal(got[1]["audio"]) and got[0]["keep"].equal(got[1]["keep"])
            assert got[0]["seconds_start"] == got[1]["seconds_start"]


def test_long_16bit_source_is_cut_as_its_integers_and_silence_found_at_float_levels(corpus, builds):
    source = sf.read(corpus / "long.wav", dtype="int16")[0]  # (S, 2)
    for fmt in ("flac", "wav"):
        out, manifest = builds[fmt]
        chunks = {m[2]["offset_samples"] // (30 * SR): m for m in _audio_members(shard_members(out)).values()
                  if m[2]["path"] == "long.wav"}
        assert sorted(chunks) == [0, 2]  # keys number the kept chunks; offsets say where they are
        for i, (_, data, meta) in chunks.items():
            assert meta["offset_samples"] == i * 30 * SR and meta["total_samples"] == 70 * SR
            stored = sf.read(io.BytesIO(data), dtype="int16")[0]
            assert np.array_equal(stored, source[i * 30 * SR : (i + 1) * 30 * SR]), (fmt, i)
        (dropped,) = manifest["dropped_chunks"]  # long.wav's middle: the only silent chunk
        peak = np.abs(source[30 * SR : 60 * SR].astype(np.float64)).max() / 32768  # the float decode's peak
        assert dropped["reason"] == f"chunk 1 (30.0-60.0 s) silent: peak {20 * math.log10(peak):.1f} dBFS"


def test_wav_members_are_planned_at_their_exact_size(corpus, builds):
    members = _audio_members(shard_members(builds["wav"][0]))
    wav_chunk = ChunkSettings(member_format="wav")
    for item in read_folder(corpus):
        mine = [m for m in members.values() if m[2]["path"] == item.path.name]
        if item.path.name in ("copied.mp3", "long.wav"):  # a copy's size; long.wav: a dropped chunk
            continue
        est = file_header(item, wav_chunk)["est_bytes"]
        actual = sum(len(m[1]) for m in mine) + len(mine) * MEMBER_OVERHEAD
        assert est == pytest.approx(actual, abs=8), item.path.name  # resampled lengths round up by < 1 sample
    (long,) = [it for it in read_folder(corpus) if it.path.name == "long.wav"]
    assert file_header(long, wav_chunk)["est_bytes"] == 70 * SR * 4 + 3 * (MEMBER_OVERHEAD + 44)


def test_a_rebuild_in_the_other_member_format_rewrites_every_shard(corpus, tmp_path):
    _build(corpus, tmp_path, "flac")
    assert any(n.endswith(".flac") for n in shard_members(tmp_path))
    with pytest.raises(BadInput, match="member_format: flac there, wav here"):  # another build (build_record)
        _build(corpus, tmp_path, "wav")
    manifest = _build(corpus, tmp_path, "wav", overwrite=True)  # same folder: the FLAC shards must not be kept
    exts = {n.split(".", 1)[1] for n in shard_members(tmp_path)}
    assert exts == {"wav", "mp3", "json"} and manifest["settings"]["member_format"] == "wav"


def test_cli_member_format_and_its_refusals(corpus, tmp_path, capsys):
    assert data_prep_main(["build", "--folder", str(corpus), "--out", str(tmp_path), "--jobs", "1",
                           "--member_format", "wav", "--keep_unlicensed"]) == 0
    printed = capsys.readouterr().out
    assert "chunks encoded to WAV" in printed and "chunks encoded to FLAC" not in printed
    assert json.loads((tmp_path / "manifest.json").read_text())["stored"]["wav"] == 6
    with pytest.raises(SystemExit) as exc:
        data_prep_main(["build", "--folder", str(corpus), "--out", str(tmp_path), "--member_format", "ogg"])
    assert exc.value.code == 2
    with pytest.raises(ValueError, match="member_format 'ogg'"):
        ChunkSettings(member_format="ogg")
