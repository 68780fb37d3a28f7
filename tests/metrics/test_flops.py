"""The closed-form FLOP counts of the metric networks (docs/benchmarks.md's machine bound) against torch's counter.

torch.utils.flop_counter counts every matmul and convolution the forward actually dispatches (on meta tensors:
no arithmetic is done), so a wrong layer shape, a missed pool or a wrong token count in the formulas fails here.
"""

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from lafa.metrics import openl3, passt
from lafa.metrics.eigen_fft import eigen_rfft_tensor


def _counted(model: torch.nn.Module, x: torch.Tensor) -> dict[str, int]:
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    return {str(op).split(".")[1]: n for op, n in counter.get_flop_counts()["Global"].items()}


@pytest.mark.parametrize("input_repr, size", [("mel256", 512), ("mel128", 6144), ("linear", 512)])
def test_openl3_window_flops_equal_the_counted_forward(input_repr, size):
    model = openl3.OpenL3Audio(input_repr, size).eval().to("meta")
    batch = 3
    counted = _counted(model, torch.empty(batch, openl3.WINDOW, device="meta"))
    closed = openl3.window_flops(input_repr)
    assert counted["convolution"] == batch * closed["conv"]
    assert counted.get("mm", 0) == batch * closed["mel"]  # the filterbank matmul (none for linear)
    assert sum(counted.values()) == batch * closed["matmul"]
    if input_repr == "mel256":  # the bench configuration: 20.5 GFLOP per 1 s window
        assert 20.4e9 < closed["matmul"] < 20.6e9


class _ElementwiseCount(TorchDispatchMode):
    """Elements produced by float add / sub / mul: the real operations of an elementwise computation."""

    def __init__(self):
        super().__init__()
        self.ops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func.overloadpacket in (torch.ops.aten.add, torch.ops.aten.sub, torch.ops.aten.mul):
            self.ops += out.numel()
        return out


@pytest.mark.parametrize("n", [512, 2048])
def test_openl3_fft_operation_count_is_the_eigen_transforms(n):
    count = _ElementwiseCount()
    with count:
        eigen_rfft_tensor(torch.randn(1, n))
    frames = openl3.window_flops("linear" if n == 512 else "mel256")["fft_elementwise"]
    per_frame = frames // (197 if n == 512 else 199)
    assert count.ops == per_frame


@pytest.fixture(scope="module")
def passt_meta():
    return passt.build_passt(None).to("meta")


@pytest.mark.parametrize("seconds", [2.0, 3.37])
def test_passt_window_flops_equal_the_counted_forward(passt_meta, seconds):
    samples = int(seconds * passt.PASST_SAMPLE_RATE)
    counted = _counted(passt_meta, torch.empty(1, samples, device="meta"))
    assert sum(counted.values()) == passt.window_flops(samples)["matmul"]


def test_passt_ten_second_window_is_vit_base_on_1190_tokens():
    ten = passt.window_flops()
    assert ten["tokens"] == 12 * 99 + 2
    assert np.isclose(ten["matmul"], 254.95e9, rtol=1e-3)
