"""Tiny CPU tensors: one intra-op thread (pool overhead dominates, and the CI machine is shared)."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
