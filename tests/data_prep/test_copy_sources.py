"""Sources that need no change are stored as they are (mp3, ogg, opus, wav, flac), tags stripped where safe, and
decode to the samples the build validated; everything else is re-encoded to FLAC as before. Built from awkward
inputs: an ID3v2 tag with a large picture (+ APEv2 + ID3v1), a RIFF INFO chunk, mono, 48 kHz, 24-bit, a
truncated mp3, a 70 s wav, odd file names."""

import io
import json
import os

import numpy as np
import pytest
import soundfile as sf
import torch
from mutagen.apev2 import APEv2
from mutagen.id3 import APIC, ID3, TIT2
from source_files import SR, shard_members
from source_files import music as _music
from source_files import write_source as _write

from data_prep.__main__ import main as data_prep_main
from data_prep.passthrough import mp3_passthrough, wav_passthrough
from data_prep.plan import MEMBER_OVERHEAD, file_header
from data_prep.process import ChunkSettings
from data_prep.shards import BuildSettings, build
from data_prep.sources import read_folder
from data_prep.summary import summary_table
from lafa.data.datamodule import AudioDecoder

PICTURE = 300_000  # bytes of cover art in the ID3v2 tag


def _tag_mp3(path):
    ape = APEv2()
    ape["Comment"] = "an APEv2 tag before the ID3v1 one"
    ape.save(path)
    tags = ID3()
    tags.add(TIT2(encoding=3, text="ünï title"))
    tags.add(APIC(encoding=3, mime="image/png", type=3, desc="cover", data=os.urandom(PICTURE)))
    tags.save(path, v1=2)  # ID3v2 in front, ID3v1 "TAG" at the very end


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    src = tmp_path_factory.mktemp("src")
    _tag_mp3(_write(src, "ünï cøde — tagged [live].mp3", _music(1.5), format="MP3"))
    _write(src, "plain.mp3", _music(1.2, seed=1), format="MP3")
    _write(src, "mono.mp3", _music(1.0, channels=1, seed=2), format="MP3")  # mono: copied, readers duplicate it
    _write(src, "mono.wav", _music(1.0, channels=1, seed=12), subtype="PCM_16")  # FSD50K-like mono 16-bit wav
    cut = _write(src, "cut.mp3", _music(2.0, seed=3), format="MP3")
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 2])  # truncated: skipped, never copied
    _write(src, "vorbis.ogg", _music(1.3, seed=4), format="OGG", subtype="VORBIS")
    _write(src, "vorbis48k.ogg", _music(1.0, rate=48000, seed=5), rate=48000, format="OGG", subtype="VORBIS")
    with sf.SoundFile(src / "info chunk.wav", "w", SR, 2, subtype="PCM_16", format="WAV") as f:
        f.title = "a RIFF INFO title"  # a LIST/INFO chunk the copy drops
        f.write(_music(1.1, seed=6))
    (src / "info chunk.json").write_text(json.dumps({"genre": "test", "split": "train"}))
    _write(src, "deep.wav", _music(1.0, seed=7), subtype="PCM_24")  # 24-bit, shards are 16-bit: re-encoded
    _write(src, "long.wav", _music(70.0, seed=8), subtype="PCM_16")  # 3 chunks of 30 s (the last 10 s): re-encoded
    _write(src, "lossless.flac", _music(1.0, seed=9), subtype="PCM_16")  # the FLAC rule, unchanged
    # copy candidates checked on their integers (decode(int16=True)) are still skipped as before
    _write(src, "quiet.wav", _music(1.0, seed=10) * 1e-3, subtype="PCM_16")  # peak about -66 dBFS: silent
    cut = _write(src, "cut.wav", _music(1.0, seed=11), subtype="PCM_16")
    cut.write_bytes(cut.read_bytes()[:-40000])  # data chunk shorter than its header says: truncated
    return src


def _members(out) -> dict[str, bytes]:
    return shard_members(out, "train-*.tar")


def _by_file(members) -> dict[str, dict]:
    """Source path -> {ext: the audio member's extensions, json: its chunks' JSON}."""
    out: dict[str, dict] = {}
    for name, data in members.items():
        if name.endswith(".json"):
            meta = json.loads(data)
            entry = out.setdefault(meta["path"], {"exts": [], "json": [], "audio": []})
            entry["json"].append(meta)
            (audio_name,) = [n for n in members if n.startswith(meta["key"] + ".") and not n.endswith(".json")]
            entry["exts"].append(audio_name.split(".", 1)[1])
            entry["audio"].append(members[audio_name])
    return out


