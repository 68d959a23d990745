"""Fused adaLN (kernels/triton_adaln.py) under the interpreter vs the torch reference.

Covers modulation per sample [B, D] and per (sample, frame) [B, T, D], odd widths, y as a
non-contiguous view, and the gradients of x, y, gate, shift and scale (the latter three reduced
over tokens in fp32 across several split programs).
"""

from __future__ import annotations

import pytest
import torch

from dit_video.kernels import triton_adaln
from dit_video.kernels.reference import adaln_modulate_ref, gated_residual_adaln_ref

try:
    from test_triton_common import DTYPES, compare, poison_outputs  # noqa: F401 - autouse fixture
except ImportError:
    from .test_triton_common import DTYPES, compare, poison_outputs  # noqa: F401


def _rand(shape, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g).to(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mod", ["sample", "frame"])
@pytest.mark.parametrize("shape", [(2, 3, 17, 40), (1, 1, 1, 17)])
def test_gated_residual_adaln(dtype, mod, shape):
    b, t, s, d = shape
    ms = (b, d) if mod == "sample" else (b, t, d)
    x = _rand(shape, dtype, 21)
    ybase = _rand((b, s, t, d), dtype, 22)  # y is a transposed (non-contiguous) view
    gate, shift, scale = (_rand(ms, dtype, 23 + i) for i in range(3))

    def build(leaves):
        x, yb, gate, shift, scale = leaves
        return x, yb.transpose(1, 2), gate, shift, scale

    compare(triton_adaln.gated_residual_adaln, gated_residual_adaln_ref, [x, ybase, gate, shift, scale],
            build=build)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mod", ["sample", "frame"])
def test_adaln_modulate(dtype, mod):
    b, t, s, d = 2, 3, 11, 96
    ms = (b, d) if mod == "sample" else (b, t, d)
    x = _rand((b, t, s, d), dtype, 31)
    shift, scale = (_rand(ms, dtype, 32 + i) for i in range(2))
    compare(triton_adaln.adaln_modulate, adaln_modulate_ref, [x, shift, scale])


def test_adaln_modulate_3d_tokens():
    """x [B, N, D] (tokens flattened) with per-sample modulation."""
    x = _rand((2, 13, 24), torch.float32, 41)
    shift, scale = _rand((2, 24), torch.float32, 42), _rand((2, 24), torch.float32, 43)
    compare(triton_adaln.adaln_modulate, adaln_modulate_ref, [x, shift, scale])


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
