"""report.html of `lafa analyze` and of a study: self-contained, and checked in a real headless Chromium."""

import json
import re

import numpy as np
import pytest
import soundfile as sf
from analysis_doubles import write_checkpoint
from headless_browser import find_chromium, inspect_page
from torch.utils.tensorboard import SummaryWriter

from lafa.analysis.latent_report import format_measure
from lafa.commands.analyze import main
from lafa.study.report import build_report, write_report
from lafa.study.spec import parse_study

CHROMIUM = find_chromium()
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="no chromium on this machine (Debian: apt-get install chromium)")


@pytest.fixture(scope="module")
def analysis(tmp_path_factory):
    root = tmp_path_factory.mktemp("html")
    (root / "music").mkdir()
    t = np.arange(8000) / 8000
    for i in range(3):
        sf.write(root / "music" / f"{i}.wav", (0.3 * np.sin(2 * np.pi * (300 + 100 * i) * t)).astype(np.float32), 8000)
    write_checkpoint(root / "proj.ckpt", seed=1)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LAFA_TRUSTED_CLASSES", "analysis_doubles")  # the test double a stored config may name
        assert main(["--audio", str(root / "music"), "--ckpt_path", str(root / "proj.ckpt"), "--out",
                     str(root / "out"), "--analysis.window", "8", "--analysis.hop", "8", "--analysis.bootstrap", "20",
                     "--analysis.permutations", "5", "--analysis.min_clips", "2", "--mel.n_fft", "256", "--mel.hop_length", "64",
                     "--mel.n_mels", "16", "--ablation_seconds", "0.5", "--listen_seconds", "0.5",
                     "--device", "cpu"]) == 0
    report = json.loads((root / "out" / "report.json").read_text())
    return root, report, (root / "out" / "report.html").read_text()


def test_analysis_page_embeds_everything(analysis):
    _, report, page = analysis
    assert report["html"].endswith("report.html")
    assert not re.search(r"""(src|href)=['"]?(https?:|//)""", page)  # no external asset
    images = re.findall(r"<img src='data:image/png;base64,", page)
    assert len(images) == len(report["figures"]) == 5  # psd, correlation, permutation, eigen, one ablation grid
    assert report["audio"] == {"reference": [report["audio"]["reference"][0], report["audio"]["reference"][1]],
                               "proj": report["audio"]["proj"]} and len(report["audio"]["proj"]) == 2
    assert page.count("<audio controls") == 4 and page.count("data:audio/wav;base64,") == 4
    lpi = report["summary"]["proj"]
    assert lpi["intervals"]["lpi_excess"][0] is not None  # 3 clips, min_clips 2: intervals
    # an interval never breaks inside its brackets (non-breaking space), so the cell wraps before it at most
    assert format_measure(lpi["lpi_excess"], lpi["intervals"]["lpi_excess"], 3).replace(", ", ",\u00a0") in page
    # players are named by the clip they come from, not reference_0
    assert "<div>0.wav (input)</div>" in page and "<div>1.wav: proj reconstruction</div>" in page
    assert "reference_0" not in page.split("<h2>audio</h2>")[1].split("<h2>")[0]
    for heading in ("alpha", "LPI", "PR", "eig. slope", "PC t-slope", "random perm.", "excess vs random", "group order",
                    "excess vs group order", "within group", "excess vs within group", "frames N", "LPI radius r"):
        assert f"<dt>{heading}</dt>" in page and "<th title=" in page  # defined under the tables, tooltip on top
    assert "&quot;permutations&quot;: 5" in page  # the settings, escaped JSON


@needs_chromium
def test_analysis_page_in_headless_chromium(analysis):
    root, report, _ = analysis
    seen = inspect_page(root / "out" / "report.html", CHROMIUM, width=1280)
    assert seen["console_errors"] == [] and seen["exceptions"] == [] and seen["log_errors"] == []
    assert seen["external_requests"] == []
    assert len(seen["images"]) == len(report["figures"])
    assert all(i["complete"] and i["width"] > 100 and i["height"] > 100 for i in seen["images"])
    assert len(seen["audio"]) == 4 and all(a["error"] is None and a["duration"] > 0.4 for a in seen["audio"])
    assert seen["play"]["played"], seen["play"]
    assert "locality measures" in seen["text"] and "excess vs group order" in seen["text"]
    assert seen["overflowing_tables"] == [] and not seen["page_overflows"]  # nothing hidden at 1280 px


@needs_chromium
def test_the_browser_check_catches_a_broken_page(tmp_path):
    """The same check on a page with a broken image, a missing external script and a console error."""
    page = tmp_path / "broken.html"
    page.write_text("<!DOCTYPE html><html><head><script src='https://example.invalid/x.js'></script></head><body>"
                    "<img src='data:image/png;base64,AAAA' alt='bad'><audio src='data:audio/wav;base64,AAAA'></audio>"
                    "<script>console.error('boom')</script></body></html>")
    seen = inspect_page(page, CHROMIUM)
    assert [c["args"][0]["value"] for c in seen["console_errors"]] == ["boom"]
    assert seen["external_requests"] == ["https://example.invalid/x.js"]
    assert seen["images"][0]["width"] == 0
    assert not seen["play"]["played"]


def _log(tb_dir, points):
    writer = SummaryWriter(str(tb_dir))
    for step, value in points:
        writer.add_scalar("val/loss", value, step)
    writer.close()


