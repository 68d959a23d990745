"""``adaln_mlp(x, shift, scale, gate, w1, b1, w2, b2) = x + gate * fc2(gelu(fc1(adaLN(x))))``, saving ``x``.

The MLP half of a DiT block. Autograd saves, per token, the adaLN output (fc1's input), fc1's output
(GELU's input, 4 width-vectors at mlp_ratio 4), GELU's output (fc2's input, 4 more) and fc2's output
(for the gate's gradient): ten width-vectors, most of a block's activation memory. This op saves ``x``
and the fp32 row mean and rstd of its LayerNorm; backward recomputes ``h = adaLN(x)``, ``z = fc1(h)``
(one GEMM: a third of the MLP's forward FLOPs) and ``gelu(z)``, and gets the gate's gradient from the
fc2 weight-gradient GEMM (:func:`.lean_gated_linear.gate_grads`) instead of fc2's output.

GELU is the tanh approximation (DiT / Latte): the ``gelu_tanh`` implementation dispatch picks in forward, whose
``.backward`` the backward calls. Under autocast the GEMMs run in the autocast dtype with weights cast by the op.
The torch reference :func:`adaln_mlp_ref` sits beside it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from . import dispatch
from . import lean_adaln_parts as adaln_parts
from .dispatch import register_composite
from .lean_adaln_linear import linear_grads
from .lean_gated_linear import compute_dtype, gate_grads
from .reference import adaln_modulate_ref, broadcast_mod


def adaln_mlp_ref(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor, gate: torch.Tensor,
                  w1: torch.Tensor, b1: torch.Tensor | None, w2: torch.Tensor, b2: torch.Tensor | None,
                  eps: float = 1e-6) -> torch.Tensor:
    """``x + gate * fc2(gelu_tanh(fc1(adaln_modulate_ref(x, shift, scale))))``."""
    h = adaln_modulate_ref(x, shift, scale, eps)
    return x + broadcast_mod(gate, x) * F.linear(F.gelu(F.linear(h, w1, b1), approximate="tanh"), w2, b2)


def _cast(t: torch.Tensor | None, dt: torch.dtype) -> torch.Tensor | None:
    return None if t is None else t.to(dt)


class _AdaLNMlp(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, shift, scale, gate, w1, b1, w2, b2, eps, fam):
        dt = compute_dtype(x)
        with torch.autocast(x.device.type, enabled=False):
            h, mean, rstd = adaln_parts.forward(fam, x, shift, scale, eps)
            z = F.linear(h.to(dt), w1.to(dt), _cast(b1, dt))
            gelu = dispatch.resolve("gelu_tanh", "auto", z).fn  # backward uses it too (and its .backward)
            a = gelu(z)
            del h, z
            out = torch.addcmul(x, broadcast_mod(gate, x), F.linear(a, w2.to(dt), _cast(b2, dt)))
        ctx.save_for_backward(x, shift, scale, gate, w1, b1, w2, b2, mean, rstd)
        ctx.dt, ctx.eps, ctx.fam, ctx.gelu = dt, eps, fam, gelu
        return out

    @staticmethod
    def backward(ctx, dout):
        x, shift, scale, gate, w1, b1, w2, b2, mean, rstd = ctx.saved_tensors
        dt = ctx.dt
        with torch.autocast(dout.device.type, enabled=False):
            h = adaln_parts.forward(ctx.fam, x, shift, scale, ctx.eps)[0].to(dt)  # recomputed
            z = F.linear(h, w1.to(dt), _cast(b1, dt))  # recomputed: fc1
            a = ctx.gelu(z)
            dw2, db2, dgate = gate_grads(dout, a, w2, b2, gate, dt)
            del a
            da = torch.matmul((dout * broadcast_mod(gate, dout)).to(dt), w2.to(dt))
            dz = ctx.gelu.backward(da, z)
            del da, z
            dw1, db1, dh = linear_grads(dz, h, w1, b1, dt)
            del dz, h
            dx, dshift, dscale = adaln_parts.backward(ctx.fam, dh, x, scale, mean, rstd)
            dx = dx + dout
        return dx.to(x.dtype), dshift, dscale, dgate, dw1, db1, dw2, db2, None, None


def adaln_mlp(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor, gate: torch.Tensor, w1: torch.Tensor,
              b1: torch.Tensor | None, w2: torch.Tensor, b2: torch.Tensor | None, eps: float = 1e-6) -> torch.Tensor:
    """The gated, modulated MLP saving ``x`` and its row statistics only (see the module docstring)."""
    return _AdaLNMlp.apply(x, shift, scale, gate, w1, b1, w2, b2, float(eps),
                           adaln_parts.family(x, shift, scale, eps))


register_composite("adaln_mlp", adaln_mlp)
