"""dit_video::csrc_gated_residual_adaln and csrc_adaln_modulate (CPU): one output used, opcheck, dispatch. Their
numerics are in tests/kernels/test_contract.py."""

import torch
from auto_rule import auto_choice

from dit_video.kernels import gated_residual_adaln, resolve
from dit_video.kernels.reference import gated_residual_adaln_ref


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
    auto_choice("gated_residual_adaln", x, x, *m)  # cpu timed, the choice by the rule (auto_rule.py)
    auto_choice("adaln_modulate", x, *m[:2])
    assert "dtype" in resolve("gated_residual_adaln", "cpu", x, x, *m).check(x.half(), x.half(), *m)
    r1, o1 = gated_residual_adaln(x, x, *m, backend="cpu")
    r2, o2 = gated_residual_adaln(x, x, *m, backend="torch")
    torch.testing.assert_close((r1, o1), (r2, o2))
