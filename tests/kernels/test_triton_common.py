"""Helpers shared by the Triton kernels (dit_video/kernels/triton_common.py): stride folding, NaN poisoning, where
they may run. The numerics harness is dit_video.kernels.numerics; the contract suite test_contract.py."""

from __future__ import annotations

import pytest
import torch

from dit_video.kernels import triton_common
from dit_video.kernels.triton_common import collapse_dims


@pytest.fixture(autouse=True)
def poison_outputs(monkeypatch):
    """Every Triton output/scratch buffer starts as NaN in these tests (test_triton_model imports this)."""
    monkeypatch.setattr(triton_common, "POISON", True)
    yield


# ---------------------------------------------------------------------------- helper tests
def test_collapse_dims_merges_only_when_every_tensor_allows():
    # contiguous [2, 3, 4] batch dims fold into one; a transposed tensor blocks the fold
    assert collapse_dims((2, 3, 4), [(12, 4, 1), (12, 4, 1)], 2) == ([1, 24], [[0, 1], [0, 1]])
    assert collapse_dims((2, 3, 4), [(12, 4, 1), (12, 1, 3)], 2) is None
    assert collapse_dims((2, 3, 4), [(12, 4, 1), (12, 1, 3)], 3) == ([2, 3, 4], [[12, 4, 1], [12, 1, 3]])
    # the temporal view of [B, T, S, ...] (batch dims B, S): S strides 3HD, B strides T*S*3HD: no fold
    assert collapse_dims((2, 5), [(5 * 7 * 48, 48)], 2) == ([2, 5], [[1680, 48]])
    # size-1 dims are dropped, broadcast (stride 0) dims fold with each other, result padded in front
    assert collapse_dims((1, 5), [(99, 7)], 2) == ([1, 5], [[0, 7]])
    assert collapse_dims((2, 3), [(0, 0), (3, 1)], 2) == ([1, 6], [[0, 0], [0, 1]])
    assert collapse_dims((), [()], 2) == ([1, 1], [[0, 0]])


def test_poison_fills_nan():
    t = triton_common.poisoned(torch.empty(3))
    assert torch.isnan(t).all()


def test_device_reason_refuses_cpu_without_interpreter(monkeypatch):
    x = torch.randn(2)
    assert triton_common.device_reason(x) is None  # conftest sets TRITON_INTERPRET=1
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    assert "CUDA" in triton_common.device_reason(x)
