"""Every reader of user audio files holds a bounded amount of it, whatever a file's length (issue 26):
`lafa analyze --audio` reads only the `--seconds` it uses of each file, and `lafa evaluate` probes every clip in
blocks (lafa.audio_blocks) and refuses, before decoding it, a clip longer than MAX_CLIP_SECONDS. Peak RSS is
measured in a subprocess (VmHWM) on a 20-minute and a 1-minute FLAC made here; a whole-file float32 decode of the
20-minute file would add ~420 MB. (`lafa encode` and `lafa analyze --data` read shard members: chunks of at most
`chunk_seconds`; data_prep's own figures are in tests/data_prep/test_long_files.py.)"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from lafa.audio import load_audio
from lafa.metrics.folders import MAX_CLIP_SECONDS, probe_file

ROOT = Path(__file__).resolve().parents[2]
SR = 44100
BOUND_MB = 40  # the 20-minute file may peak at most this much above the 1-minute one


def write_long_flac(path: Path, minutes: int) -> Path:
    """A quiet 220 Hz stereo tone (low entropy: cheap to encode), written one minute at a time."""
    t = np.arange(60 * SR) / SR
    minute = np.stack([0.01 * np.sin(2 * np.pi * 220 * t), 0.01 * np.cos(2 * np.pi * 220 * t)], 1).astype(np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    with sf.SoundFile(path, "w", SR, 2, subtype="PCM_16", format="FLAC") as f:
        for _ in range(minutes):
            f.write(minute)
    return path


READERS = {
    "analyze": """
        from lafa.analysis.audio_files import read_audio_clips
        clips, skipped = read_audio_clips([path], 1, 44100, 2, 5.0)
        result = [tuple(clips[0][1].shape), len(skipped)]
    """,
    "evaluate": """
        import lafa.metrics.folders as folders
        folders.MAX_CLIP_SECONDS = 1e9  # measure the probe itself on the long file
        result = folders.probe_files({"x": Path(path)}, "--generated", 1)["x"]
    """,
}


def peak_rss_mb(reader: str, path: Path) -> tuple[float, object]:
    code = "import json, sys\nfrom pathlib import Path\npath = sys.argv[1]\n" + textwrap.dedent(READERS[reader]) + (
        "hwm = next(int(ln.split()[1]) for ln in open('/proc/self/status') if ln.startswith('VmHWM:'))\n"
        "print(json.dumps({'kb': hwm, 'result': result}))\n")
    res = subprocess.run([sys.executable, "-c", code, str(path)], cwd=ROOT, capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"})
    line = json.loads(res.stdout.strip().splitlines()[-1])
    return line["kb"] / 1024, line["result"]


@pytest.fixture(scope="module")
def long_files(tmp_path_factory) -> dict[int, Path]:
    folder = tmp_path_factory.mktemp("long")
    return {minutes: write_long_flac(folder / f"{minutes}.flac", minutes) for minutes in (1, 20)}


@pytest.mark.parametrize("reader", sorted(READERS))
def test_peak_memory_does_not_grow_with_the_file_length(long_files, reader):
    rss, results = {}, {}
    for minutes, path in long_files.items():
        rss[minutes], results[minutes] = peak_rss_mb(reader, path)
    print(f"{reader}: peak RSS {rss[1]:.0f} MB (1 min), {rss[20]:.0f} MB (20 min)")
    if reader == "analyze":
        assert results[20] == [[2, 5 * SR], 0]  # the first 5 s, nothing skipped
    else:
        assert results[20][0] == 20 * 60 and abs(results[20][1] - 0.01) < 1e-3  # every frame read, its peak
    assert rss[20] - rss[1] < BOUND_MB, rss


def _clip(path: Path, fmt: str, subtype: str, seconds: float = 3.0, sr: int = SR) -> Path:
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * sr)) / sr
    x = 0.5 * np.sin(2 * np.pi * 440 * t)[:, None] + 0.05 * rng.standard_normal((len(t), 2))
    sf.write(path, x.astype(np.float32), sr, format=fmt, subtype=subtype)
    return path


@pytest.mark.parametrize("fmt,subtype,ext,sr", [("WAV", "PCM_24", "wav", SR), ("FLAC", "PCM_16", "flac", SR),
                                                ("OGG", "VORBIS", "ogg", SR), ("OGG", "OPUS", "opus", 48000),
                                                ("MP3", "MPEG_LAYER_III", "mp3", SR)])
def test_the_block_probe_equals_a_whole_decode(tmp_path, fmt, subtype, ext, sr):
    """Seconds and peak from the blocks are those of one whole read, in every format evaluate takes."""
    path = _clip(tmp_path / f"c.{ext}", fmt, subtype, sr=sr)
    audio, rate = load_audio(path)
    assert probe_file(path) == (audio.shape[-1] / rate, float(audio.abs().max()))


def test_a_clip_longer_than_the_limit_is_refused_before_it_is_decoded(lafa, tmp_path, monkeypatch):
    import lafa.metrics.folders as folders

    assert MAX_CLIP_SECONDS == 600.0  # 10 min; lowered here to 1 min so that the test file stays small
    monkeypatch.setattr(folders, "MAX_CLIP_SECONDS", 60.0)
    gen, ref = tmp_path / "gen", tmp_path / "ref"
    for folder in (gen, ref):
        folder.mkdir()
        for i in "ab":
            sf.write(folder / f"{i}.wav", 0.3 * torch.randn(SR, 2).numpy(), SR)
    long = write_long_flac(gen / "c.flac", 2)
    sf.write(ref / "c.wav", 0.3 * torch.randn(SR, 2).numpy(), SR)
    decoded = []
    real = folders.probe_blocks
    monkeypatch.setattr(folders, "probe_blocks", lambda p, *a: decoded.append(Path(p).name) or real(p, *a))
    code, _, lines = lafa("evaluate", "--generated", gen, "--reference", ref, "--allow_random_weights",
                          "--out", tmp_path / "report.json")
    assert code == 2 and len(lines) == 1
    assert lines[0] == (f"lafa evaluate: error: {long}: is 2.0 min long, longer than the 1 min a clip may be "
                        f"(every metric embeds a whole clip at once); cut it into clips of at most that length "
                        f"(ffmpeg -i IN -f segment -segment_time 30 OUT-%03d.flac), each scored as its own id")
    assert "c.flac" not in decoded and "a.wav" in decoded and not (tmp_path / "report.json").exists()
