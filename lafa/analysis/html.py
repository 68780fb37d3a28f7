"""Self-contained HTML reports (`report.html` beside report.json) for `lafa analyze` and `lafa study`.

One file that opens offline in any browser: tables, every figure (PNG, base64 data URIs), audio players
(WAV, base64 data URIs) and the settings; inline CSS, no script, no external asset, no network request.
Hand-written with the standard library's `html.escape` rather than a template engine: the pages are a few
tables and figures, and a dependency would buy nothing here.
"""

from __future__ import annotations

import base64
import html
import io
import json
import re
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import soundfile as sf

CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; padding: 0 1em; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: 0.5em 0 1em; font-size: 0.85em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; vertical-align: top; }
th { font-weight: 600; } dl.defs dt { font-weight: 600; float: left; clear: left; margin-right: 0.5em; }
dl.defs dd { margin: 0 0 0.3em 0; } dl.defs { font-size: 0.85em; } .warn { color: #8a4b00; }
th:first-child, td:first-child { text-align: left; } th { background: #f3f3f3; }
figure { margin: 1em 0; } figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption, .note { font-size: 0.85em; color: #555; }
.players { display: flex; flex-wrap: wrap; gap: 1em; } .player { border: 1px solid #ddd; padding: 0.5em; }
.scroll { overflow-x: auto; }
pre { background: #f7f7f7; padding: 0.8em; overflow-x: auto; font-size: 0.8em; }
"""


def esc(value) -> str:
    return html.escape(str(value), quote=True)


def cell(value) -> str:
    """A table cell's text, escaped; a bracketed interval "[low, high]" never breaks inside (the cell may
    break before it), so narrow windows wrap a measure onto two lines instead of hiding columns."""
    text = esc(value)
    return re.sub(r"\[([^\]]*)\]", lambda m: "[" + m.group(1).replace(" ", "\u00a0") + "]", text)


def table(headings: list[str], rows: Iterable[list], caption: str | None = None,
          definitions: dict[str, str] | None = None) -> str:
    """A table whose headings carry their definition as a tooltip (definitions: heading -> text); cells wrap."""
    definitions = definitions or {}
    head = "".join(f"<th title='{esc(definitions[h])}'>{esc(h)}</th>" if h in definitions else f"<th>{esc(h)}</th>"
                   for h in headings)
    body = "".join("<tr>" + "".join(f"<td>{cell(c)}</td>" for c in row) + "</tr>" for row in rows)
    cap = f"<caption class='note'>{esc(caption)}</caption>" if caption else ""
    return f"<div class='scroll'><table>{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>"


def figure(png: str | Path, caption: str) -> str:
    """A PNG file embedded as a data URI."""
    data = base64.b64encode(Path(png).read_bytes()).decode("ascii")
    return (f"<figure><img src='data:image/png;base64,{data}' alt='{esc(caption)}'>"
            f"<figcaption>{esc(caption)}</figcaption></figure>")


def wav_bytes(audio: np.ndarray, sample_rate: int) -> bytes:
    """(channels, S) or (S,) float audio -> 16-bit PCM WAV bytes (plays in every browser)."""
    audio = np.asarray(audio, dtype=np.float32)
    audio = audio.T if audio.ndim == 2 else audio
    buf = io.BytesIO()
    sf.write(buf, np.clip(audio, -1.0, 1.0), sample_rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def audio_player(source: str | Path | bytes, caption: str) -> str:
    """An <audio controls> element with the clip embedded: a WAV path/bytes as is, any other file re-encoded
    to 16-bit WAV (so FLAC/OGG sources play everywhere)."""
    if isinstance(source, bytes):
        data = source
    elif Path(source).suffix.lower() == ".wav":
        data = Path(source).read_bytes()
    else:
        audio, sr = sf.read(str(source), dtype="float32", always_2d=True)
        data = wav_bytes(audio.T, sr)
    encoded = base64.b64encode(data).decode("ascii")
    return (f"<div class='player'><div>{esc(caption)}</div>"
            f"<audio controls preload='auto' src='data:audio/wav;base64,{encoded}'></audio></div>")


def settings_block(settings: dict, title: str = "settings") -> str:
    text = json.dumps(settings, indent=2, default=str)
    return f"<details open><summary>{esc(title)}</summary><pre>{esc(text)}</pre></details>"


def page(title: str, sections: list[tuple[str, str]], note: str = "") -> str:
    """sections: (heading, inner HTML) in order."""
    body = "".join(f"<h2>{esc(h)}</h2>{inner}" for h, inner in sections if inner)
    return ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            "<meta name='viewport' content='width=device-width, initial-scale=1'>"
            f"<title>{esc(title)}</title><link rel='icon' href='data:,'><style>{CSS}</style></head>"
            f"<body><h1>{esc(title)}</h1><p class='note'>{esc(note)}</p>{body}</body></html>\n")


def players(audio: dict[str, list[str]], sources: dict[str, str] | None = None) -> str:
    """audio: group (e.g. "reference", a model label) -> clip paths; one player per existing clip, named by the
    clip it comes from (sources: path -> source file or shard key; else the file's name)."""
    sources = sources or {}

    def caption(group: str, path: str) -> str:
        source = sources.get(path)
        if source is None:
            return f"{group}: {Path(path).name}"
        return f"{source} (input)" if group == "reference" else f"{source}: {group} reconstruction"

    items = [audio_player(p, caption(group, p)) for group, paths in audio.items() for p in paths if Path(p).is_file()]
    return f"<div class='players'>{''.join(items)}</div>" if items else ""


def write_html(text: str, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


FIGURE_CAPTIONS = {
    "psd": "Radially averaged power spectrum of each representation with its fitted power law (Fig. 2)",
    "correlation": "Channel-correlation matrices with LPI (Fig. 3)",
    "permutation": "alpha and LPI measured (with bootstrap interval where there is one) vs the same latent with "
                   "its channels reordered: random orders, group order shuffled, channels shuffled within groups",
    "eigen": "Order-invariant view: channel-covariance eigen-spectrum and temporal PSD slope per principal component",
}


def definitions_list(headings: Iterable[str], definitions: dict[str, str]) -> str:
    """<dl> of the headings that have a definition, in order, each once."""
    seen = dict.fromkeys(h for h in headings if h in definitions)
    items = "".join(f"<dt>{esc(h)}</dt><dd>{esc(definitions[h])}</dd>" for h in seen)
    return f"<dl class='defs'>{items}</dl>" if items else ""


def support_rows(reps: dict[str, dict]) -> list[list]:
    """One row per representation: what its numbers rest on (lafa.analysis.controls' support)."""
    rows = []
    for label, r in reps.items():
        c = r["controls"]
        spec, frames, groups = c["support"]["spectrum"], c["support"]["frames"], c["groups"]
        rows.append([label, r["channels"], spec["of_clips"], spec["clips"], spec["windows"],
                     f"{spec['effective_clips']:.1f}" + ("" if spec["interval"] else " (no interval)"),
                     frames["frames"], f"{frames['effective_clips']:.1f}" + ("" if frames["interval"] else " (no interval)"),
                     r["neighbour_radius"],
                     f"{groups['size']} x {groups['count']} ({groups['source']})" if groups.get("applies")
                     else f"none: {groups.get('note')}"])
    return rows


SUPPORT_HEADINGS = ["representation", "channels C", "clips read", "clips with a full window", "windows",
                    "effective clips (windows)", "frames N", "effective clips (frames)", "LPI radius r",
                    "groups (size x count)"]
SUPPORT_DEFINITIONS = {
    "clips with a full window": "clips at least one spectrum window long: only these enter alpha, its baselines "
                                "and the PC t-slope",
    "windows": "temporal windows whose spectra are averaged (alpha, PC t-slope)",
    "effective clips (windows)": "Kish's (sum w)^2 / sum w^2 over the clips' window counts: how many clips "
                                 "alpha effectively rests on; below the minimum there is no interval",
    "frames N": "frames of all clips stacked: the samples of LPI, PR and eig. slope",
    "effective clips (frames)": "the same over the clips' frame counts, for LPI, PR and eig. slope",
    "LPI radius r": "neighbours on each side in LPI, r = ceil(lambda C)",
    "groups (size x count)": "contiguous channel groups of the group-aware baselines and where their size "
                             "comes from",
}


def analysis_page(report: dict) -> str:
    """The page of one `lafa analyze` report (its JSON as written, figure and audio paths inside it)."""
    from lafa.analysis.latent_report import COLUMN_DEFINITIONS, baseline_table, headline_table

    settings = report.get("settings", {})
    reps = report["representations"]
    head_h, head_rows = headline_table(report["summary"])
    base_h, base_rows = baseline_table(report["summary"])
    conf = settings.get("confidence")
    note = (f"intervals: {conf:.0%} percentile bootstrap over clips ({settings.get('bootstrap')} resamples), given "
            f"only where at least {settings.get('min_clips', 2)} effective clips carry the measure (see below); "
            "no brackets: no interval" if conf else "")
    base_note = (f"baselines: mean over {settings.get('permutations')} channel orders each; excess = measured - "
                 "baseline; '-': the baseline does not apply (see the groups column below)")
    warnings = [f"{label}: {w}" for label, r in reps.items() for w in r.get("warnings") or []]
    figures = "".join(figure(path, FIGURE_CAPTIONS.get(name, name.replace("_", " ")))
                      for name, path in report.get("figures", {}).items() if Path(path).is_file())
    skipped = report.get("skipped") or []
    defs = {**COLUMN_DEFINITIONS, **SUPPORT_DEFINITIONS}
    sections = [
        ("locality measures", table(head_h, head_rows, note, defs)),
        ("order against three baselines: random, group order, within group",
         table(base_h, base_rows, base_note, defs)),
        ("warnings", "".join(f"<p class='warn'>{esc(w)}</p>" for w in warnings)),
        ("what each number rests on", table(SUPPORT_HEADINGS, support_rows(reps), None, defs)),
        ("columns", definitions_list([*head_h, *base_h, *SUPPORT_HEADINGS], defs)),
        ("figures", figures),
        ("audio", players(report.get("audio") or {}, report.get("audio_sources"))),
        ("skipped files", table(["file", "reason"], [[s["path"], s["reason"]] for s in skipped]) if skipped else ""),
        ("settings", settings_block({"settings": settings, "versions": report.get("versions", {})})),
    ]
    return page("lafa analyze", sections, "alpha and LPI (Sec. 3) with channel-order baselines, what each number "
                "rests on, and intervals where enough clips allow one")


def markdown_tables(text: str) -> str:
    """Every markdown table of `text` as an HTML table, captioned by the paragraph just before it."""
    html, caption, rows = [], None, []
    for line in [*text.splitlines(), ""]:
        if line.startswith("|"):
            if not line.startswith("|---"):
                rows.append([c.strip() for c in line.strip().strip("|").split("|")])
            continue
        if rows:
            html.append(table(rows[0], rows[1:], caption))
            rows, caption = [], None
        if line.strip():
            caption = line.strip()
    return "".join(html)


def study_page(report: dict, figures: dict[str, str], latent_table: list[str], audio: dict[str, list[str]],
               settings: dict, sections_md: dict[str, str] | None = None) -> str:
    """The page of one study report. figures: caption -> PNG path; latent_table: the markdown lines of the
    controls table (or []); audio: group -> clip paths; sections_md: heading -> markdown whose tables are shown
    (the frontier, matched reconstruction, learning criteria)."""
    metric = report["headline_metric"]
    headings = ["run", "alpha", "LPI", "final", "steps to target", "speed-up"]
    rows = []
    for run in report["runs"].values():
        latent = run["latent"] or {}
        s = run["summary"][metric]
        cells = []
        for key, digits in (("final", 4), ("steps_to_target", 0), ("speedup", 2)):
            v = s[key]
            cells.append("-" if v is None else v if isinstance(v, str) else
                         f"{v['mean']:.{digits}f}" + (f" +- {v['std']:.{digits}f}" if v["std"] is not None else ""))
        rows.append([run["label"] + ("" if run["finished"] else " (unfinished)"),
                     "-" if latent.get("alpha") is None else f"{latent['alpha']:.2f}",
                     "-" if latent.get("lpi") is None else f"{latent['lpi']:.3f}", *cells])
    better = "lower" if report["metrics"][metric]["better"] == "min" else "higher"
    note = (f"metric: {report['metrics'][metric]['label']} ({metric}, {better} is better); target: the final "
            f"value of {report['baseline']}; mean +- sample std over seeds {report['seeds']}")
    sections = [
        ("convergence", table(headings, rows, note)),
        ("locality of each latent space", markdown_tables("\n".join(latent_table))),
        *((heading, markdown_tables(text)) for heading, text in (sections_md or {}).items()),
        ("figures", "".join(figure(path, caption) for caption, path in figures.items() if Path(path).is_file())),
        ("audio", players(audio)),
        ("settings", settings_block(settings)),
    ]
    return page(f"lafa study {report['study']}", sections, f"factor: {report['factor']}")
