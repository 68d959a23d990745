"""3D rotary position embedding in Triton, forward + backward, on strided q/k views.

What: ``out = [x1*cos - x2*sin, x2*cos + x1*sin]`` over the halves (x1, x2) of each head vector of
``x [B, T, S, H, D]``, with per-position tables ``cos, sin [T, S, D/2]`` (fp32; see
``reference.rope3d_ref``). Computed in fp32, stored in x's dtype.

Why: q and k arrive as views of the fused ``[B, T, S, 3, H, D]`` projection (not contiguous).
The kernel reads them through their strides and reads each table entry once per token for all
heads, so the rotation costs one read and one write of q and k, with no gather of the tables to
``[B, T, S, H, D]`` and no ``torch.cat`` temporaries.

The backward of a rotation is the inverse rotation (sin -> -sin), so it is the same kernel with
``SIGN = -1``; the tables are constants (no gradient). Registered through the torch.library
custom op ``dit_video::rope3d`` (fake + autograd).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import dispatch
from .triton_common import device_reason, dtype_reason, interpreting, next_pow2, poisoned


@triton.jit
def _rope3d(X, COS, SIN, Out,
            sx_b, sx_t, sx_s, sx_h, sx_d,
            so_b, so_t, so_s, so_h, so_d,
            sc_t, sc_s, sc_d,
            ss_t, ss_s, ss_d,
            T, S, H, HALF, NROWS,
            SIGN: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_HALF: tl.constexpr):
    """One program rotates BLOCK_R (token, head) rows."""
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    r_ok = rows < NROWS
    h = (rows % H).to(tl.int64)
    n = rows // H
    s = (n % S).to(tl.int64)
    t = ((n // S) % T).to(tl.int64)
    b = (n // (S * T)).to(tl.int64)
    j = tl.arange(0, BLOCK_HALF)
    msk = r_ok[:, None] & (j < HALF)[None, :]
    c = tl.load(COS + (t * sc_t + s * sc_s)[:, None] + j[None, :] * sc_d, mask=msk, other=0.0).to(tl.float32)
    sn = tl.load(SIN + (t * ss_t + s * ss_s)[:, None] + j[None, :] * ss_d, mask=msk, other=0.0).to(tl.float32)
    sn = sn * SIGN
    xb = X + (b * sx_b + t * sx_t + s * sx_s + h * sx_h)[:, None]
    x1 = tl.load(xb + j[None, :] * sx_d, mask=msk, other=0.0).to(tl.float32)
    x2 = tl.load(xb + (j + HALF)[None, :] * sx_d, mask=msk, other=0.0).to(tl.float32)
    ob = Out + (b * so_b + t * so_t + s * so_s + h * so_h)[:, None]
    tl.store(ob + j[None, :] * so_d, (x1 * c - x2 * sn).to(Out.dtype.element_ty), mask=msk)
    tl.store(ob + (j + HALF)[None, :] * so_d, (x2 * c + x1 * sn).to(Out.dtype.element_ty), mask=msk)


def _blocks(half: int) -> tuple[int, int, int]:
    """(BLOCK_R, BLOCK_HALF, num_warps)."""
    bh = next_pow2(half, minimum=1)
    if interpreting():
        return 8, bh, 4
    return max(1, 2048 // bh), bh, 4


def _launch(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, sign: int) -> torch.Tensor:
    b, t, s, h, d = x.shape
    out = poisoned(torch.empty(x.shape, device=x.device, dtype=x.dtype))
    nrows = b * t * s * h
    if nrows == 0 or d == 0:
        return out
    br, bh, warps = _blocks(d // 2)
    _rope3d[(triton.cdiv(nrows, br),)](
        x, cos, sin, out, *x.stride(), *out.stride(), *cos.stride(), *sin.stride(),
        t, s, h, d // 2, nrows, SIGN=sign, BLOCK_R=br, BLOCK_HALF=bh, num_warps=warps)
    return out


@torch.library.custom_op("dit_video::rope3d", mutates_args=())
def rope3d_op(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    return _launch(x, cos, sin, 1)


@rope3d_op.register_fake
def _(x, cos, sin):
    return x.new_empty(x.shape)


@torch.library.custom_op("dit_video::rope3d_backward", mutates_args=())
def rope3d_backward_op(grad: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """The inverse rotation of the incoming gradient."""
    return _launch(grad, cos, sin, -1)


@rope3d_backward_op.register_fake
def _(grad, cos, sin):
    return grad.new_empty(grad.shape)


def _setup(ctx, inputs, output):
    _, cos, sin = inputs
    ctx.save_for_backward(cos, sin)


def _backward(ctx, grad):
    cos, sin = ctx.saved_tensors
    return rope3d_backward_op(grad, cos, sin), None, None


rope3d_op.register_autograd(_backward, setup_context=_setup)


def rope3d(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Triton 3D RoPE; same contract as ``reference.rope3d_ref``."""
    return rope3d_op(x, cos, sin)


def check(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> str | None:
    why = device_reason(x, cos, sin) or dtype_reason(x)
    if why:
        return why
    if cos.dtype not in (torch.float32,) or sin.dtype != torch.float32:
        return f"tables must be fp32 (got {cos.dtype}, {sin.dtype})"
    if cos.requires_grad or sin.requires_grad:
        return "gradients for the rope tables are not implemented (they are constants)"
    return None


dispatch.register("rope3d", "triton", rope3d, check)


def aot_kernels(arch: str) -> list:
    """Forward (the backward is the same kernel with SIGN=-1) at head dims 64 and 72 (XL/2), bf16;
    reference shape: q of a B1 T16 S1024 video, H*D = 384."""
    from .aot_spec import make_spec
    from .roofline import rope3d_work

    specs = []
    for d in (64, 72):
        br, bh, warps = _blocks(d // 2)
        h = 384 // d
        work = rope3d_work(16 * 1024 * h * d, 16 * 1024 * d // 2, 2)  # q's elements, one table's [T, S, D/2]
        for sign in (1, -1):
            specs.append(make_spec(
                "rope3d_fwd" if sign == 1 else "rope3d_bwd", _rope3d,
                pointers={"X": "bf16", "Out": "bf16", "COS": "fp32", "SIN": "fp32"},
                constexprs=dict(SIGN=sign, BLOCK_R=br, BLOCK_HALF=bh),
                ones=["sx_d", "so_d", "sc_d", "ss_d"],
                div16=["sx_b", "sx_t", "sx_s", "so_b", "so_t", "so_s", "sc_t", "ss_t"],
                num_warps=warps, num_stages=1, config=f"D{d} R{br} HALF{bh} w{warps}",
                shape=f"q [1, 16, 1024, {h}, {d}] bf16", flops=work.flops, nbytes=work.bytes))
    return specs
