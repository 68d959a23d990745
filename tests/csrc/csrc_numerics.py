"""The 2x rule (KERNELS.md section 2): a kernel's max error against an fp64 reference, on outputs and
every gradient, must be <= 2x the error of the plain PyTorch op run in the same precision + atol."""

from __future__ import annotations

import torch

ATOL = {torch.float32: 1e-5, torch.bfloat16: 1e-3}


def max_err(a: torch.Tensor, ref: torch.Tensor) -> float:
    return (a.double() - ref.double()).abs().max().item() if a.numel() else 0.0


def assert_2x(name: str, ours: torch.Tensor, torch_same_prec: torch.Tensor, ref64: torch.Tensor,
              dtype: torch.dtype) -> None:
    assert torch.isfinite(ours).all(), f"{name}: non-finite values"
    e_ours, e_torch = max_err(ours, ref64), max_err(torch_same_prec, ref64)
    bound = 2 * e_torch + ATOL[dtype] * max(1.0, ref64.abs().max().item())
    assert e_ours <= bound, f"{name}: error {e_ours:.3g} > 2 x torch's {e_torch:.3g} + atol ({bound:.3g})"


def run_with_grads(fn, inputs: list[torch.Tensor], grad_outs: list[torch.Tensor]):
    """fn(*inputs) -> tuple of outputs; returns (outputs, grads of sum(out * g) wrt every input)."""
    ins = [t.detach().clone().requires_grad_(t.is_floating_point()) for t in inputs]
    outs = fn(*ins)
    outs = outs if isinstance(outs, tuple) else (outs,)
    diff = [t for t in ins if t.requires_grad]
    loss = sum((o.double() * g.double()).sum() for o, g in zip(outs, grad_outs))
    grads = torch.autograd.grad(loss, diff)
    return [o.detach() for o in outs], list(grads)