def test_study_page_in_headless_chromium(analysis, tmp_path):
    """The study page holds its curves, the analysis figures and clips of its latents, and the tables."""
    root, analysis_report, _ = analysis
    study = parse_study({
        "name": "html", "factor": "latent space", "factor_keys": ["model.init_args.autoencoder"],
        "out_dir": str(tmp_path), "baseline": "base", "metrics": {"val/loss": "min"}, "seeds": [0, 1],
        "stages": {"dit": ["unused.yaml"]}, "runs": {n: {"stage": "dit", "compare": True} for n in ("base", "proj")},
    })
    for name in ("base", "proj"):
        for seed in (0, 1):
            _log(tmp_path / f"{name}-seed{seed}" / "tb", [(10, 4.0), (20, 2.0 if name == "base" else 1.5), (30, 1.0)])
    s = analysis_report["summary"]["proj"]
    latents = {"proj": {"latent": "proj", "alpha": s["alpha"], "lpi": s["lpi"], "mel": analysis_report["summary"]["mel"],
                        "analysis": str(root / "out" / "report.json"),
                        "controls": {k: v for k, v in s.items() if k not in ("alpha", "lpi")}}}
    paths = write_report(build_report(study, latents), tmp_path / "report")
    page = paths["html"].read_text()
    assert page.count("<img src='data:image/png;base64,") == 1 + len(analysis_report["figures"])
    assert page.count("<audio controls") == 4
    assert "<td>1.00 +- 0.00</td>" in page  # proj reaches the baseline's final value at the same step
    if CHROMIUM is None:
        pytest.skip("no chromium on this machine (Debian: apt-get install chromium)")
    seen = inspect_page(paths["html"], CHROMIUM, width=1280)
    assert seen["console_errors"] == [] and seen["exceptions"] == [] and seen["log_errors"] == []
    assert seen["external_requests"] == []
    assert len(seen["images"]) == 1 + len(analysis_report["figures"])
    assert all(i["complete"] and i["width"] > 100 for i in seen["images"])
    assert seen["play"]["played"], seen["play"]
    assert "locality of each latent space" in seen["text"] and "proj (proj)" in seen["text"]
    assert seen["overflowing_tables"] == [] and not seen["page_overflows"]


def min_content_widths(page: str) -> list[tuple[list[str], float]]:
    """Each table's narrowest possible width in px, estimated: per column the longest run of text that cannot
    break (split at ordinary spaces; non-breaking spaces and words hold), at 8 px a character (the pages'
    0.85em system-ui digits are ~7.5 px), plus 0.6em padding each side and a border."""
    from html.parser import HTMLParser

    class Tables(HTMLParser):
        def __init__(self):
            super().__init__()
            self.tables, self.cell = [], None

        def handle_starttag(self, tag, attrs):
            if tag == "table":
                self.tables.append({})
            elif tag in ("td", "th"):
                self.cell, self.column = "", getattr(self, "column", -1) + 1
            elif tag == "tr":
                self.column = -1

        def handle_endtag(self, tag):
            if tag in ("td", "th") and self.cell is not None:
                longest = max((len(w) for w in self.cell.split(" ")), default=0)
                table = self.tables[-1]
                table[self.column] = max(table.get(self.column, 0), longest)
                self.cell = None

        def handle_data(self, data):
            if self.cell is not None:
                self.cell += data

    parser = Tables()
    parser.feed(page)
    return [(list(t.values()), sum(8 * n + 2 * 0.6 * 13.6 + 1 for n in t.values())) for t in parser.tables]


def test_every_table_fits_a_1280_px_window(analysis):
    """report.html's body is at most 1200 px wide (less 2 x 1em padding): no table needs more, so no column
    hides behind a scrollbar at 1280 px (the browser test checks the same in Chromium where one is installed)."""
    _, _, page = analysis
    widths = min_content_widths(page)
    assert len(widths) >= 3  # measures, baselines, support
    for columns, width in widths:
        assert width <= 1200 - 2 * 16, (columns, width)


def test_psd_tick_labels_do_not_overlap():
    """A spectrum over about one decade (64-frame windows: f = 1/64 .. 31/64): labelled 1-2-5 ticks only,
    no two labels touching."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from lafa.analysis.figures import log_ticks, psd_figure

    f = np.arange(32) / 64
    curves = {"mel": {"freq": f, "spectrum": np.r_[1.0, f[1:] ** -2.0], "alpha": 2.0, "intercept": 0.0},
              "vae": {"freq": f, "spectrum": np.r_[1.0, f[1:] ** -1.0], "alpha": 1.0, "intercept": 0.0}}
    fig = psd_figure(curves)
    FigureCanvasAgg(fig).draw()
    ax = fig.axes[0]
    labels = [t for t in ax.get_xticklabels(which="both") if t.get_visible() and t.get_text()]
    assert [t.get_text() for t in labels] == ["0.02", "0.03", "0.05", "0.1", "0.2", "0.3"]
    boxes = sorted((t.get_window_extent() for t in labels), key=lambda b: b.x0)
    assert all(a.x1 < b.x0 for a, b in zip(boxes, boxes[1:], strict=False))
    assert log_ticks(1 / 64, 0.5) == pytest.approx([0.02, 0.03, 0.05, 0.1, 0.2, 0.3, 0.5])
    assert log_ticks(0.125, 0.375) == pytest.approx([0.2, 0.3])
    assert log_ticks(0.21, 0.29) == pytest.approx([0.21, 0.29])  # no 1-2-3-5 value inside: the ends
