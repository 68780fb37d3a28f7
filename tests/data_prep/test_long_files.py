"""Long files in bounded memory (data_prep.long_files): the streamed path gives the bytes of the whole-file path,
a long file's checks still skip it whole, and peak memory does not grow with the file's length."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import data_prep.long_files as long_files
from data_prep.process import ChunkSettings
from data_prep.shards import BuildSettings, build
from data_prep.sources import read_folder
from tests.data_prep.source_files import music, shard_members, write_source

ROOT = Path(__file__).resolve().parents[2]


def _build(src: Path, out: Path, **chunk) -> dict:
    settings = BuildSettings(out=out, chunk=ChunkSettings(chunk_seconds=2.0, min_tail_seconds=0.5, **chunk), jobs=1,
                             shard_bytes=4 * 2**20)
    return build(read_folder(src), settings, [], {})


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """7-9 s files in every streamed case: 16-bit 44.1 kHz (integer path), 48 kHz and 22.05 kHz mono (resampled,
    then duplicated), 24-bit FLAC mono (float path), 3 channels (mixed down), a silent middle chunk, a tail, Ogg
    Vorbis and Opus (resampled from 48 kHz)."""
    src = tmp_path_factory.mktemp("long_src")
    quiet = music(9.0, seed=5)
    quiet[2 * 44100 : 4 * 44100] *= 1e-5  # chunk 1 silent: dropped and listed
    write_source(src, "int16.wav", music(7.3, seed=1), subtype="PCM_16")
    write_source(src, "r48.wav", music(8.0, rate=48000, seed=2), rate=48000, subtype="PCM_16")
    write_source(src, "r22m.wav", music(7.0, channels=1, rate=22050, seed=3), rate=22050, subtype="PCM_16")
    write_source(src, "m24.flac", music(6.6, channels=1, seed=4), subtype="PCM_24")
    write_source(src, "quiet.wav", quiet, subtype="PCM_16")
    three = np.concatenate([music(7.0, seed=6), music(7.0, channels=1, seed=7)], 1)
    write_source(src, "three.wav", three, subtype="FLOAT")
    write_source(src, "r96.flac", music(7.5, rate=96000, seed=8), rate=96000, subtype="PCM_24")
    write_source(src, "vorbis.ogg", music(7.2, seed=9), format="OGG", subtype="VORBIS")  # block reads exact
    write_source(src, "opus.opus", music(6.8, rate=48000, seed=10), rate=48000, format="OGG", subtype="OPUS")
    return src


def test_streamed_shards_equal_the_whole_file_path(corpus, tmp_path, monkeypatch):
    whole = _build(corpus, tmp_path / "whole")
    monkeypatch.setattr(long_files, "LONG_FILE_SECONDS", 5.0)  # every file above is streamed
    calls = []
    real = long_files.StreamedFile.__init__
    monkeypatch.setattr(long_files.StreamedFile, "__init__", lambda self, *a, **k: calls.append(a[0]) or real(self, *a, **k))
    streamed = _build(corpus, tmp_path / "streamed")
    assert len(calls) == 9
    assert shard_members(tmp_path / "streamed") == shard_members(tmp_path / "whole")
    for key in ("files_kept", "chunks", "dropped_chunks", "skipped", "hours"):
        assert streamed[key] == whole[key], key
    assert whole["dropped_chunks"] and whole["files_kept"] == 9


def test_a_long_truncated_or_silent_file_is_skipped_whole(tmp_path, monkeypatch):
    src = tmp_path / "src"
    src.mkdir()
    path = write_source(src, "cut.wav", music(8.0), subtype="PCM_16")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # the header still declares 8 s
    write_source(src, "silent.wav", music(8.0) * 1e-5, subtype="PCM_16")
    ogg = write_source(src, "cut.ogg", music(8.0, seed=3), format="OGG", subtype="VORBIS")
    ogg.write_bytes(ogg.read_bytes()[: ogg.stat().st_size * 2 // 3])  # cut mid-page: what remains decodes
    whole = _build(src, tmp_path / "whole")
    monkeypatch.setattr(long_files, "LONG_FILE_SECONDS", 5.0)
    streamed = _build(src, tmp_path / "streamed")
    assert streamed["skipped"] == whole["skipped"] and streamed["files_kept"] == whole["files_kept"] == 1
    assert {s["category"] for s in streamed["skipped"]} == {"truncated", "silent"}
    assert shard_members(tmp_path / "streamed") == shard_members(tmp_path / "whole")  # the cut Ogg, as whole
    assert not list((tmp_path / "streamed").glob(".*spool*")) and not list((tmp_path / "streamed").glob("*.tar"))[0:0]


def test_an_ogg_file_whose_length_is_not_its_header_count_is_decoded_whole(tmp_path, monkeypatch):
    """WholeFileNeeded (the decoded length differs from the granule count the chunk bounds came from): nothing of
    the streamed pass is kept, and the whole-file path writes the file."""
    src = tmp_path / "src"
    src.mkdir()
    write_source(src, "a.ogg", music(7.0, seed=11), format="OGG", subtype="VORBIS")
    whole = _build(src, tmp_path / "whole")
    monkeypatch.setattr(long_files, "LONG_FILE_SECONDS", 5.0)
    real = long_files.StreamedFile.check
    seen = []

    def short_count(self):  # as if the last page's granule position had promised one more frame
        self.n += 1
        seen.append(self.path)
        real(self)

    monkeypatch.setattr(long_files.StreamedFile, "check", short_count)
    streamed = _build(src, tmp_path / "streamed")
    assert len(seen) == 1 and streamed["files_kept"] == whole["files_kept"] == 1
    assert shard_members(tmp_path / "streamed") == shard_members(tmp_path / "whole")
    assert not list((tmp_path / "streamed").glob(".*spool*"))


PROBE = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    from data_prep.process import ChunkSettings
    from data_prep.shards import BuildSettings, build
    from data_prep.sources import read_folder
    src, out = Path(sys.argv[1]), Path(sys.argv[2])
    m = build(read_folder(src), BuildSettings(out=out, chunk=ChunkSettings(), jobs=1), [], {})
    # VmHWM: this process image's peak RSS (ru_maxrss would carry the parent's peak over a vfork + exec)
    hwm = next(int(ln.split()[1]) for ln in open("/proc/self/status") if ln.startswith("VmHWM:"))
    print(json.dumps({"maxrss_kb": hwm, "chunks": m["chunks"]}))
""")


