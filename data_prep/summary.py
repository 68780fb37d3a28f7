"""The table printed at the end of a build: where every input went."""

from __future__ import annotations

from pathlib import Path


def summary_table(manifest: dict, out: Path) -> str:
    """Inputs, shards per split, skips per category; the counts add up (listed = in shards + skipped)."""
    rows = [("inputs listed", str(manifest["files_listed"]), "")]
    for split, v in manifest["splits"].items():
        rows.append((f"  -> {split}", str(v["files"]), f"{v['chunks']} chunks, {v['hours']:.3f} h, "
                                                        f"{len(v['shards'])} shards"))
    rows.append(("  -> skipped", str(manifest["files_skipped"]), "reasons: manifest.json `skipped`"))
    for category, n in manifest["skipped_by_category"].items():
        example = next(s for s in manifest["skipped"] if s.get("category") == category)
        rows.append((f"       {category}", str(n), f"e.g. {example['path']}: {example['reason']}"[:110]))
    stored = manifest.get("stored")
    if stored:  # how the chunks' audio is stored (data_prep.passthrough)
        for fmt in ("flac", "wav"):
            if fmt in stored:
                rows.append((f"chunks encoded to {fmt.upper()}", str(stored[fmt]), ""))
        if stored["copy"]:
            rows.append(("chunks stored as-is", str(sum(stored["copy"].values())),
                         ", ".join(f"{ext} {n}" for ext, n in stored["copy"].items())
                         + ": source bytes, tags dropped (--no_copy: all encoded)"))
    if manifest.get("dropped_chunks"):
        rows.append(("silent chunks dropped", str(len(manifest["dropped_chunks"])), "manifest.json `dropped_chunks`"))
    if manifest.get("notes"):
        rows.append(("notes", str(len(manifest["notes"])), "manifest.json `notes`"))
    if manifest.get("quarantined"):
        rows.append(("stale shards moved", str(len(manifest["quarantined"])),
                     f"to {out / '.stale'}: " + ", ".join(manifest["quarantined"][:4])))
    width = max(len(r[0]) for r in rows)
    num = max(len(r[1]) for r in rows)
    lines = [f"{a:<{width}}  {b:>{num}}  {c}".rstrip() for a, b, c in rows]
    return "\n".join([f"data_prep: {out}", *lines])
