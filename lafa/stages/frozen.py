"""Frozen helpers a stage uses but never trains or saves (a text encoder, an autoencoder): held outside the
module tree, so they are not in the state dict (a checkpoint names them by path in its config) and not copied by
deepcopy (Lightning's EMA `WeightAveraging` deep-copies the stage: the copy shares them)."""

from __future__ import annotations

from typing import Any


class Frozen:
    def __init__(self, **modules: Any) -> None:
        self.__dict__.update(modules)

    def __deepcopy__(self, memo: dict) -> Frozen:
        return self
