import pytest
import torch


@pytest.fixture(scope="session", autouse=True)
def torch_one_thread():
    """Tiny models train many times faster on one intra-op thread on a loaded 2-core box."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
