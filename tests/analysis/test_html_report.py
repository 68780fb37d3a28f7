"""report.html of `lafa analyze` and of a study: self-contained, and checked in a real headless Chromium."""

import json
import re

import numpy as np
import pytest
import soundfile as sf
from analysis_doubles import write_checkpoint
from headless_browser import find_chromium, inspect_page
from torch.utils.tensorboard import SummaryWriter

from lafa.analysis.report import format_measure
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
                     "--analysis.permutations", "5", "--mel.n_fft", "256", "--mel.hop_length", "64",
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
    assert format_measure(lpi["lpi_excess"], lpi["intervals"]["lpi_excess"], 3) in page
    assert "&quot;permutations&quot;: 5" in page  # the settings, escaped JSON


@needs_chromium
def test_analysis_page_in_headless_chromium(analysis):
    root, report, _ = analysis
    seen = inspect_page(root / "out" / "report.html", CHROMIUM)
    assert seen["console_errors"] == [] and seen["exceptions"] == [] and seen["log_errors"] == []
    assert seen["external_requests"] == []
    assert len(seen["images"]) == len(report["figures"])
    assert all(i["complete"] and i["width"] > 100 and i["height"] > 100 for i in seen["images"])
    assert len(seen["audio"]) == 4 and all(a["error"] is None and a["duration"] > 0.4 for a in seen["audio"])
    assert seen["play"]["played"], seen["play"]
    assert "locality measures" in seen["text"] and "LPI excess" in seen["text"]


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
    seen = inspect_page(paths["html"], CHROMIUM)
    assert seen["console_errors"] == [] and seen["exceptions"] == [] and seen["log_errors"] == []
    assert seen["external_requests"] == []
    assert len(seen["images"]) == 1 + len(analysis_report["figures"])
    assert all(i["complete"] and i["width"] > 100 for i in seen["images"])
    assert seen["play"]["played"], seen["play"]
    assert "locality of each latent space" in seen["text"] and "proj (proj)" in seen["text"]
