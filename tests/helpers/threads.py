"""torch on one thread: oneDNN's results depend on the thread count in the last bits, and small float64 matmuls run
~50x faster on one thread than on two contended cores. Import `one_thread` into a test module or a conftest.py
(`from tests.helpers.threads import one_thread  # noqa: F401`): it is autouse there."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
