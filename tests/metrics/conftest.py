"""Shared fixtures of the metric tests: weight files in the official layouts, written with random values."""

import h5py
import numpy as np
import pytest

from lafa.metrics.openl3 import WIDTHS


def write_keras_h5(path, seed: int = 0) -> dict[str, dict[str, np.ndarray]]:
    """A random-weight file in the layout of the official openl3 v0_4_0 files (Keras save_weights)."""
    rng = np.random.default_rng(seed)
    layers: list[tuple[str, dict[str, np.ndarray]]] = [("input_1", {}), ("melspectrogram", {})]
    in_ch = 1
    bn_idx = 1
    layers.append((f"batch_normalization_{bn_idx}", {}))
    for i, width in enumerate(WIDTHS, start=1):
        conv_name = "audio_embedding_layer" if i == len(WIDTHS) else f"conv2d_{i}"
        layers.append(
            (
                conv_name,
                {"kernel": rng.normal(0, 0.05, (3, 3, in_ch, width)), "bias": rng.normal(0, 0.1, width)},
            )
        )
        if i < len(WIDTHS):
            bn_idx += 1
            layers.append((f"batch_normalization_{bn_idx}", {}))
            layers.append((f"activation_{i}", {}))
            if i in (2, 4, 6):
                layers.append((f"max_pooling2d_{i // 2}", {}))
        in_ch = width
    # fill the BN layers now that their widths are known (input BN has 1 channel, then the conv widths)
    bn_widths = iter((1, *WIDTHS[:-1]))
    out = {}
    for name, weights in layers:
        if name.startswith("batch_normalization"):
            w = next(bn_widths)
            weights.update(
                gamma=rng.uniform(0.5, 1.5, w),
                beta=rng.normal(0, 0.1, w),
                moving_mean=rng.normal(0, 0.1, w),
                moving_variance=rng.uniform(0.5, 2.0, w),
            )
        out[name] = weights
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = [n.encode() for n, _ in layers]
        f.attrs["backend"] = b"tensorflow"
        f.attrs["keras_version"] = b"2.4.0"
        for name, weights in layers:
            g = f.create_group(name)
            names = [f"{name}/{k}:0" for k in weights]
            g.attrs["weight_names"] = [n.encode() for n in names]
            for k, v in weights.items():
                g.create_dataset(f"{name}/{k}:0", data=v.astype(np.float32))
    return out


@pytest.fixture(scope="session")
def keras_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("openl3") / "openl3_audio_mel256_music-v0_4_0.h5"
    return path, write_keras_h5(path)
