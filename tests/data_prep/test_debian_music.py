"""data_prep.debian_music on a fake installed-package tree (no apt): licences from the copyright files, whole
tracks held out per package, sidecars data_prep reads, the shards and corpus.json."""

import json
import tarfile

import numpy as np
import pytest
import soundfile as sf
import yaml

from data_prep import debian_music as dm
from tests.data_prep.source_files import music

DEP5 = """Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: fakegame

Files: *
Copyright: 2020 Main Composer
License: GPL-2+

Files: debian/*
Copyright: 2021 A Packager
License: MIT

Files: music/guest-*.ogg
       music/extra.flac
Copyright: Guest Artist (https://guest.example)
License: CC-BY-SA-3.0

License: GPL-2+
 This program is free software.
"""

PLAIN = """This package was debianized by someone.

Copyright (C) 2011 Plain Author

   THE WORK IS PROVIDED UNDER THE TERMS OF THIS CREATIVE COMMONS PUBLIC LICENSE.
   "License Elements" means the following high-level license
   attributes as selected by Licensor: Attribution, ShareAlike.
"""


def _audio(path, seconds, fmt, seed):
    path.parent.mkdir(parents=True, exist_ok=True)
    kw = {"format": "OGG", "subtype": "VORBIS"} if fmt == "ogg" else {"format": "FLAC"}
    sf.write(path, music(seconds, seed=seed) * (0.5 + 0.05 * seed), 44100, **kw)


@pytest.fixture
def tree(tmp_path):
    """A fake root with two installed packages and a config naming them."""
    root = tmp_path / "root"
    doc = root / "usr/share/doc"
    (doc / "fakegame-music").mkdir(parents=True)
    (doc / "fakegame-music/copyright").write_text(DEP5)
    mus = root / "usr/share/games/fakegame/music"
    names = ["battle.ogg", "battle-old.ogg", "calm.ogg", "victory.ogg", "victory2.ogg", "march.ogg", "night.ogg",
             "guest-rain.ogg", "extra.flac"]
    for i, name in enumerate(names):
        _audio(mus / name, 1.0 + 0.25 * i, "flac" if name.endswith("flac") else "ogg", i)
    (mus / "readme.txt").write_text("not audio")
    (mus / "alias").mkdir()
    (mus / "alias/calm.ogg").symlink_to(mus / "calm.ogg")  # the same file twice (drascula's language links)
    (doc / "plain-music").mkdir(parents=True)
    (doc / "plain-music/copyright").write_text(PLAIN)
    _audio(root / "usr/share/plain/a.ogg", 1.5, "ogg", 20)
    _audio(root / "usr/share/plain/b.ogg", 1.2, "ogg", 21)
    cfg = {"licenses": ["CC-BY-SA", "GPL"], "val_fraction": 0.15, "test_fraction": 0.15,
           "packages": [
               {"name": "fakegame-music", "dirs": ["usr/share/games/fakegame/music"], "album": "Fake Game OST",
                "genre": "game soundtrack"},
               {"name": "plain-music", "dirs": ["usr/share/plain"], "license": "CC-BY-SA-3.0",
                "evidence": "attributes as selected by Licensor: Attribution, ShareAlike.",
                "copyright": "2011 Plain Author"}]}
    cfg_path = tmp_path / "corpus.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    return root, cfg_path


BUILD = ["--chunk_seconds", "4", "--shard_size", "4MB", "--size_estimate", "pcm", "--jobs", "1"]


