"""OpenL3's official Keras weight files: which model a file holds, and copying it into `OpenL3Audio` by layer
position, as Keras' load_weights does (lafa.metrics.openl3)."""

from __future__ import annotations

import re
from pathlib import Path

import h5py
import numpy as np
import torch
from torch import nn

FRONT_END_LAYER = {"linear": "stft_magnitude", "mel128": "melspectrogram", "mel256": "melspectrogram"}
FILE_NAME = re.compile(r"openl3_audio_(linear|mel128|mel256)_(music|env)(?:[-.]|$)")


def _keras_layers(path: str | Path) -> tuple[list[str], list[tuple[str, dict[str, np.ndarray]]]]:
    """All layer names, and (layer name, {weight kind: array}) of every layer with weights, in file order."""
    with h5py.File(path, "r") as f:
        group = f["model_weights"] if "model_weights" in f else f  # save_weights file or a model.save file
        if "layer_names" not in group.attrs:
            raise ValueError(f"{path} is not a Keras HDF5 weight file (no 'layer_names' attribute)")
        names = [_text(raw) for raw in group.attrs["layer_names"]]
        layers = []
        for name in names:
            weight_names = [_text(w) for w in group[name].attrs["weight_names"]]
            if weight_names:  # kind = "kernel" from "conv2d_1/kernel:0"
                layers.append((name, {w.split("/")[-1].split(":")[0]: np.array(group[name][w])
                                      for w in weight_names}))
        return names, layers


def _text(raw: bytes | str) -> str:
    return raw.decode() if isinstance(raw, bytes) else str(raw)


def weight_file_config(path: str | Path) -> tuple[str, str]:
    """(input_repr, content_type) of an OpenL3 weight file, read from the file; ValueError when it cannot tell.

    openl3 0.4.2 determines a file's model from its name (`*openl3_audio_<repr>_<content>.h5` or `...-*.h5`,
    e.g. the release's openl3_audio_mel256_music-v0_4_0.h5); the weights themselves have the same shapes for
    every representation, so a name that says nothing is refused. When the file records openl3's kapre
    front-end layer (stft_magnitude for linear, melspectrogram for mel) it must agree with the name.
    """
    path = Path(path)
    match = FILE_NAME.search(path.name)
    if match is None:
        raise ValueError(f"{path.name}: cannot tell which OpenL3 model this file holds (linear, mel128 and "
                         "mel256 weights have the same shapes); name it as openl3 does, "
                         "openl3_audio_<linear|mel128|mel256>_<music|env>[-v0_4_0].h5")
    input_repr, content_type = match.groups()
    names, _ = _keras_layers(path)
    front_ends = set(FRONT_END_LAYER.values()) & {n.split("/")[-1] for n in names}
    if front_ends and front_ends != {FRONT_END_LAYER[input_repr]}:
        raise ValueError(f"{path.name} is named {input_repr} but its front-end layer is {sorted(front_ends)} "
                         f"({FRONT_END_LAYER[input_repr]} expected): the file was renamed or is damaged")
    return input_repr, content_type


def _copy(target: torch.Tensor, value: np.ndarray, where: str) -> None:
    if tuple(value.shape) != tuple(target.shape):
        raise ValueError(f"{where}: shape {tuple(value.shape)} does not fit {tuple(target.shape)}")
    with torch.no_grad():
        target.copy_(torch.from_numpy(np.ascontiguousarray(value)).to(target.dtype))


def load_keras_weights(model: nn.Module, path: str | Path) -> None:
    """Copy an official `openl3_audio_*-v0_4_0.h5` file into `model` by layer position ([BN, Conv] x 8)."""
    _, layers = _keras_layers(path)
    modules = model.weighted_layers()
    if len(layers) != len(modules):
        raise ValueError(f"{path} holds {len(layers)} layers with weights; the OpenL3 audio network has "
                         f"{len(modules)}")
    for (name, weights), module in zip(layers, modules, strict=True):
        where = f"{path}:{name}"
        if isinstance(module, nn.BatchNorm2d):
            kind, targets = "BatchNormalization", {"gamma": module.weight, "beta": module.bias,
                                                   "moving_mean": module.running_mean,
                                                   "moving_variance": module.running_var}
        else:
            kind, targets = "Conv2D", {"kernel": module.weight, "bias": module.bias}
        if set(weights) != set(targets):
            raise ValueError(f"{where}: expected {kind} weights, found {sorted(weights)}")
        for key, target in targets.items():  # a kernel (kh, kw, in, out) -> (out, in, kh, kw)
            _copy(target, weights[key].transpose(3, 2, 0, 1) if key == "kernel" else weights[key], where)