def _pcm(data_or_path) -> np.ndarray:
    src = io.BytesIO(data_or_path) if isinstance(data_or_path, bytes) else data_or_path
    return sf.read(src, dtype="float32", always_2d=True)[0]


@pytest.fixture(scope="module")
def built(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("shards")
    manifest = build(read_folder(corpus), BuildSettings(out=out, shard_bytes=10**8, jobs=1), [], {})
    return out, manifest


def test_sources_needing_no_change_are_stored_as_they_are(corpus, built):
    out, manifest = built
    files = _by_file(_members(out))
    assert {p: v["exts"] for p, v in files.items()} == {
        "ünï cøde — tagged [live].mp3": ["mp3"], "plain.mp3": ["mp3"], "vorbis.ogg": ["ogg"],
        "info chunk.wav": ["wav"], "lossless.flac": ["flac"], "mono.mp3": ["mp3"], "mono.wav": ["wav"],
        "vorbis48k.ogg": ["flac"], "deep.wav": ["flac"], "long.wav": ["flac"] * 3}
    copied = {"ünï cøde — tagged [live].mp3", "plain.mp3", "vorbis.ogg", "info chunk.wav", "lossless.flac",
              "mono.mp3", "mono.wav"}
    assert {p: [m["stored"] for m in v["json"]] for p, v in files.items()} == {
        p: ["copy"] if p in copied else ["flac"] * len(v["exts"]) for p, v in files.items()}
    skipped = {s["path"]: (s["category"], s["reason"]) for s in manifest["skipped"]}
    assert skipped.keys() == {"cut.mp3", "cut.wav", "quiet.wav"}
    assert skipped["cut.mp3"][0] == skipped["cut.wav"][0] == "truncated"
    assert skipped["quiet.wav"][0] == "silent" and skipped["quiet.wav"][1].startswith("silent: peak -6")
    assert manifest["stored"] == {"flac": 1 + 1 + 3, "copy": {"flac": 1, "mp3": 3, "ogg": 1, "wav": 2}}
    assert [m["stored_channels"] for m in files["mono.wav"]["json"]] == [1]
    assert [m["stored_channels"] for m in files["deep.wav"]["json"]] == [2]
    table = summary_table(manifest, out).splitlines()
    assert any(line.startswith("chunks encoded to FLAC") and line.split()[-1] == "5" for line in table)
    (row,) = [line for line in table if line.startswith("chunks stored as-is")]
    assert row.split()[3:12] == ["7", "flac", "1,", "mp3", "3,", "ogg", "1,", "wav", "2:"]


def test_copies_decode_to_the_samples_the_build_validated(corpus, built):
    out, _ = built
    files = _by_file(_members(out))
    for name in ("ünï cøde — tagged [live].mp3", "plain.mp3", "vorbis.ogg", "info chunk.wav", "lossless.flac",
                 "mono.mp3", "mono.wav"):
        (stored,) = files[name]["audio"]
        source = (corpus / name).read_bytes()
        assert np.array_equal(_pcm(stored), _pcm(corpus / name)), name  # the same decoder output, sample for sample
        meta = files[name]["json"][0]
        assert meta["num_samples"] == meta["total_samples"] == len(_pcm(stored)) and meta["num_chunks"] == 1
        if name in ("plain.mp3", "vorbis.ogg"):
            assert stored == source  # nothing to strip (Ogg tags are kept in any case)
    tagged = files["ünï cøde — tagged [live].mp3"]["audio"][0]
    source = (corpus / "ünï cøde — tagged [live].mp3").read_bytes()
    assert source[:3] == b"ID3" and source[-128:-125] == b"TAG" and b"APETAGEX" in source
    assert tagged[0] == 0xFF and tagged[1] & 0xE0 == 0xE0  # starts at the first MPEG frame
    assert b"APETAGEX" not in tagged and tagged[-128:-125] != b"TAG" and len(tagged) < len(source) - PICTURE
    assert tagged in source  # a slice of the source: the audio frames untouched
    long = np.concatenate([_pcm(a) for a in files["long.wav"]["audio"]])  # checked as int16, split as float
    assert np.array_equal(long, _pcm(corpus / "long.wav"))  # 16-bit FLAC chunks: exactly the source's samples
    wav = files["info chunk.wav"]["audio"][0]
    assert b"LIST" in (corpus / "info chunk.wav").read_bytes() and b"LIST" not in wav and b"INFO" not in wav
    assert len(wav) == 44 + len(_pcm(wav)) * 4  # RIFF + fmt + data headers, 16-bit stereo samples


def test_copied_lossy_audio_differs_from_a_flac_chunk_only_by_16_bit_rounding(tmp_path):
    """What training sees: a copied mp3/ogg is the decoder's float output clipped to full scale, a FLAC chunk
    the same rounded to 16 bits; a loud source whose decode exceeds full scale included."""
    src = tmp_path / "src"
    src.mkdir()
    loud = np.clip(np.random.default_rng(0).standard_normal((SR, 2)) * 0.6, -1, 1).astype(np.float32)
    _write(src, "loud.mp3", loud, format="MP3")
    _write(src, "loud.ogg", loud, format="OGG", subtype="VORBIS")
    _write(src, "plain.mp3", _music(1.2, seed=1), format="MP3")
    assert all(np.abs(_pcm(src / n)).max() > 1.2 for n in ("loud.mp3", "loud.ogg"))  # overs in the decode
    copy = build(read_folder(src), BuildSettings(out=tmp_path / "copy", jobs=1), [], {})
    flac = build(read_folder(src), BuildSettings(out=tmp_path / "flac", jobs=1, chunk=ChunkSettings(copy_sources=False)),
                 [], {})
    assert copy["stored"] == {"flac": 0, "copy": {"mp3": 2, "ogg": 1}} and flac["stored"] == {"flac": 3, "copy": {}}
    decoder = AudioDecoder(2 * SR, SR, 2, seed=0, fresh_captions=False)

    def loaded(out):  # path -> (2, S) real audio as the AudioDataModule gives it
        samples: dict[str, dict] = {}
        for name, data in _members(out).items():
            key, ext = name.split(".", 1)
            samples.setdefault(key, {"__key__": key})[ext] = data
        return {json.loads(s["json"])["path"]: (lambda e: e["audio"][:, : e["real_samples"]])(decoder(s, None, 0))
                for s in samples.values()}

    a, b = loaded(tmp_path / "copy"), loaded(tmp_path / "flac")
    for name in ("loud.mp3", "loud.ogg", "plain.mp3"):
        diff = (a[name] - b[name]).abs()
        assert a[name].shape == b[name].shape and 0 < float(diff.max()) <= 1 / 32768, name
        assert float(a[name].abs().max()) <= 1.0  # clipped as the FLAC path clips


def test_the_planner_sizes_a_copy_exactly(corpus, built):
    out, _ = built
    members = _members(out)
    items = {it.rel: it for it in read_folder(corpus)}
    for name, ext in (("ünï cøde — tagged [live].mp3", "mp3"), ("info chunk.wav", "wav"), ("vorbis.ogg", "ogg")):
        head = file_header(items[name], ChunkSettings())
        meta = next(json.loads(d) for n, d in members.items() if n.endswith(".json") and json.loads(d)["path"] == name)
        assert head["est_bytes"] == len(members[f"{meta['key']}.{ext}"]) + MEMBER_OVERHEAD


def test_the_cli_flag_turns_copying_off(corpus, tmp_path, capsys):
    assert data_prep_main(["build", "--out", str(tmp_path), "--folder", str(corpus), "--jobs", "1",
                           "--keep_unlicensed", "--no_copy"]) == 0
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["stored"] == {"flac": 12, "copy": {}} and manifest["settings"]["copy_sources"] is False
    assert {n.rsplit(".", 1)[1] for n in _members(tmp_path)} == {"flac", "json"}


def test_opus_is_copied_when_the_shard_rate_is_its_own(tmp_path):
    """libsndfile decodes Opus at 48 kHz: copied only into 48 kHz shards (44.1 kHz ones re-encode it)."""
    src = tmp_path / "src"
    src.mkdir()
    _write(src, "voice.opus", _music(1.0, rate=48000), rate=48000, format="OGG", subtype="OPUS")
    for rate, ext in ((48000, "opus"), (SR, "flac")):
        out = tmp_path / str(rate)
        manifest = build(read_folder(src), BuildSettings(out=out, jobs=1, chunk=ChunkSettings(sample_rate=rate)), [], {})
        (entry,) = _by_file(_members(out)).values()
        assert entry["exts"] == [ext] and manifest["files_kept"] == 1
    assert entry["json"][0]["stored"] == "flac"
    (stored,) = _by_file(_members(tmp_path / "48000")).values()
    assert stored["audio"][0] == (src / "voice.opus").read_bytes() and stored["json"][0]["stored"] == "copy"


def _id3v24(frames: bytes, footer: bool) -> bytes:
    size = len(frames)
    syncsafe = bytes([(size >> 21) & 127, (size >> 14) & 127, (size >> 7) & 127, size & 127])
    head = b"ID3\x04\x00" + bytes([0x10 if footer else 0]) + syncsafe
    return head + frames + (b"3DI\x04\x00\x10" + syncsafe if footer else b"")


def test_tag_stripping_keeps_the_decoded_samples_and_refuses_what_it_does_not_understand(tmp_path):
    buf = io.BytesIO()
    sf.write(buf, _music(0.5), SR, format="MP3")
    mp3 = buf.getvalue()
    frame = b"TIT2" + (7).to_bytes(4, "big") + b"\x00\x00" + b"\x03ttitle"
    for tagged in (_id3v24(frame, False) + mp3, _id3v24(frame, False) + _id3v24(frame, False) + mp3,
                   mp3 + b"TAG" + bytes(125)):
        assert mp3_passthrough(tagged) == mp3
        assert np.array_equal(_pcm(tagged), _pcm(mp3))
    footer = _id3v24(frame, footer=True) + mp3  # parsed (+10 bytes), though libsndfile 1.2 refuses to open it
    assert mp3_passthrough(footer) == mp3 and mp3_passthrough(_id3v24(frame, False) + footer) == mp3
    with pytest.raises(sf.LibsndfileError):  # so the build skips such a file as unreadable: never copied
        _pcm(footer)
    bad_size = b"ID3\x04\x00\x00\x00\x00\x80\x00" + mp3  # not syncsafe
    assert mp3_passthrough(bad_size) == bad_size
    not_audio = _id3v24(frame, False) + b"junk" + mp3  # no frame sync after the tag: kept whole
    assert mp3_passthrough(not_audio) == not_audio
    s = ChunkSettings()
    buf = io.BytesIO()
    sf.write(buf, _music(0.2), SR, format="WAV", subtype="PCM_16")
    plain = buf.getvalue()
    n = len(_pcm(plain))
    assert wav_passthrough(plain, n, s) == plain  # already fmt + data only
    with_list = plain[:36] + b"LIST" + (5).to_bytes(4, "little") + b"INFOx\x00" + plain[36:]  # odd size + pad byte
    with_list = b"RIFF" + (len(with_list) - 8).to_bytes(4, "little") + with_list[8:]
    assert np.array_equal(_pcm(with_list), _pcm(plain)) and wav_passthrough(with_list, n, s) == plain
    assert wav_passthrough(plain[:-10], n, s) == plain[:-10]  # data chunk shorter than declared: unchanged
    assert wav_passthrough(plain, n - 1, s) == plain  # not the validated length: unchanged


def test_mono_copies_load_as_the_stereo_flac_the_build_would_write(corpus, built, tmp_path):
    """A mono source copied into stereo shards reaches training as the same stereo audio as its --no_copy FLAC
    chunk: both channels equal, samples equal exactly for 16-bit WAV, within 1/32768 for mp3 (the FLAC path rounds
    the decoder's floats to 16 bits)."""
    out, _ = built
    flac_out = tmp_path / "no_copy"
    build(read_folder(corpus), BuildSettings(out=flac_out, shard_bytes=10**8, jobs=1,
                                             chunk=ChunkSettings(copy_sources=False)), [], {})
    decoder = AudioDecoder(sample_size=SR, sample_rate=SR, channels=2, seed=0, fresh_captions=False)

    def load(shards, name):
        members = _members(shards)
        meta = next(json.loads(v) for k, v in members.items() if k.endswith(".json") and json.loads(v)["path"] == name)
        sample = {"__key__": meta["key"], "json": members[meta["key"] + ".json"],
                  **{k.split(".", 1)[1]: v for k, v in members.items() if k.startswith(meta["key"] + ".")}}
        return decoder(sample, None, 0)["audio"]  # (2, SR)

    for name, tol in (("mono.wav", 0.0), ("mono.mp3", 1 / 32768)):
        copied, encoded = load(out, name), load(flac_out, name)
        assert copied.shape == encoded.shape == (2, SR) and torch.equal(copied[0], copied[1])
        assert (copied - encoded).abs().max().item() <= tol, name
