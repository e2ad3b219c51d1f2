"""Training tests run single-threaded: reference and trained results are compared exactly, and
BLAS reductions round differently with another thread count."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
