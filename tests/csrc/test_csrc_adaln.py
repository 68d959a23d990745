"""dit_video::csrc_gated_residual_adaln and csrc_adaln_modulate (CPU) against the torch reference: outputs and
every gradient (x, y, gate, shift, scale), fp32 and bf16, the 2x rule, odd widths, non-contiguous
y, per-sample and per-frame modulation, opcheck."""

import pytest
import torch
from csrc_numerics import assert_2x, run_with_grads

from dit_video.kernels import gated_residual_adaln, resolve
from dit_video.kernels.reference import adaln_modulate_ref, gated_residual_adaln_ref

DTYPES = [torch.float32, torch.bfloat16]
# (x shape, modulation shape)
CASES = [
    ((2, 3, 5, 48), (2, 48)),  # per sample
    ((2, 3, 5, 48), (2, 3, 48)),  # per frame
    ((1, 4, 7, 37), (1, 4, 37)),  # odd width (vector tails)
    ((2, 2, 3, 2, 24), (2, 2, 24)),  # [B, T, H, W, D]
    ((3, 11, 16), (3, 16)),  # [B, N, D]
    ((1, 1, 1, 1), (1, 1)),
]


def noncontig_like(shape):
    """A [B, T, ..., D] tensor stored as [B, ..., T, D] (a transposed view, like attention's y)."""
    if len(shape) < 4:
        return torch.randn(shape[:-2] + (shape[-1], shape[-2]))
    perm = (0,) + tuple(range(2, len(shape) - 1)) + (1, len(shape) - 1)
    base = torch.randn([shape[i] for i in perm])
    inv = [perm.index(i) for i in range(len(shape))]
    return base.permute(inv)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES)
def test_gated_residual_adaln(csrc, dtype, case):
    xs, ms = case
    x = torch.randn(xs)
    y = noncontig_like(xs) if len(xs) >= 4 else torch.randn(xs)
    assert y.shape == x.shape
    mods = [torch.randn(ms) * 0.5 for _ in range(3)]
    g_r, g_out = torch.randn(xs, dtype=torch.float64), torch.randn(xs, dtype=torch.float64)
    eps = 1e-6

    def ours(x, y, *m):
        return csrc.gated_residual_adaln(x, y, *m, eps=eps)

    def ref(x, y, *m):
        return gated_residual_adaln_ref(x, y, *m, eps=eps)

    def cast(t):  # keep y's strides
        return torch.empty_strided(t.shape, t.stride(), dtype=dtype).copy_(t)

    ins = [x, y, *mods]
    outs, grads = run_with_grads(ours, [cast(t) for t in ins], [g_r, g_out])
    outs_t, grads_t = run_with_grads(ref, [cast(t) for t in ins], [g_r, g_out])
    outs64, grads64 = run_with_grads(ref, [t.double() for t in ins], [g_r, g_out])
    for name, a, b, c in zip(["r", "out"], outs, outs_t, outs64):
        assert a.dtype == dtype and a.shape == x.shape
        assert_2x(name, a, b, c, dtype)
    for name, a, b, c in zip(["dx", "dy", "dgate", "dshift", "dscale"], grads, grads_t, grads64):
        assert a.shape == c.shape
        assert_2x(name, a, b, c, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES[:4])
def test_adaln_modulate(csrc, dtype, case):
    xs, ms = case
    ins = [noncontig_like(xs), torch.randn(ms) * 0.5, torch.randn(ms) * 0.5]
    g = torch.randn(xs, dtype=torch.float64)

    def cast(t):
        return torch.empty_strided(t.shape, t.stride(), dtype=dtype).copy_(t)

    (o,), grads = run_with_grads(csrc.adaln_modulate, [cast(t) for t in ins], [g])
    (o_t,), grads_t = run_with_grads(adaln_modulate_ref, [cast(t) for t in ins], [g])
    (o64,), grads64 = run_with_grads(adaln_modulate_ref, [t.double() for t in ins], [g])
    assert_2x("out", o, o_t, o64, dtype)
    for name, a, b, c in zip(["dx", "dshift", "dscale"], grads, grads_t, grads64):
        assert_2x(name, a, b, c, dtype)


def test_only_one_output_used(csrc):
    x, y = torch.randn(2, 3, 4, 16, requires_grad=True), torch.randn(2, 3, 4, 16, requires_grad=True)
    mods = [torch.randn(2, 16, requires_grad=True) for _ in range(3)]
    r, out = csrc.gated_residual_adaln(x, y, *mods)
    r2, out2 = gated_residual_adaln_ref(x, y, *mods)
    g1 = torch.autograd.grad(out.sum(), [x, y, *mods])
    g2 = torch.autograd.grad(out2.sum(), [x, y, *mods])
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_opcheck(csrc):
    x = torch.randn(2, 3, 5, 24, requires_grad=True)
    y = torch.randn(2, 5, 3, 24).transpose(1, 2).requires_grad_()
    gate, shift, scale = (torch.randn(2, 3, 24, requires_grad=True) for _ in range(3))
    ops = torch.ops.dit_video
    torch.library.opcheck(ops.csrc_gated_residual_adaln.default, (x, y, gate, shift, scale, 1e-6))
    torch.library.opcheck(ops.csrc_adaln_modulate.default, (x, shift[:, 0], scale[:, 0], 1e-5))
    r, out, mean, rstd = ops.csrc_gated_residual_adaln(x.detach(), y.detach(), gate.detach(), shift.detach(),
                                                  scale.detach(), 1e-6)
    args = (torch.randn_like(r), torch.randn_like(r), r, y.detach(), gate.detach(), scale.detach(), mean, rstd)
    torch.library.opcheck(ops.csrc_gated_residual_adaln_backward.default, args)
    torch.library.opcheck(ops.csrc_adaln_modulate_backward.default,
                          (torch.randn_like(r), x.detach(), scale.detach(), mean, rstd))


def test_dispatch(csrc):
    x = torch.randn(2, 3, 4, 16)
    m = [torch.randn(2, 16) for _ in range(3)]
    assert resolve("gated_residual_adaln", "auto", x, x, *m).backend == "cpu"
    assert resolve("adaln_modulate", "auto", x, *m[:2]).backend == "cpu"
    assert "dtype" in resolve("gated_residual_adaln", "cpu", x, x, *m).check(x.half(), x.half(), *m)
    r1, o1 = gated_residual_adaln(x, x, *m, backend="cpu")
    r2, o2 = gated_residual_adaln(x, x, *m, backend="torch")
    torch.testing.assert_close((r1, o1), (r2, o2))
