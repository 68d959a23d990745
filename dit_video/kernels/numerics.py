"""The numerical contract every backend of a fused op meets against its torch reference.

Run the op three ways on one input -- the backend in dtype X, the plain PyTorch reference in dtype
X, and the reference in fp64 -- and require, for every output and the gradient of every input::

    max |backend - fp64|  <=  2 * max |torch_X - fp64|  +  floor,
    floor = eps(X) * sqrt(n) * max(1, max |fp64|)

(flash-attention's rule plus a floor). ``n`` is the length of the longest reduction that feeds the
value (attention: head dim, key and query lengths; LayerNorm: the width; a modulation gradient: the
tokens it is summed over). The floor is what any correct implementation with another summation
order may differ by: a sum of ``n`` rounded terms drifts like a random walk of ``sqrt(n)`` steps of
one rounding unit. It depends on the dtype and the shapes only, never on the CPU: the torch term
alone does (MKL/oneDNN/OpenBLAS pick different kernels on AMX Xeons and AVX-512 EPYCs), and a rule
made of it alone passed on one machine and failed on another. A kernel that is off by a wrong scale
factor (1e-3 relative) still fails in fp32 by three orders of magnitude.

Gradients use the cotangent drawn from a fixed seed, so every run of a case is the same problem.
Used by the test suite (``tests/kernels/contract.py``) and by ``python -m benchmarks gpu-check``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

EPS = {torch.float32: 2.0**-23, torch.bfloat16: 2.0**-8, torch.float16: 2.0**-11, torch.float64: 2.0**-52}


class NumericsError(AssertionError):
    """A backend broke the rule; the message names the output or gradient and the three numbers."""


def floor(dtype: torch.dtype, n: int, scale: float) -> float:
    """``eps(dtype) * sqrt(n) * max(1, scale)``: see the module docstring."""
    return EPS[dtype] * math.sqrt(max(int(n), 1)) * max(1.0, float(scale))


def max_error(a: torch.Tensor, ref: torch.Tensor) -> float:
    return (a.double() - ref.double()).abs().max().item() if ref.numel() else 0.0


def check(label: str, ours: torch.Tensor, same: torch.Tensor, ref: torch.Tensor, dtype: torch.dtype,
          n: int) -> tuple[float, float, float]:
    """Apply the rule to one tensor; returns (our error, torch's error, bound) or raises :class:`NumericsError`."""
    if tuple(ours.shape) != tuple(ref.shape):
        raise NumericsError(f"{label}: shape {tuple(ours.shape)} != reference {tuple(ref.shape)}")
    if not torch.isfinite(ours).all():
        raise NumericsError(f"{label}: non-finite values (an unwritten, NaN-poisoned element?)")
    ek, et = max_error(ours, ref), max_error(same, ref)
    bound = 2 * et + floor(dtype, n, ref.abs().max().item() if ref.numel() else 0.0)
    if ek > bound:
        raise NumericsError(f"{label}: error {ek:.3g} > 2 x torch {dtype} error {et:.3g} + floor "
                            f"(eps x sqrt({n}) x scale) = {bound:.3g}")
    return ek, et, bound


def _leaves(inputs: Sequence[torch.Tensor], dtype: torch.dtype | None, grad: bool) -> list[torch.Tensor]:
    out = []
    for t in inputs:
        t = t.detach().clone()
        if dtype is not None and t.is_floating_point():
            t = t.to(dtype)
        out.append(t.requires_grad_(grad and t.is_floating_point()))
    return out


def _tuple(x) -> tuple[torch.Tensor, ...]:
    return tuple(x) if isinstance(x, (tuple, list)) else (x,)


def run(fn: Callable, inputs: Sequence[torch.Tensor], *, build: Callable = tuple, dtype: torch.dtype | None = None,
        grad_inputs: Sequence[int] | None = None, check_grads: bool = True, seed: int = 1234,
        ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """``fn(*build(leaves))`` -> (outputs, gradients of sum(out * cotangent) wrt the chosen leaves)."""
    leaves = _leaves(inputs, dtype, check_grads)
    outs = _tuple(fn(*build(leaves)))
    grads: list[torch.Tensor] = []
    if check_grads:
        idx = [i for i, t in enumerate(leaves) if t.is_floating_point()] if grad_inputs is None else list(grad_inputs)
        gen = torch.Generator().manual_seed(seed)
        cots = [torch.randn(o.shape, generator=gen, dtype=torch.float64) for o in outs]
        loss = sum((o.double() * c).sum() for o, c in zip(outs, cots, strict=True))
        gs = torch.autograd.grad(loss, [leaves[i] for i in idx], allow_unused=True)
        grads = [torch.zeros_like(leaves[i]) if g is None else g for i, g in zip(idx, gs, strict=True)]
    return [o.detach() for o in outs], [g.detach() for g in grads]


def compare(kernel: Callable, reference: Callable, inputs: Sequence[torch.Tensor], *, build: Callable = tuple,
            grad_inputs: Sequence[int] | None = None, check_grads: bool = True,
            reduction: int | Callable[[str], int] = 1) -> dict[str, tuple[float, float, float]]:
    """The rule for outputs (``out0``, ...) and input gradients (``grad<i>``); returns {label: (ours, torch, bound)}.

    ``inputs`` are leaf tensors in the test dtype (e.g. a fused qkv); ``build(leaves)`` turns them into
    the op's positional arguments (views, masks, ...), so gradients flow back through the real strided
    views. ``reduction``: ``n`` for every label, or a function of the label.
    """
    dtype = next(t.dtype for t in inputs if t.is_floating_point())
    n_of = reduction if callable(reduction) else (lambda label: reduction)
    kw = dict(build=build, grad_inputs=grad_inputs, check_grads=check_grads)
    k_out, k_grad = run(kernel, inputs, **kw)
    t_out, t_grad = run(reference, inputs, **kw)
    r_out, r_grad = run(reference, inputs, dtype=torch.float64, **kw)
    report = {}
    for i, (a, b, c) in enumerate(zip(k_out, t_out, r_out, strict=True)):
        report[f"out{i}"] = check(f"out{i}", a, b, c, dtype, n_of(f"out{i}"))
    idx = [i for i, t in enumerate(inputs) if t.is_floating_point()] if grad_inputs is None else list(grad_inputs)
    for i, a, b, c in zip(idx, k_grad, t_grad, r_grad, strict=True):
        report[f"grad{i}"] = check(f"grad{i}", a, b, c, dtype, n_of(f"grad{i}"))
    return report