def test_builds_shards_with_licences_and_held_out_tracks(tree, tmp_path):
    root, cfg = tree
    out = tmp_path / "out"
    assert dm.main(["--out", str(out), "--root", str(root), "--config", str(cfg), *BUILD]) == 0

    raw = out / "raw/fakegame-music"
    side = {p.name[:-5]: json.loads(p.read_text()) for p in raw.rglob("*.json")}
    assert set(side) == {"battle.ogg", "battle-old.ogg", "calm.ogg", "victory.ogg", "victory2.ogg", "march.ogg",
                         "night.ogg", "guest-rain.ogg", "extra.flac"}  # calm once, no readme
    assert side["calm.ogg"]["license"] == "GPL-2+" and side["calm.ogg"]["copyright_holders"] == "2020 Main Composer"
    for name in ("guest-rain.ogg", "extra.flac"):  # the later, more specific stanza wins
        assert side[name]["license"] == "CC-BY-SA-3.0"
        assert side[name]["copyright_holders"] == "Guest Artist (https://guest.example)"
    assert side["calm.ogg"]["album"] == "Fake Game OST" and side["calm.ogg"]["title"] == "calm"
    assert side["calm.ogg"]["debian_package"] == "fakegame-music"
    # versions of one track share a split; val and test hold some of the package, not all
    assert side["battle.ogg"]["split"] == side["battle-old.ogg"]["split"]
    assert side["victory.ogg"]["split"] == side["victory2.ogg"]["split"]
    splits = [s["split"] for s in side.values()]
    assert {"train", "val", "test"} <= set(splits)
    rep = json.loads((out / "corpus.json").read_text())["packages"]["fakegame-music"]["splits"]
    assert rep["train"]["hours"] > 0.5 * sum(v["hours"] for v in rep.values())
    plain = {p.name[:-5]: json.loads(p.read_text()) for p in (out / "raw/plain-music").glob("*.json")}
    assert {s["license"] for s in plain.values()} == {"CC-BY-SA-3.0"}
    assert {s["split"] for s in plain.values()} == {"train"}  # 2 tracks: too few to hold any out
    assert plain["a.ogg"]["copyright_holders"] == "2011 Plain Author"

    # the shards: every chunk in the split its file's sidecar names, with the licence class that passed
    manifest = json.loads((out / "shards/manifest.json").read_text())
    assert manifest["files_kept"] == 11 and manifest["files_skipped"] == 0
    seen = {}
    for tar_path in sorted((out / "shards").glob("*.tar")):
        split = tar_path.name.split("-")[0]
        with tarfile.open(tar_path) as tar:
            for m in tar.getmembers():
                if m.name.endswith(".json"):
                    meta = json.loads(tar.extractfile(m).read())
                    name = meta["path"].rsplit("/", 1)[-1]
                    seen[meta["path"]] = split
                    want = (side.get(name) or plain[name])["split"]
                    assert split == want, (meta["path"], split, want)
                    assert meta["license"] in ("GPL", "CC-BY-SA")
    assert len(seen) == 11

    report = json.loads((out / "corpus.json").read_text())
    fake = report["packages"]["fakegame-music"]
    assert fake["files"] == 9 and fake["licenses"] == ["CC-BY-SA-3.0", "GPL-2+"]
    seconds = sum(1.0 + 0.25 * i for i in range(9))
    assert fake["hours"] == pytest.approx(seconds / 3600, abs=1e-4)
    assert sum(v["files"] for v in fake["splits"].values()) == 9
    assert report["hours"] == pytest.approx((seconds + 2.7) / 3600, abs=2e-4)
    n_train = sum(s["split"] == "train" for s in [*side.values(), *plain.values()])
    assert report["data_prep_exit"] == 0 and report["shards"]["train"]["files"] == n_train


def test_a_rerun_with_fewer_packages_shards_only_those(tree, tmp_path):
    root, cfg = tree
    out = tmp_path / "out"
    common = ["--out", str(out), "--root", str(root), "--config", str(cfg), *BUILD]
    assert dm.main(common) == 0
    assert dm.main([*common, "--packages", "plain-music"]) == 0
    assert not (out / "raw/fakegame-music").exists()
    manifest = json.loads((out / "shards/manifest.json").read_text())
    assert manifest["files_kept"] == 2
    report = json.loads((out / "corpus.json").read_text())
    assert list(report["packages"]) == ["plain-music"]
    (out / "raw/mine.wav").write_bytes(b"x")  # not written by the command: never deleted
    assert dm.main(common) == 2 and (out / "raw/mine.wav").exists()


def test_missing_package_prints_the_apt_command_and_stops(tree, tmp_path, capsys):
    root, cfg = tree
    data = yaml.safe_load(cfg.read_text())
    data["packages"].append({"name": "absent-music", "dirs": ["usr/share/absent"]})
    cfg.write_text(yaml.safe_dump(data))
    rc = dm.main(["--out", str(tmp_path / "out"), "--root", str(root), "--config", str(cfg)])
    assert rc == 2
    assert "sudo apt-get install -y --no-install-recommends absent-music" in capsys.readouterr().out
    assert not (tmp_path / "out/shards").exists()


def test_licence_evidence_must_be_in_the_copyright_file(tree, tmp_path, capsys):
    root, cfg = tree
    (root / "usr/share/doc/plain-music/copyright").write_text("Copyright (C) 2011 Plain Author\nAll rights reserved.\n")
    assert dm.main(["--out", str(tmp_path / "out"), "--root", str(root), "--config", str(cfg), "--dry_run"]) == 2
    assert "no longer contains the config's evidence" in capsys.readouterr().err


