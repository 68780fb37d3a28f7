"""`python -m data_prep build --folder` on a real fault folder: odd and non-Latin names, long paths, damaged
files, bad sidecars, unsupported formats. Every input ends in exactly one place (shards or the skip list)."""

import json
import os
import re
import shutil
import struct
import tarfile

import numpy as np
import pytest
import soundfile as sf

from data_prep.__main__ import main as data_prep_main
from data_prep.items import READABLE_BYTES, folder_item_id
from lafa.data import AudioDataModule

SR = 44100
LONG_DIR = "Some Artist With A Long Name/Greatest Hits Collection (2011 Remaster) [Deluxe Edition]"
LONG_FILE = "01 - The First Title Of This Rather Long Album (2011 Remaster) (Live At The Hall).wav"
GOOD = ["take1.wav", "take1.flac", "coded.mp3", "coded.ogg", "coded.opus", "a b.wav", "a-b.wav", "日本.wav",
        "中国.wav", "Ünïcödé ñame.flac", "संगीत.wav", f"{LONG_DIR}/{LONG_FILE}"]
LATIN1 = "caf\\xe9.wav"  # recorded as valid UTF-8 text, the undecodable byte shown as \xe9
SKIPPED = {  # relative path -> category
    "trunc.wav": "truncated", "trunc.flac": "truncated", "garbage.wav": "unreadable", "empty.wav": "empty",
    "silent.wav": "silent", "badside.wav": "bad sidecar", "listside.wav": "bad sidecar",
    "orphan.json": "orphan sidecar", "notes.txt": "not audio", "cover.jpg": "not audio",
    "song.wv": "unsupported format", "take1_copy.wav": "duplicate content", "nc.wav": "licence",
}


