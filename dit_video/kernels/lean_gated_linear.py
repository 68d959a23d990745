"""``gated_linear(x, o, weight, bias, gate) = x + gate * Linear(o)``: a gated residual that saves only ``o``.

The attention output projection of a DiT block feeds a gated residual, ``x + gate * (o W^T + b)`` with
``gate`` per sample ``[B, D]`` or per frame ``[B, T, D]``. Autograd would save ``o`` for the projection
and the projection's output ``y`` for ``dgate = sum_tokens(dout * y)``: two width-vectors per token.
This op saves ``o`` only: with ``M_g = dout_g^T o_g`` (the weight-gradient GEMM, done per modulation
group ``g`` -- a sample, or a frame of a sample),

    dW = sum_g diag(gate_g) M_g,    dgate_g = rowsum(W * M_g) + b * colsum(dout_g),

so ``y`` is never needed again: no recomputation, no extra GEMM FLOPs (:func:`gate_grads`).

Under autocast the GEMMs run in the autocast dtype (as ``nn.Linear`` would); the op casts its weights
itself, so no casted copy of them is saved. The torch reference :func:`gated_linear_ref` sits beside it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .dispatch import register_composite
from .reference import broadcast_mod

# The per-group M_g matrices are built in chunks of at most this many elements (transient memory).
M_CHUNK_ELEMS = 1 << 22


def gated_linear_ref(x: torch.Tensor, o: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                     gate: torch.Tensor) -> torch.Tensor:
    """``x + gate * F.linear(o, weight, bias)``, gate ``[B, D]`` or ``[B, T, D]`` broadcast over tokens."""
    return x + broadcast_mod(gate, x) * F.linear(o, weight, bias)


def compute_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype a GEMM on ``x`` runs in here: the autocast dtype when autocast is on, else ``x``'s."""
    dev = x.device.type
    if dev in ("cpu", "cuda") and torch.is_autocast_enabled(dev):
        return torch.get_autocast_dtype(dev)
    return x.dtype


def groups_of(m: torch.Tensor) -> int:
    """How many modulation groups a ``[B, D]`` / ``[B, T, D]`` tensor has (B, or B*T)."""
    return m.numel() // m.shape[-1]


def gate_grads(dout: torch.Tensor, inp: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
               gate: torch.Tensor, dt: torch.dtype) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """``(dW, db, dgate)`` of ``out = x + gate * (inp W^T + b)`` from ``dout``, without the GEMM output.

    ``dout`` ``[..., Dout]`` and ``inp`` ``[..., Din]`` have the tokens of each modulation group contiguous
    (any layout whose leading dims match ``gate``'s). GEMMs run in ``dt`` with the usual fp32 accumulation;
    the sums over groups and the dgate contractions in fp32.
    """
    g = groups_of(gate)
    d_out, d_in = weight.shape
    do = dout.reshape(g, -1, d_out)
    xi = inp.reshape(g, -1, d_in)
    w32 = weight.float()
    gate_g = gate.reshape(g, d_out).float()
    dw = torch.zeros(d_out, d_in, dtype=torch.float32, device=weight.device)
    dgate = torch.empty(g, d_out, dtype=torch.float32, device=weight.device)
    step = max(1, M_CHUNK_ELEMS // (d_out * d_in))
    for i in range(0, g, step):
        j = min(g, i + step)
        m = torch.bmm(do[i:j].transpose(1, 2).to(dt), xi[i:j].to(dt)).float()  # [chunk, Dout, Din]
        dw += torch.einsum("gj,gji->ji", gate_g[i:j], m)
        dgate[i:j] = (m * w32).sum(-1)
    col = do.float().sum(1)  # [G, Dout]
    db = None
    if bias is not None:
        dgate += bias.float() * col
        db = (gate_g * col).sum(0).to(bias.dtype)
    return dw.to(weight.dtype), db, dgate.reshape(gate.shape).to(gate.dtype)


class _GatedLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, o, weight, bias, gate):
        dt = compute_dtype(o)
        with torch.autocast(x.device.type, enabled=False):
            y = F.linear(o.to(dt), weight.to(dt), None if bias is None else bias.to(dt))
            out = torch.addcmul(x, broadcast_mod(gate, x), y)
        ctx.save_for_backward(o, weight, bias, gate)
        ctx.dt, ctx.x_dtype = dt, x.dtype
        return out

    @staticmethod
    def backward(ctx, dout):
        o, weight, bias, gate = ctx.saved_tensors
        dt = ctx.dt
        with torch.autocast(dout.device.type, enabled=False):
            dw, db, dgate = gate_grads(dout, o, weight, bias, gate, dt)
            do = torch.matmul((dout * broadcast_mod(gate, dout)).to(dt), weight.to(dt)).to(o.dtype)
        return dout.to(ctx.x_dtype), do, dw, db, dgate


def gated_linear(x: torch.Tensor, o: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                 gate: torch.Tensor) -> torch.Tensor:
    """``x + gate * Linear(o)``, saving ``o`` only (see the module docstring)."""
    return _GatedLinear.apply(x, o, weight, bias, gate)


register_composite("gated_linear", gated_linear)
