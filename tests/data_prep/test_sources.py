"""Metadata readers, licence normalisation and filtering, dedup by id."""

import csv
import json

import numpy as np
import soundfile as sf

from data_prep.sources import (
    Item,
    dedup_ids,
    license_class,
    license_filter,
    read_fma,
    read_folder,
    read_fsd,
    read_id_list,
)


def _wav(path, n=441):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.full(n, 0.1, np.float32), 44100)


FMA_TOP = ["", "album", "album", "artist", "set", "track", "track", "track", "track", "track"]
FMA_FIELDS = ["", "date_released", "title", "name", "split", "date_created", "genre_top", "genres", "license", "title"]
FMA_ROWS = [
    ["2", "2009-01-05 00:00:00", "AWOL - A Way Of Life", "AWOL", "training", "2008-11-26", "Hip-Hop", "[21]",
     "Attribution-NonCommercial-ShareAlike 3.0 International", "Food"],
    ["5", "", "Other Album", "Kurt", "test", "2010-03-01", "", "[12, 21]", "Attribution 4.0 International", "This World"],
    ["7", "", "No Audio", "Nobody", "training", "", "Rock", "[12]", "Attribution", "Missing"],
]


def _fma(tmp_path, three_rows):
    with open(tmp_path / "tracks.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(FMA_TOP)
        w.writerow(FMA_FIELDS)
        if three_rows:
            w.writerow(["track_id"] + [""] * (len(FMA_TOP) - 1))
        w.writerows(FMA_ROWS)
    with open(tmp_path / "genres.csv", "w", newline="") as f:
        f.write("genre_id,#tracks,parent,title,top_level\n12,100,0,Rock,12\n21,100,0,Hip-Hop,21\n")
    _wav(tmp_path / "fma" / "000" / "000002.wav")
    _wav(tmp_path / "fma" / "000" / "000005.wav")


def test_fma_reader_handles_three_and_two_row_headers(tmp_path):
    for three in (True, False):
        _fma(tmp_path, three)
        items = read_fma(tmp_path / "fma", tmp_path / "tracks.csv", tmp_path / "genres.csv")
        missing = [it for it in items if it.problem]
        assert [(it.id, it.category) for it in missing] == [("7", "missing audio")]  # listed, not dropped
        items = [it for it in items if not it.problem]
        assert [it.id for it in items] == ["2", "5"]  # track 7 has no audio
        a, b = items
        assert a.metadata == {"kind": "music", "title": "Food", "artist": "AWOL", "album": "AWOL - A Way Of Life",
                              "genre": "Hip-Hop", "year": "2009"}  # album release date before track upload date
        assert a.split == "train" and "NonCommercial" in a.license
        assert b.metadata["genre"] == "Rock, Hip-Hop" and b.metadata["year"] == "2010" and b.split == "test"


def test_fsd_reader_merges_csvs_and_clips_info_json(tmp_path):
    _wav(tmp_path / "audio" / "64760.wav")
    _wav(tmp_path / "audio" / "16399.wav")
    (tmp_path / "dev.csv").write_text("fname,labels,mids,split\n64760,\"Electric_guitar,Guitar\",/m/a,train\n"
                                      "16399,Bark,/m/b,val\n99999,Rain,/m/c,train\n")
    (tmp_path / "info.json").write_text(json.dumps({
        "64760": {"title": "guitar riff", "description": "A riff.", "tags": ["guitar"],
                  "license": "http://creativecommons.org/licenses/by/3.0/"},
        "16399": {"title": "bark", "description": "", "tags": [], "license": "http://creativecommons.org/licenses/by-nc/3.0/"}}))
    _wav(tmp_path / "audio" / "555.wav")  # in no table
    _wav(tmp_path / "audio" / "sub" / "64760.flac")  # a second file with id 64760
    items = read_fsd(tmp_path / "audio", [tmp_path / "dev.csv", tmp_path / "info.json"])
    problems = {(it.rel, it.category) for it in items if it.problem}
    assert problems == {("555.wav", "no metadata row"), ("sub/64760.flac", "duplicate id"), ("99999", "missing audio")}
    items = [it for it in items if not it.problem]
    assert [it.id for it in items] == ["16399", "64760"] and items[1].rel == "64760.wav"
    guitar = items[1]
    assert guitar.metadata["labels"] == "Electric_guitar,Guitar" and guitar.metadata["description"] == "A riff."
    assert guitar.split == "train" and items[0].split == "val"
    kept, rejected = license_filter(items, None)
    assert [it.id for it in kept] == ["64760"] and kept[0].license == "CC-BY"
    assert rejected[0]["id"] == "16399" and "CC-BY-NC" in rejected[0]["reason"]


def test_folder_reader_sidecars_and_csv(tmp_path):
    _wav(tmp_path / "a" / "one.wav")
    _wav(tmp_path / "two.flac")
    (tmp_path / "a" / "one.json").write_text(json.dumps({"genre": "ambient", "license": "CC0", "split": "val"}))
    (tmp_path / "meta.csv").write_text("file,genre,license\ntwo.flac,rock,cc-by\n")
    items = {it.rel: it for it in read_folder(tmp_path)}
    assert set(items) == {"a/one.wav", "two.flac"}  # the sidecar and the CSV table are metadata, not inputs
    assert items["a/one.wav"].id.startswith("a_one_wav_") and items["two.flac"].id.startswith("two_flac_")
    assert items["a/one.wav"].metadata == {"genre": "ambient", "kind": "music"} and items["a/one.wav"].split == "val"
    assert items["two.flac"].metadata == {"genre": "rock", "kind": "music"} and items["two.flac"].license == "cc-by"


def test_license_classes():
    cases = {
        "http://creativecommons.org/publicdomain/zero/1.0/": "CC0",
        "Creative Commons 0": "CC0",
        "http://creativecommons.org/licenses/by/4.0/": "CC-BY",
        "Attribution 4.0 International": "CC-BY",
        "http://creativecommons.org/licenses/sampling+/1.0/": "CC-Sampling+",
        "http://creativecommons.org/licenses/by-nc/3.0/": "CC-BY-NC",
        "Attribution-NonCommercial-ShareAlike 3.0 International": "CC-BY-NC-SA",
        "Attribution-NoDerivatives 4.0 International": "CC-BY-ND",
        "Attribution-Noncommercial-No Derivative Works 3.0 United States": "CC-BY-NC-ND",
        "Attribution-ShareAlike": "CC-BY-SA",
        "All rights reserved": None,
        "": None,
    }
    for text, expected in cases.items():
        assert license_class(text) == expected, text


def test_allow_list_and_dedup(tmp_path):
    (tmp_path / "ids.csv").write_text("id\n1\nfma:7\n")
    allow = read_id_list([tmp_path / "ids.csv"])
    items = [Item("fsd", "1", None, license="All rights reserved"), Item("fsd", "2", None, license="CC0"),
             Item("fma", "7", None), Item("fsd", "1", None)]
    items, dups = dedup_ids(items)
    assert [d["id"] for d in dups] == ["1"] and len(items) == 3
    kept, rejected = license_filter(items, allow)
    assert [(it.source, it.id) for it in kept] == [("fsd", "1"), ("fma", "7")]
    assert [r["id"] for r in rejected] == ["2"]
    kept, _ = license_filter(items, None, keep_unlicensed=True)
    assert [(it.source, it.id) for it in kept] == [("fsd", "2"), ("fma", "7")]


def test_build_command_on_fma_with_mp3_and_folder(tmp_path):
    import io
    import tarfile

    from data_prep.__main__ import main as data_prep_main

    _fma(tmp_path, three_rows=True)
    t = np.arange(44100 * 2) / 44100
    sf.write(tmp_path / "fma" / "000" / "000005.mp3", (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), 48000,
             format="MP3")
    (tmp_path / "fma" / "000" / "000005.wav").unlink()
    _wav(tmp_path / "own" / "rec.wav", n=44100)
    out = tmp_path / "shards"
    assert data_prep_main(["build", "--out", str(out), "--fma_audio", str(tmp_path / "fma"), "--fma_tracks",
                           str(tmp_path / "tracks.csv"), "--fma_genres", str(tmp_path / "genres.csv"), "--folder",
                           str(tmp_path / "own"), "--keep_unlicensed", "--jobs", "2"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["files_listed"] == 4 and manifest["files_kept"] == 2  # track 7 of tracks.csv has no audio
    assert [s["id"] for s in manifest["skipped"]] == ["2", "7"] and "NC" in manifest["skipped"][0]["reason"]
    assert manifest["skipped_by_category"] == {"licence": 1, "missing audio": 1}
    assert manifest["splits"]["test"]["files"] == 1  # FMA's own split for track 5
    with tarfile.open(out / "test-000000.tar") as tar:
        meta = json.loads(tar.extractfile("fma_5_000.json").read())
        audio, sr = sf.read(io.BytesIO(tar.extractfile("fma_5_000.flac").read()))
    assert meta["metadata"]["genre"] == "Rock, Hip-Hop" and meta["license"] == "CC-BY" and "rock" in meta["caption"].lower()
    assert sr == 44100 and audio.shape[1] == 2 and abs(len(audio) / 44100 - 88200 / 48000) < 0.03  # mp3 48 kHz mono -> 44.1k stereo


def test_allow_list_names_folder_items_by_relative_path(tmp_path):
    _wav(tmp_path / "src" / "keep me.wav")
    _wav(tmp_path / "src" / "sub" / "drop.wav", n=882)
    items = read_folder(tmp_path / "src")
    kept, rejected = license_filter(items, {"keep me.wav"})
    assert [it.rel for it in kept] == ["keep me.wav"] and [r["path"] for r in rejected] == ["sub/drop.wav"]
    kept, _ = license_filter(items, {"folder:sub/drop.wav"})
    assert [it.rel for it in kept] == ["sub/drop.wav"]
