"""Triton flash attention (dit_video/kernels/triton_attention.py): what is specific to it. Its numerics (odd sizes,
strided views, masks, gradients) are in the kernel contract suite, tests/kernels/test_contract.py."""

from __future__ import annotations

import torch

from dit_video.kernels import resolve, triton_attention

flash = triton_attention.attention


def test_flash_opcheck():
    q, k, v = (torch.randn(1, 2, 5, 1, 16) for _ in range(3))
    mask = torch.tensor([[True, False, True, True, False]])[:, None]
    for m in (None, mask):
        torch.library.opcheck(triton_attention.flash_attention_op, (q, k, v, m, 0.25),
                              test_utils=("test_schema", "test_autograd_registration", "test_faketensor"))


def test_flash_check_refuses():
    q = torch.randn(1, 4, 2, 16)
    assert triton_attention.check(q, q, q) is None
    big = torch.randn(1, 4, 1, 320)
    assert "head_dim 320" in triton_attention.check(big, big, big)
    assert "dtype" in triton_attention.check(q.double(), q.double(), q.double())
    assert "mixed" in triton_attention.check(q, q.half(), q)
    assert "value head dim" in triton_attention.check(q, q, torch.randn(1, 4, 2, 8))


def test_flash_check_refuses_cpu_without_interpreter(monkeypatch):
    q = torch.randn(1, 4, 2, 16)
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    assert "CUDA" in triton_attention.check(q, q, q)


def test_dispatch_picks_flash_for_long_sequences():
    q = torch.randn(1, 80, 1, 16)
    impl = resolve("attention", "triton", q, q, q)
    assert impl.fn is triton_attention.attention
