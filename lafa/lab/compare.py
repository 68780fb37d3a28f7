"""lafa's locality analysis of lab latents beside its closed-form values (issue 23: "its `lafa analyze` numbers
are printed beside their closed-form values").

`analysis_vs_closed_form` draws clips from the spec, runs `lafa.analysis.controls.locality_measures` on them
with the given settings, and pairs every measure (value and bootstrap interval) with `population_measures` of the
same settings; `table` formats that as the rows a command prints.
"""

from __future__ import annotations

import torch

from lafa.analysis.controls import MEASURES, locality_measures
from lafa.lab.locality import population_measures
from lafa.lab.spec import GaussianLatentSpec


def analysis_vs_closed_form(spec: GaussianLatentSpec, clips: int = 200, seed: int = 0, lam: float = 0.06,
                            ridge: float = 1.0, window: int = 64, permutations: int = 20, bootstrap: int = 200,
                            confidence: float = 0.95) -> dict[str, dict[str, float | None]]:
    """{measure: {"measured", "low", "high", "closed_form"}} for every measure of `locality_measures`.
    The window is at most the spec's frames; `seed` draws the clips and the estimator's permutations."""
    window = min(window, spec.frames)
    latents = spec.sample(clips, torch.Generator().manual_seed(seed)).float()  # (clips, C, N), as batches hold them
    measured = locality_measures(latents, lam=lam, ridge=ridge, window=window, permutations=permutations,
                                 bootstrap=bootstrap, confidence=confidence, seed=seed)
    closed = population_measures(spec, lam=lam, window=window, permutations=permutations, seed=seed)
    return {name: {"measured": measured[name]["value"], "low": measured[name]["low"],
                   "high": measured[name]["high"], "closed_form": closed.get(name)} for name in MEASURES}


def table(result: dict[str, dict[str, float | None]]) -> list[str]:
    """One line per measure: measured [interval] and the closed form."""

    def num(x: float | None) -> str:
        return "-" if x is None else f"{x:.4f}"

    lines = [f"{'measure':<22}{'measured':>10}  {'interval':<20}{'closed form':>12}"]
    for name, row in result.items():
        interval = f"[{num(row['low'])}, {num(row['high'])}]"
        lines.append(f"{name:<22}{num(row['measured']):>10}  {interval:<20}{num(row['closed_form']):>12}")
    return lines
