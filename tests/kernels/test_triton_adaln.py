"""Fused adaLN (dit_video/kernels/triton_adaln.py): one output used, opcheck, refusals. Its numerics are in the kernel
contract suite, tests/kernels/test_contract.py."""

from __future__ import annotations

import torch

from dit_video.kernels import triton_adaln
from dit_video.kernels.reference import gated_residual_adaln_ref


def _rand(shape, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g).to(dtype)


def test_adaln_only_one_output_used():
    """Backward with a gradient for only r or only the normalized output."""
    x, y = _rand((1, 2, 5, 16), torch.float32, 51), _rand((1, 2, 5, 16), torch.float32, 52)
    gate, shift, scale = (_rand((1, 16), torch.float32, 53 + i).requires_grad_() for i in range(3))
    for pick in (0, 1):
        xx, yy = x.clone().requires_grad_(), y.clone().requires_grad_()
        out = triton_adaln.gated_residual_adaln(xx, yy, gate, shift, scale)[pick]
        ref = gated_residual_adaln_ref(xx, yy, gate, shift, scale)[pick]
        got = torch.autograd.grad(out.sum(), [xx, yy, gate])
        want = torch.autograd.grad(ref.sum(), [xx, yy, gate])
        for a, b in zip(got, want, strict=True):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_adaln_opcheck():
    x, y = torch.randn(2, 3, 4, 16), torch.randn(2, 3, 4, 16)
    gate, shift, scale = (torch.randn(2, 3, 16) for _ in range(3))
    tu = ("test_schema", "test_autograd_registration", "test_faketensor")
    torch.library.opcheck(triton_adaln.gated_residual_adaln_op, (x, y, gate, shift, scale, 1e-6), test_utils=tu)
    torch.library.opcheck(triton_adaln.adaln_modulate_op, (x, shift, scale, 1e-6), test_utils=tu)


def test_adaln_check_refuses():
    x = torch.randn(2, 3, 4, 16)
    m = torch.randn(2, 16)
    assert triton_adaln.check_modulate(x, m, m) is None
    assert "different shapes" in triton_adaln.check_gated(x, x, m, torch.randn(2, 3, 16), m)
    assert "dtype" in triton_adaln.check_modulate(x, m.double(), m.double())