def _tone(seconds: float, hz: float) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (0.3 * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def _fault_folder(root):
    root.mkdir()
    (root / LONG_DIR).mkdir(parents=True)
    for i, rel in enumerate(GOOD):
        fmt = {".mp3": {"format": "MP3"}, ".opus": {"format": "OGG", "subtype": "OPUS"}}.get(rel[rel.rfind("."):], {})
        sf.write(root / rel, _tone(1.0 + 0.1 * i, 200 + 40 * i), 48000 if "opus" in rel else SR, **fmt)
    for name in ("trunc.wav", "trunc.flac"):
        sf.write(root / "full.tmp", _tone(3.0, 330), SR, format=name[-4:].upper().strip("."))
        data = (root / "full.tmp").read_bytes()
        (root / name).write_bytes(data[: len(data) // 2])  # a cut-off download
    (root / "full.tmp").unlink()
    (root / "garbage.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunkjunkjunkjunk")
    (root / "empty.wav").write_bytes(b"")
    sf.write(root / "silent.wav", np.zeros(SR, np.float32), SR)
    for name, text in (("badside", '{"genre": "rock", "license": "CC0",'), ("listside", "[1, 2]")):
        sf.write(root / f"{name}.wav", _tone(1.0, 500), SR)
        (root / f"{name}.json").write_text(text)
    (root / "orphan.json").write_text(json.dumps({"genre": "jazz"}))
    (root / "notes.txt").write_text("recorded in March")
    (root / "cover.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"\0" * 64)
    wv = b"wvpk" + struct.pack("<IHBBIIIII", 24, 0x410, 0, 0, SR, 0, SR, (9 << 23) | 2, 0)
    (root / "song.wv").write_bytes(wv + b"\0" * 64)
    shutil.copy(root / "take1.wav", root / "take1_copy.wav")
    sf.write(root / "nc.wav", _tone(1.0, 700), SR)
    (root / "nc.wav.json").write_text(json.dumps({"license": "CC-BY-NC-4.0"}))
    (root / "meta.csv").write_text("file,genre\n" + "".join(f"{rel},folk\n" for rel in GOOD))
    sf.write(root / "latin1.tmp", _tone(1.0, 900), SR, format="WAV")
    os.rename(root / "latin1.tmp", os.path.join(os.fsencode(root), b"caf\xe9.wav"))  # a Latin-1 name: not UTF-8


def _members(out):
    metas = {}
    for tar_path in sorted(out.glob("*-*.tar")):
        with tarfile.open(tar_path) as tar:
            for m in tar.getmembers():
                assert len(m.name.encode()) <= 100  # USTAR names: no tar writer can refuse them
                if m.name.endswith(".json"):
                    metas[m.name[:-5]] = json.loads(tar.extractfile(m).read())
    return metas


def test_fault_folder_every_input_in_exactly_one_place(tmp_path, capsys):
    _fault_folder(tmp_path / "src")
    out = tmp_path / "shards"
    rc = data_prep_main(["build", "--out", str(out), "--folder", str(tmp_path / "src"), "--keep_unlicensed",
                         "--chunk_seconds", "30", "--jobs", "1", "--val_fraction", "0", "--test_fraction", "0"])
    assert rc == 0
    manifest = json.loads((out / "manifest.json").read_text())
    # the three sidecars that belong to audio and the CSV table are metadata; everything else is an input
    assert manifest["files_listed"] == len(GOOD) + 1 + len(SKIPPED)
    assert manifest["files_kept"] == len(GOOD) + 1 and manifest["files_skipped"] == len(SKIPPED)
    assert manifest["files_kept"] + manifest["files_skipped"] == manifest["files_listed"]
    assert {s["path"]: s["category"] for s in manifest["skipped"]} == SKIPPED
    assert manifest["skipped_by_category"] == {c: list(SKIPPED.values()).count(c) for c in set(SKIPPED.values())}

    metas = _members(out)
    assert sorted(m["path"] for m in metas.values()) == sorted(GOOD + [LATIN1])  # one chunk each, paths as laid out
    assert len({m["id"] for m in metas.values()}) == len(GOOD) + 1  # no collisions: take1.wav/.flac, 日本/中国, a b/a-b
    by_path = {m["path"]: m for m in metas.values()}
    assert by_path["日本.wav"]["id"].startswith("日本_wav_") and by_path["中国.wav"]["id"].startswith("中国_wav_")
    assert by_path["take1.flac"]["id"].startswith("take1_flac_") and by_path["a b.wav"]["id"].startswith("a-b_wav_")
    assert all(m["metadata"]["genre"] == "folk" for m in metas.values() if m["path"] != LATIN1)  # CSV rows by path
    long_meta = by_path[f"{LONG_DIR}/{LONG_FILE}"]
    assert long_meta["total_samples"] == int((1.0 + 0.1 * (len(GOOD) - 1)) * SR)

    reasons = {s["path"]: s["reason"] for s in manifest["skipped"]}
    assert "header declares 3.00 s, only 1.50 s decode" in reasons["trunc.wav"]  # not a silently shorter clip
    assert "partly decodable" in reasons["trunc.flac"] and "of 3.00 s decoded" in reasons["trunc.flac"]
    assert "malformed sidecar badside.json" in reasons["badside.wav"]
    assert "not an object" in reasons["listside.wav"]
    assert "WavPack" in reasons["song.wv"] and "FLAC" in reasons["song.wv"]
    assert "duplicate content" in reasons["take1_copy.wav"]
    assert "CC-BY-NC" in reasons["nc.wav"]

    table = capsys.readouterr().out  # the summary: label, count, details
    rows = {m.group(1): int(m.group(2)) for line in table.splitlines()
            if (m := re.match(r"\s*(\S.*?)\s{2,}(\d+)\b", line))}
    assert rows["inputs listed"] == len(GOOD) + 1 + len(SKIPPED)
    assert rows["-> train"] == len(GOOD) + 1 and rows["-> skipped"] == len(SKIPPED)
    assert {c: rows[c] for c in manifest["skipped_by_category"]} == manifest["skipped_by_category"]

    # the loader reads every chunk, whatever the script or length of its name
    dm = AudioDataModule(train_shards=str(out / "train-*.tar"), val_shards=str(out / "train-*.tar"),
                         sample_size=4096, batch_size=4, num_workers=0)
    keys = [k for batch in dm.val_dataloader() for k in batch["id"]]
    assert sorted(keys) == sorted(metas)


def test_nothing_passing_the_filters_fails_loudly(tmp_path, capsys):
    src = tmp_path / "src"
    src.mkdir()
    for name in ("one.wav", "two.wav"):
        sf.write(src / name, _tone(1.0, 440), SR)  # no licence anywhere
    (src / "three.wav").write_bytes(b"not audio at all")
    (src / "three.json").write_text(json.dumps({"license": "CC0"}))  # passes the licence filter, not the decoder
    rc = data_prep_main(["build", "--out", str(tmp_path / "out"), "--folder", str(src), "--jobs", "1"])
    assert rc == 1
    err = capsys.readouterr().err
    assert "no input passed the filters" in err and "licence: 2, unreadable: 1" in err and "3 listed" in err
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())  # the reasons are kept
    assert manifest["files_kept"] == 0 and len(manifest["skipped"]) == 3
    assert "--keep_unlicensed" in next(s["reason"] for s in manifest["skipped"] if s["path"] == "one.wav")


def test_bad_arguments_are_one_line(tmp_path, capsys):
    (tmp_path / "src").mkdir()
    sf.write(tmp_path / "src" / "x.wav", _tone(1.0, 440), SR)
    rc = data_prep_main(["build", "--out", str(tmp_path / "out"), "--folder", str(tmp_path / "src"),
                         "--licenses", "CC-BY", "Freeware"])
    assert rc == 2 and "unknown licence class 'Freeware'" in capsys.readouterr().err


@pytest.mark.parametrize("a, b", [("日本.wav", "中国.wav"), ("take1.wav", "take1.flac"), ("a b.wav", "a-b.wav"),
                                  ("x/y.wav", "x_y.wav"), ("Café.wav", "Cafe\u0301.wav")])
def test_ids_of_distinct_paths_differ(a, b):
    assert folder_item_id(a) != folder_item_id(b)


def test_ids_keep_the_readable_part_and_stay_short():
    long = f"{LONG_DIR}/{LONG_FILE}"
    item_id = folder_item_id(long)
    readable = item_id.rsplit("_", 2)[0]
    assert len(readable.encode()) <= READABLE_BYTES and long.endswith(".wav") and "_wav_" in item_id
    assert readable.endswith("Live-At-The-Hall")  # the end of the name, which says the most
    assert "." not in item_id and "/" not in item_id and folder_item_id(long) == item_id  # stable
    assert folder_item_id("音楽/日本語の曲.wav").startswith("音楽_日本語の曲_wav_")
