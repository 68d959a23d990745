"""Packed short-sequence attention (kernels/triton_temporal_attention.py) under the interpreter.

The interpreter tile is sized so that short sequences pack 2+ per program (e.g. T=5 -> 3 per
16-row tile, T=17 -> 3 per 64-row tile), so the block-diagonal masking between sequences that
share a tile is exercised, including a partially filled last tile.
"""

from __future__ import annotations

import pytest
import torch

from dit_video.kernels import resolve, triton_temporal_attention
from dit_video.kernels.reference import attention_ref

try:
    from test_triton_common import DTYPES, compare, poison_outputs  # noqa: F401 - autouse fixture
except ImportError:
    from .test_triton_common import DTYPES, compare, poison_outputs  # noqa: F401

packed = triton_temporal_attention.packed_attention


def _rand(shape, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g).to(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("tsh", [(5, 3, 2, 40), (17, 2, 3, 80), (1, 3, 2, 16)])
def test_packed_temporal_view_of_fused_qkv(dtype, tsh):
    """The real temporal view ([B, S, T, H, D] strided view of [B, T, S, 3, H, D]), fwd + grads."""
    t, s, h, d = tsh
    qkv = _rand((2, t, s, 3, h, d), dtype, 11)

    def build(leaves):
        return tuple(x.transpose(1, 2) for x in leaves[0].unbind(3))

    compare(packed, attention_ref, [qkv], build=build)


@pytest.mark.parametrize("dtype", DTYPES)
def test_packed_mask_broadcast_and_fully_masked_rows(dtype):
    """Short text (Lk=7) against frames, stride-0 broadcast keys, a sample with no valid key."""
    b, t, s, L, h, d = 2, 2, 9, 7, 2, 24
    q = _rand((b, t, s, h, d), dtype, 12)
    kv = _rand((b, 1, L, 2, h, d), dtype, 13)
    g = torch.Generator().manual_seed(14)
    mask = torch.rand(b, L, generator=g) > 0.5
    mask[0, 0] = True
    mask[1] = False

    def build(leaves):
        k, v = leaves[1].unbind(3)
        return leaves[0], k, v, mask[:, None]

    compare(packed, attention_ref, [q, kv], build=build)
    qq = q.clone().requires_grad_()
    k, v = kv.unbind(3)
    o = packed(qq, k, v, mask[:, None])
    assert torch.isfinite(o).all() and (o[1] == 0).all()
    o.float().sum().backward()
    assert (qq.grad[1] == 0).all()


def test_packed_output_lands_in_token_layout():
    q, k, v = torch.randn(1, 4, 6, 3, 2, 16).unbind(3)
    o = packed(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
    assert o.transpose(1, 2).is_contiguous()


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