def write_long(path: Path, minutes: float, rate: int = 44100, subtype: str = "PCM_16", fmt: str = "WAV") -> Path:
    """A long music-like file written in one-minute blocks (the test itself stays small)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with sf.SoundFile(path, "w", rate, 2, subtype=subtype, format=fmt) as f:
        for m in range(int(minutes)):
            f.write(music(60.0, rate=rate, seed=m))
    (path.with_suffix(".json")).write_text(json.dumps({"genre": "test", "split": "train"}))
    return path


def peak_rss_mb(src: Path, out: Path) -> tuple[float, int]:
    res = subprocess.run([sys.executable, "-c", PROBE, str(src), str(out)], cwd=ROOT, capture_output=True, text=True,
                         env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"}, check=True)
    line = json.loads(res.stdout.strip().splitlines()[-1])
    return line["maxrss_kb"] / 1024, line["chunks"]


BOUND_MB = 60  # the 60-minute build may peak at most this much above the 20-minute one


@pytest.mark.parametrize("rate,fmt,subtype", [(44100, "WAV", "PCM_16"), (48000, "FLAC", "PCM_16")])
def test_peak_memory_does_not_grow_with_the_file_length(tmp_path, rate, fmt, subtype):
    """20 and 60 minute files (longer than LONG_FILE_SECONDS): one build process each, its peak RSS measured.
    A whole-file decode would add ~320 MB (int16) or ~640 MB (float32, resampled) for the 40 extra minutes."""
    ext = fmt.lower()
    rss = {}
    for minutes in (20, 60):
        write_long(tmp_path / f"src{minutes}" / f"long.{ext}", minutes, rate, subtype, fmt)
        rss[minutes], chunks = peak_rss_mb(tmp_path / f"src{minutes}", tmp_path / f"out{minutes}")
        assert chunks == minutes * 2
    assert rss[60] - rss[20] < BOUND_MB, rss
