import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    """The lab's small float64 matmuls run ~50x faster on one torch thread than on two contended cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
