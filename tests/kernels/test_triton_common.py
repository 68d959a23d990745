"""Shared harness for the Triton kernel tests (interpreter, CPU) + tests of the stride helpers.

The correctness rule (KERNELS.md §2, flash-attention's): run the op three ways on one fresh
seeded input -- the Triton kernel in dtype X, the plain PyTorch reference in dtype X, and the
reference in fp64 -- and require, for the output and for the gradient of every input,

    max |kernel - fp64|  <=  2 * max |torch_X - fp64|  +  atol,

with atol one rounding step of dtype X at the reference's magnitude. Every buffer the launchers
allocate starts as NaN (``triton_common.POISON``), so an element a kernel leaves unwritten fails.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pytest
import torch

from dit_video.kernels import triton_common
from dit_video.kernels.triton_common import collapse_dims

EPS = {torch.float32: 2.0**-23, torch.bfloat16: 2.0**-8, torch.float16: 2.0**-11}


@pytest.fixture(autouse=True)
def poison_outputs(monkeypatch):
    """Every Triton output/scratch buffer starts as NaN in these tests."""
    monkeypatch.setattr(triton_common, "POISON", True)
    yield


def _leaves(inputs: Sequence[torch.Tensor], dtype: torch.dtype | None, grad: bool) -> list[torch.Tensor]:
    out = []
    for t in inputs:
        t = t.detach().clone()
        if dtype is not None and t.is_floating_point():
            t = t.to(dtype)
        out.append(t.requires_grad_(grad and t.is_floating_point() and t.dtype != torch.bool))
    return out


def _tuple(x) -> tuple[torch.Tensor, ...]:
    return tuple(x) if isinstance(x, (tuple, list)) else (x,)


def compare(kernel: Callable, reference: Callable, inputs: Sequence[torch.Tensor], *,
            build: Callable[[list[torch.Tensor]], tuple] = tuple, grad_inputs: Sequence[int] | None = None,
            atol_mult: float = 1.0, check_grads: bool = True) -> dict[str, tuple[float, float]]:
    """Apply the 2x rule to outputs and input gradients; returns {name: (kernel err, torch err)}.

    ``inputs`` are leaf tensors in the test dtype (e.g. a fused qkv); ``build(leaves)`` turns the
    leaves into the op's positional arguments (views, masks, ...), so gradients flow back through
    the real strided views to the leaves.
    """
    dtype = next(t.dtype for t in inputs if t.is_floating_point())
    grad_inputs = [i for i, t in enumerate(inputs) if t.is_floating_point()] if grad_inputs is None else grad_inputs
    runs = {}
    for name, fn, dt in (("kernel", kernel, None), ("torch", reference, None), ("fp64", reference, torch.float64)):
        leaves = _leaves(inputs, dt, check_grads)
        outs = _tuple(fn(*build(leaves)))
        runs[name] = (leaves, outs)
    gen = torch.Generator().manual_seed(1234)
    cots = [torch.randn(o.shape, generator=gen, dtype=torch.float64) for o in runs["fp64"][1]]
    grads = {}
    if check_grads:
        for name, (leaves, outs) in runs.items():
            loss = sum((o.double() * c).sum() for o, c in zip(outs, cots, strict=True))
            gs = torch.autograd.grad(loss, [leaves[i] for i in grad_inputs], allow_unused=True)
            grads[name] = [torch.zeros_like(leaves[i]) if g is None else g for i, g in zip(grad_inputs, gs,
                                                                                          strict=True)]
    report = {}

    def rule(label: str, k: torch.Tensor, t: torch.Tensor, r: torch.Tensor) -> None:
        assert k.shape == r.shape, (label, k.shape, r.shape)
        assert torch.isfinite(k).all(), f"{label}: non-finite values (an unwritten NaN-poisoned element?)"
        ek = (k.double() - r).abs().max().item() if r.numel() else 0.0
        et = (t.double() - r).abs().max().item() if r.numel() else 0.0
        atol = atol_mult * EPS[dtype] * max(1.0, r.abs().max().item() if r.numel() else 1.0)
        report[label] = (ek, et)
        assert ek <= 2 * et + atol, f"{label}: kernel error {ek:.3g} > 2 x torch {dtype} error {et:.3g} + {atol:.2g}"

    for i, (k, t, r) in enumerate(zip(runs["kernel"][1], runs["torch"][1], runs["fp64"][1], strict=True)):
        rule(f"out{i}", k, t, r)
    for j, i in enumerate(grad_inputs if check_grads else []):
        rule(f"grad{i}", grads["kernel"][j], grads["torch"][j], grads["fp64"][j])
    return report


DTYPES = [torch.float32, torch.bfloat16]


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


def test_compare_catches_wrong_kernels():
    """The harness is not vacuous: a slightly wrong op, a wrong gradient, or an unwritten element fail."""
    from dit_video.kernels.reference import attention_ref

    q, k, v = (torch.randn(1, 5, 1, 8, generator=torch.Generator().manual_seed(i)) for i in range(3))
    compare(attention_ref, attention_ref, [q, k, v])  # the reference against itself passes

    def off_scale(q, k, v):
        return attention_ref(q, k, v, scale=8 ** -0.5 * 1.001)

    with pytest.raises(AssertionError, match="out0"):
        compare(off_scale, attention_ref, [q, k, v])

    class WrongGrad(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x.clone()

        @staticmethod
        def backward(ctx, g):
            return g * 1.001

    def wrong_grad(q, k, v):
        return attention_ref(WrongGrad.apply(q), k, v)

    with pytest.raises(AssertionError, match="grad0"):
        compare(wrong_grad, attention_ref, [q, k, v])

    def unwritten(q, k, v):
        o = attention_ref(q, k, v).clone()
        o[0, -1, 0, -1] = float("nan")
        return o

    with pytest.raises(AssertionError, match="non-finite"):
        compare(unwritten, attention_ref, [q, k, v], check_grads=False)
