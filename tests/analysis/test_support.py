"""Every number states what it rests on; intervals only where enough clips carry a measure (issue 25).

The scenario of the issue: a folder of 35 short sounds (shorter than the spectrum window) and one long one.
alpha then rests on one clip; its bootstrap "interval" used to be [1.27, 1.27] "over 35 clips".
"""

import json
import re

import numpy as np
import pytest
import soundfile as sf
import torch

from lafa.analysis.controls import MIN_CLIPS, effective_clips, locality_measures
from lafa.commands.analyze import main

SR = 8000


def test_effective_clips_closed_forms():
    assert effective_clips([5, 5, 5, 5]) == pytest.approx(4.0)  # equal weights: the count
    assert effective_clips([7, 0, 0]) == pytest.approx(1.0)  # one clip carries everything
    assert effective_clips([3, 1]) == pytest.approx(16 / 10)  # (3 + 1)^2 / (9 + 1)
    assert effective_clips([]) == 0.0


def short_and_long(short: int = 35, short_frames: int = 10, long_frames: int = 200, channels: int = 8, seed: int = 0):
    rng = np.random.default_rng(seed)
    maps = [torch.from_numpy(rng.standard_normal((channels, short_frames)).cumsum(1)) for _ in range(short)]
    return maps + [torch.from_numpy(rng.standard_normal((channels, long_frames)).cumsum(1))]


def test_alpha_from_one_long_clip_has_no_interval_and_says_so():
    m = locality_measures(short_and_long(), window=16, permutations=5, bootstrap=100, group_size=4)
    spec, frames = m["support"]["spectrum"], m["support"]["frames"]
    assert (spec["clips"], spec["of_clips"], spec["windows"]) == (1, 36, 200 // 16)
    assert spec["effective_clips"] == pytest.approx(1.0) and not spec["interval"]
    # frames: 35 x 10 + 200; Kish over the frame counts
    assert frames["frames"] == 550
    assert frames["effective_clips"] == pytest.approx(550**2 / (35 * 100 + 200**2))
    assert frames["interval"] == (frames["effective_clips"] >= MIN_CLIPS)
    for name in ("alpha", "alpha_excess", "alpha_group_order_excess", "pc_temporal_slope"):
        assert m[name]["value"] is not None and m[name]["low"] is None and m[name]["high"] is None
    assert any("35 of 36 clips are shorter than the 16-frame window" in w for w in m["warnings"])
    assert any(w.startswith("alpha, its baselines and the PC t-slope: no interval: 1.0 effective clips")
               for w in m["warnings"])


def test_enough_equal_clips_get_intervals_and_the_minimum_is_a_setting():
    maps = short_and_long(short=12, short_frames=32, long_frames=32)  # 13 equal clips
    m = locality_measures(maps, window=16, permutations=3, bootstrap=40)
    assert m["support"]["spectrum"]["effective_clips"] == pytest.approx(13.0)
    assert m["alpha"]["low"] is not None and m["lpi"]["low"] is not None and m["warnings"] == []
    strict = locality_measures(maps, window=16, permutations=3, bootstrap=40, min_clips=14)
    assert strict["alpha"]["low"] is None and strict["lpi"]["low"] is None
    assert strict["alpha"]["value"] == pytest.approx(m["alpha"]["value"])
    assert len(strict["warnings"]) == 2 and all("fewer than the 14 needed" in w for w in strict["warnings"])


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory):
    """`lafa analyze` (mel only) on 35 sounds shorter than a window and one long one."""
    root = tmp_path_factory.mktemp("short")
    music = root / "sounds"
    music.mkdir()
    rng = np.random.default_rng(1)
    for i in range(35):  # 0.1 s: 12 mel frames of 64 samples, less than the 16-frame window
        sf.write(music / f"short_{i:02d}.wav", (0.2 * rng.standard_normal(800)).astype(np.float32), SR)
    t = np.arange(4 * SR) / SR  # 4 s: 500 frames, 31 windows
    sf.write(music / "long.wav", (0.3 * np.sin(2 * np.pi * 440 * t) * (1 + 0.5 * np.sin(2 * np.pi * t))
                                  + 0.05 * rng.standard_normal(len(t))).astype(np.float32), SR)
    out = root / "out"
    return out, ["--audio", str(music), "--out", str(out), "--sample_rate", str(SR), "--channels", "1",
                 "--analysis.window", "16", "--analysis.hop", "16", "--analysis.permutations", "4",
                 "--analysis.bootstrap", "30", "--mel.n_fft", "256", "--mel.hop_length", "64", "--mel.n_mels", "16",
                 "--listen_clips", "1", "--listen_seconds", "0.2", "--device", "cpu"]


def test_console_json_and_page_state_what_the_numbers_rest_on(folder_run, capsys):
    out, argv = folder_run
    assert main(argv) == 0
    console = capsys.readouterr().out
    mel_row = next(line for line in console.splitlines() if line.startswith("mel "))
    alpha_cell = mel_row.split()[1:3]
    assert not alpha_cell[1].startswith("[")  # alpha printed without an interval
    assert "bootstrap intervals over 36 clips" not in console
    assert "mel: alpha and PC t-slope rest on 1 of 36 clips (31 windows of 16 frames, 1.0 effective clips; no interval)" \
        in console
    assert "warning: mel: 35 of 36 clips are shorter than the 16-frame window" in console
    assert re.search(r"only where at least 10 effective clips carry a measure", console)

    report = json.loads((out / "report.json").read_text())
    rep = report["representations"]["mel"]
    assert rep["controls"]["support"]["spectrum"]["clips"] == 1 and rep["controls"]["support"]["spectrum"]["windows"] == 31
    assert report["summary"]["mel"]["intervals"]["alpha"] == [None, None]
    assert rep["warnings"] and report["settings"]["min_clips"] == 10

    page = (out / "report.html").read_text()
    assert "clips with a full window" in page and "35 of 36 clips are shorter" in page
    assert "1.0 (no interval)" in page
    for heading in ("eig. slope", "PC t-slope", "excess vs group order", "effective clips (windows)"):
        assert f"<dt>{heading}</dt>" in page  # every column defined
