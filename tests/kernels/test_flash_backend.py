"""The ``flash`` backend's adapter (dit_video/kernels/flash_backend.py) against a stand-in flash_attn module.

flash-attn itself needs a CUDA GPU and cannot be installed here. The stand-in implements
``flash_attn_func`` and ``flash_attn_varlen_func`` with SDPA and enforces what the real functions require
(fp16/bf16, [B, L, H, D] with unit head-dim stride and no stride-0 batch, head dim a multiple of 8 and
<= 256, int32 cumulative sequence lengths that match the packed tensors), so the adapter's folding of
strided views, broadcast text keys, key packing for masks, fully masked sequences and head-dim padding
are checked here, outputs and gradients, against the torch reference.
"""

from __future__ import annotations

import importlib
import sys
import types

import pytest
import torch
import torch.nn.functional as F

try:
    import contract
except ImportError:
    from . import contract

from dit_video.kernels import dispatch, numerics
from dit_video.kernels.reference import attention_ref


def _check(t: torch.Tensor, dims: int) -> None:
    assert t.dtype in (torch.float16, torch.bfloat16), t.dtype
    assert t.dim() == dims and t.stride(-1) == 1 and 0 not in t.stride(), t.stride()
    assert t.shape[-1] % 8 == 0 and t.shape[-1] <= 256, t.shape


def flash_attn_func(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False):
    for t in (q, k, v):
        _check(t, 4)
    assert dropout_p == 0.0 and not causal and q.shape[0] == k.shape[0] == v.shape[0]
    o = F.scaled_dot_product_attention(q.transpose(1, 2).float(), k.transpose(1, 2).float(),
                                       v.transpose(1, 2).float(), scale=softmax_scale)
    return o.transpose(1, 2).to(q.dtype)


def flash_attn_varlen_func(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, dropout_p=0.0,
                           softmax_scale=None, causal=False):
    for t in (q, k, v):
        _check(t, 3)
    for cu, total, mx in ((cu_seqlens_q, q.shape[0], max_seqlen_q), (cu_seqlens_k, k.shape[0], max_seqlen_k)):
        assert cu.dtype == torch.int32 and int(cu[0]) == 0 and int(cu[-1]) == total
        lens = cu[1:] - cu[:-1]
        assert (lens > 0).all() and int(lens.max()) <= mx  # flash-attn has no empty sequences
    outs = []
    for i in range(len(cu_seqlens_q) - 1):
        qi = q[cu_seqlens_q[i]:cu_seqlens_q[i + 1]]
        ki, vi = (t[cu_seqlens_k[i]:cu_seqlens_k[i + 1]] for t in (k, v))
        o = F.scaled_dot_product_attention(qi.transpose(0, 1).float(), ki.transpose(0, 1).float(),
                                           vi.transpose(0, 1).float(), scale=softmax_scale)
        outs.append(o.transpose(0, 1).to(q.dtype))
    return torch.cat(outs)


@pytest.fixture
def flash(monkeypatch):
    """The backend module imported against the stand-in, registering into a throwaway registry."""
    fake = types.ModuleType("flash_attn")
    fake.flash_attn_func, fake.flash_attn_varlen_func = flash_attn_func, flash_attn_varlen_func
    monkeypatch.setitem(sys.modules, "flash_attn", fake)
    monkeypatch.setattr(dispatch, "_REGISTRY", {k: list(v) for k, v in dispatch._REGISTRY.items()})
    monkeypatch.setattr(dispatch, "_CACHE", type(dispatch._CACHE)())
    sys.modules.pop("dit_video.kernels.flash_backend", None)
    mod = importlib.import_module("dit_video.kernels.flash_backend")
    yield mod
    sys.modules.pop("dit_video.kernels.flash_backend", None)


def test_adapter_matches_the_reference_on_the_contract_cases(flash):
    served = 0
    for case in contract.fixed_cases("attention") + [contract.random_case("attention", s) for s in range(40)]:
        if case.dtype != torch.bfloat16:
            continue
        assert flash.shape_reason(*case.args(), case.kwargs.get("key_padding_mask")) is None, case.name
        numerics.compare(lambda *a, kw=case.kwargs: flash.attention(*a, **kw),
                         lambda *a, kw=case.kwargs: attention_ref(*a, **kw), case.leaves, build=case.build,
                         reduction=case.n)
        served += 1
    assert served >= 25


def test_fully_masked_sequences_give_zero_and_no_gradient(flash):
    q = torch.randn(2, 3, 5, 2, 40).bfloat16().requires_grad_()
    kv = torch.randn(2, 1, 7, 2, 2, 40).bfloat16()
    k, v = kv.unbind(3)
    mask = torch.rand(2, 1, 7) > 0.3
    mask[0, 0, 0] = True
    mask[1] = False  # sample 1 has no text at all
    o = flash.attention(q, k, v, mask)
    assert (o[1] == 0).all() and (o[0] != 0).any()
    o.float().sum().backward()
    assert (q.grad[1] == 0).all()


def test_refusals_name_the_reason(flash):
    q = torch.randn(1, 4, 2, 16)
    assert "CUDA" in flash.check(q, q, q)
    assert "fp16/bf16" in flash.shape_reason(q, q, q, None)
    big = torch.randn(1, 4, 1, 320).bfloat16()
    assert "head_dim 320" in flash.shape_reason(big, big, big, None)


def test_without_the_package_the_backend_says_why():
    sys.modules.pop("dit_video.kernels.flash_backend", None)
    if importlib.util.find_spec("flash_attn") is not None:
        pytest.skip("flash-attn is installed here")
    with pytest.raises(ModuleNotFoundError, match="pip install flash-attn"):
        importlib.import_module("dit_video.kernels.flash_backend")
    assert "flash" in dispatch.available("attention") and dispatch.available("attention")["flash"]
