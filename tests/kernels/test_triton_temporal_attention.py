"""Packed short-sequence attention (dit_video/kernels/triton_temporal_attention.py): dispatch and opcheck. Its numerics
(packing 2+ sequences per tile, block-diagonal masking, partially filled last tiles, masks) are in the
kernel contract suite, tests/kernels/test_contract.py."""

from __future__ import annotations

import torch

from dit_video.kernels import resolve, triton_temporal_attention

packed = triton_temporal_attention.packed_attention


def test_dispatch_prefers_packed_for_short_sequences():
    qkv = torch.randn(1, 8, 4, 3, 2, 16)
    q, k, v = (x.transpose(1, 2) for x in qkv.unbind(3))
    assert resolve("attention", "triton", q, k, v).fn is packed
    assert resolve("attention", "auto", q.cuda() if torch.cuda.is_available() else q, k, v).backend in (
        "triton", "cpu", "torch")
    long = torch.randn(1, 65, 2, 16)
    assert "longer than 64" in triton_temporal_attention.check(long, long, long)
    wide = torch.randn(1, 8, 2, 160)
    assert "head_dim 160" in triton_temporal_attention.check(wide, wide, wide)


def test_packed_opcheck():
    q, k, v = (torch.randn(2, 3, 1, 16) for _ in range(3))
    torch.library.opcheck(triton_temporal_attention.packed_attention_op, (q, k, v, None, 0.3),
                          test_utils=("test_schema", "test_autograd_registration", "test_faketensor"))
