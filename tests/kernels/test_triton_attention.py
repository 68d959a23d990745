"""Triton flash attention (kernels/triton_attention.py) under the interpreter vs the torch reference.

Interpreter tiles are 16x16, so the odd sizes below (1, 17, 113; head dims 40, 80, 96, 256)
cross block boundaries in both the query and the key loops.
"""

from __future__ import annotations

import pytest
import torch

from dit_video.kernels import resolve, triton_attention
from dit_video.kernels.reference import attention_ref

try:
    from test_triton_common import DTYPES, compare, poison_outputs  # noqa: F401 - autouse fixture
except ImportError:  # tests/ laid out as a package
    from .test_triton_common import DTYPES, compare, poison_outputs  # noqa: F401

flash = triton_attention.attention


def _qkv(shape, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g).to(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", [
    # (batch, Lq, Lk, H, D)
    ((1,), 17, 113, 2, 40),
    ((1,), 1, 1, 1, 8),
    ((3, 1), 5, 17, 1, 80),
    ((1,), 9, 7, 1, 256),
])
def test_flash_dense(dtype, case):
    batch, lq, lk, h, d = case
    q = _qkv(batch + (lq, h, d), dtype, 1)
    k = _qkv(batch + (lk, h, d), dtype, 2)
    v = _qkv(batch + (lk, h, d), dtype, 3)
    compare(flash, attention_ref, [q, k, v])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("view", ["spatial", "temporal"])
def test_flash_reads_views_of_fused_qkv(dtype, view):
    """Both attention views of one [B, T, S, 3, H, D] projection, read in place; grads reach qkv."""
    b, t, s, h, d = (1, 2, 17, 2, 96) if view == "spatial" else (1, 17, 2, 2, 96)
    qkv = _qkv((b, t, s, 3, h, d), dtype, 4)

    def build(leaves):
        q, k, v = leaves[0].unbind(3)
        if view == "temporal":
            q, k, v = (x.transpose(1, 2) for x in (q, k, v))
        return q, k, v

    compare(flash, attention_ref, [qkv], build=build)


@pytest.mark.parametrize("dtype", DTYPES)
def test_flash_text_mask_broadcast_and_fully_masked_rows(dtype):
    """Cross-attention: q [B, T, S, H, D] against text k/v [B, 1, L, H, D] (stride-0 frames) with a
    key-padding mask; sample 1 has no valid key at all: its output and gradients must be exactly 0."""
    b, t, s, L, h, d = 2, 2, 17, 19, 1, 40
    q = _qkv((b, t, s, h, d), dtype, 5)
    kv = _qkv((b, 1, L, 2, h, d), dtype, 6)
    g = torch.Generator().manual_seed(7)
    mask = torch.rand(b, L, generator=g) > 0.4
    mask[0, 0] = True
    mask[1] = False

    def build(leaves):
        k, v = leaves[1].unbind(3)
        return leaves[0], k, v, mask[:, None]

    compare(flash, attention_ref, [q, kv], build=build)
    qq = q.clone().requires_grad_()
    kk = kv.clone().requires_grad_()
    k, v = kk.unbind(3)
    o = flash(qq, k, v, mask[:, None])
    assert torch.isfinite(o).all() and (o[1] == 0).all() and (o[0] != 0).any()
    (o.float() * torch.randn(o.shape)).sum().backward()
    assert (qq.grad[1] == 0).all() and (kk.grad[1] == 0).all() and (qq.grad[0] != 0).any()
    assert (kk.grad[0][:, ~mask[0]] == 0).all()  # masked keys get no gradient


def test_flash_output_lands_in_token_layout():
    """The temporal view's o is a [B, S, T, H, D] view of a contiguous [B, T, S, H, D] tensor."""
    b, t, s, h, d = 1, 4, 6, 2, 16
    q, k, v = torch.randn(b, t, s, 3, h, d).unbind(3)
    o = flash(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
    assert o.shape == (b, s, t, h, d)
    assert o.transpose(1, 2).is_contiguous()


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