def test_non_dep5_copyright_without_a_config_licence_is_an_error(tree, tmp_path, capsys):
    root, cfg = tree
    data = yaml.safe_load(cfg.read_text())
    del data["packages"][1]["license"], data["packages"][1]["evidence"]
    cfg.write_text(yaml.safe_dump(data))
    assert dm.main(["--out", str(tmp_path / "out"), "--root", str(root), "--config", str(cfg), "--dry_run"]) == 2
    assert "not machine-readable" in capsys.readouterr().err


def test_dry_run_and_own_folder_print_the_build_command(tree, tmp_path, capsys):
    root, cfg = tree
    assert dm.main(["--out", str(tmp_path / "o"), "--root", str(root), "--config", str(cfg), "--dry_run"]) == 0
    printed = capsys.readouterr().out
    assert "would run:" in printed and "--licenses CC-BY-SA GPL" in printed and not (tmp_path / "o").exists()
    assert dm.main(["--out", str(tmp_path / "o"), "--folder", str(tmp_path / "mine"), "--config", str(cfg),
                    "--licenses", "CC0", "--dry_run"]) == 0
    printed = capsys.readouterr().out
    assert f"--folder {tmp_path / 'mine'}" in printed and "--licenses CC0" in printed


def test_dep5_later_stanza_wins_and_packaging_never_matches():
    stanzas = dm.parse_dep5(DEP5)
    assert dm.dep5_license(stanzas, "/usr/share/games/fakegame/music/guest-x.ogg")["license"] == "CC-BY-SA-3.0"
    assert dm.dep5_license(stanzas, "/usr/share/games/fakegame/music/x.ogg")["license"] == "GPL-2+"
    assert dm.dep5_license(stanzas, "/usr/share/debian/x.ogg")["license"] == "GPL-2+"  # not `debian/*`'s MIT
    assert dm.parse_dep5(PLAIN) is None


def _tracks(specs):
    return [dm.Track("p", None, rel, sec, "GPL-2+", "") for rel, sec in specs]


def test_splits_hold_out_whole_tracks_by_hours_deterministically():
    specs = [(f"t{c}.ogg", 100.0) for c in "abcdefghijklmnopqrst"] + [("ta-old.ogg", 50.0), ("tb_loop.ogg", 10.0)]
    tracks = _tracks(specs)
    dm.assign_splits(tracks, 0.1, 0.2)
    by = {t.rel: t.split for t in tracks}
    assert by["ta.ogg"] == by["ta-old.ogg"] and by["tb.ogg"] == by["tb_loop.ogg"]
    total = sum(s for _, s in specs)
    held = {s: sum(t.seconds for t in tracks if t.split == s) for s in ("val", "test")}
    assert 0.1 * total <= held["val"] <= 0.2 * total and 0.2 * total <= held["test"] <= 0.4 * total
    again = _tracks(specs)
    dm.assign_splits(again, 0.1, 0.2)
    assert [t.split for t in again] == [t.split for t in tracks]
    other = _tracks(specs)
    dm.assign_splits(other, 0.1, 0.2, seed=1)
    assert [t.split for t in other] != [t.split for t in tracks]


def test_numbered_files_are_separate_tracks_and_small_packages_stay_in_train():
    keys = dm.track_keys(["music000.ogg", "music001.ogg", "victory.ogg", "victory2.ogg", "defeat2.ogg"])
    assert keys["music000.ogg"] != keys["music001.ogg"] and keys["victory2.ogg"] == "victory"
    assert keys["defeat2.ogg"] == "defeat2"  # no `defeat` beside it
    few = _tracks([(f"{i}.ogg", 60.0) for i in "abcd"])
    dm.assign_splits(few, 0.2, 0.2)
    assert {t.split for t in few} == {"train"}
    one_long = _tracks([("long.ogg", 1000.0)] + [(f"s{i}.ogg", 10.0) for i in range(8)])
    dm.assign_splits(one_long, 0.1, 0.1)
    assert sum(t.split == "train" for t in one_long) >= 1  # never everything held out


def test_the_shipped_config_names_licence_classes_data_prep_keeps():
    from data_prep.licenses import license_class

    cfg = dm.load_config(dm.DEFAULT_CONFIG)
    kept = set(cfg["licenses"])
    for p in cfg["packages"]:
        assert set(p) <= {"name", "dirs", "include", "album", "genre", "license", "evidence", "copyright"}
        if p.get("license"):
            assert str(license_class(p["license"])) in kept and p.get("evidence")
    assert np.isclose(cfg["val_fraction"] + cfg["test_fraction"], 0.2)
