"""``adaln_linear(x, shift, scale, weight, bias) = Linear(adaLN(x))``: the modulated LayerNorm is recomputed.

In a DiT block the fused QKV projection (and the final layer) reads ``h = LayerNorm(x) * (1 + scale) +
shift``. Autograd saves ``h`` for the GEMM and ``x`` for the LayerNorm: two width-vectors per token.
This op saves ``x`` and the fp32 row mean and rstd, and recomputes ``h`` (one elementwise pass) in
backward; the adaLN kernels are those dispatch picks for ``adaln_modulate`` (:mod:`.lean_adaln_parts`).

Under autocast the GEMMs run in the autocast dtype with weights cast by the op (no casted copy saved).
The torch reference :func:`adaln_linear_ref` sits beside it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from . import lean_adaln_parts as adaln_parts
from .dispatch import register_composite
from .lean_gated_linear import compute_dtype
from .reference import adaln_modulate_ref


def adaln_linear_ref(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor, weight: torch.Tensor,
                     bias: torch.Tensor | None, eps: float = 1e-6) -> torch.Tensor:
    """``F.linear(adaln_modulate_ref(x, shift, scale, eps), weight, bias)``."""
    return F.linear(adaln_modulate_ref(x, shift, scale, eps), weight, bias)


def linear_grads(dy: torch.Tensor, inp: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                 dt: torch.dtype) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """``(dW, db, dinp)`` of ``y = inp W^T + b``, GEMMs in ``dt``."""
    d_out, d_in = weight.shape
    dy2 = dy.reshape(-1, d_out).to(dt)
    dw = torch.mm(dy2.t(), inp.reshape(-1, d_in).to(dt)).to(weight.dtype)
    db = None if bias is None else dy2.float().sum(0).to(bias.dtype)
    dinp = torch.matmul(dy.to(dt), weight.to(dt))
    return dw, db, dinp


class _AdaLNLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, shift, scale, weight, bias, eps, fam):
        dt = compute_dtype(x)
        with torch.autocast(x.device.type, enabled=False):
            h, mean, rstd = adaln_parts.forward(fam, x, shift, scale, eps)
            y = F.linear(h.to(dt), weight.to(dt), None if bias is None else bias.to(dt))
        ctx.save_for_backward(x, shift, scale, weight, bias, mean, rstd)
        ctx.dt, ctx.eps, ctx.fam = dt, eps, fam
        return y

    @staticmethod
    def backward(ctx, dy):
        x, shift, scale, weight, bias, mean, rstd = ctx.saved_tensors
        with torch.autocast(dy.device.type, enabled=False):
            h = adaln_parts.forward(ctx.fam, x, shift, scale, ctx.eps)[0]  # recomputed
            dw, db, dh = linear_grads(dy, h, weight, bias, ctx.dt)
            del h
            dx, dshift, dscale = adaln_parts.backward(ctx.fam, dh, x, scale, mean, rstd)
        return dx, dshift, dscale, dw, db, None, None


def adaln_linear(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor, weight: torch.Tensor,
                 bias: torch.Tensor | None, eps: float = 1e-6) -> torch.Tensor:
    """``Linear(adaLN(x))`` saving ``x`` and its row statistics only (see the module docstring)."""
    return _AdaLNLinear.apply(x, shift, scale, weight, bias, float(eps), adaln_parts.family(x, shift, scale, eps))


register_composite("adaln_linear", adaln_linear)
