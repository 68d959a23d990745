"""adaLN in Triton: ``adaln_modulate`` and ``gated_residual_adaln``, forward + backward.

What:
    adaln_modulate(x, shift, scale)            = LN(x) * (1 + scale) + shift
    gated_residual_adaln(x, y, gate, shift, scale) = (r, LN(r) * (1 + scale) + shift), r = x + gate * y
LayerNorm has no affine; shift/scale/gate are per sample ``[B, D]`` or per (sample, frame)
``[B, T, D]`` and broadcast over the remaining token dims of x ``[B, ..., D]``.

Why fused: a DiT block does this between every attention and MLP. Unfused it reads and writes the
token tensor four or five times (gate*y, +x, LN, modulate); fused it reads x and y once and writes
r and the normalized output once. The backward likewise makes one pass over the tokens for dx and
dy and reduces the modulation gradients (dgate, dshift, dscale: sums over all tokens of a group)
in fp32 in the same pass.

How: tensors are indexed as ``(g0, g1, r0, r1, d)``: the group dims are the modulation's leading
dims (B or B, T) and the row dims are the rest of x's token dims, each folded without copying
(:func:`triton_common.collapse_dims`), so y may be any strided view. Forward: one program per
block of rows of one group; LN statistics in fp32 from the fp32 r; saves mean and rstd per row.
Backward: a grid of (group, split) programs, each looping over a strided share of its group's
rows, writes dx/dy per row and fp32 partial sums of the three modulation gradients, which are
summed over the splits afterwards (deterministic, no atomics). r is recomputed from x, y, gate
in fp32 rather than saved, so autograd keeps only mean and rstd beyond the op's inputs.

Registered through the torch.library custom ops ``dit_video::adaln_modulate`` and
``dit_video::gated_residual_adaln`` (fake + autograd).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import dispatch
from .triton_common import collapse_dims, device_reason, dtype_reason, interpreting, next_pow2, poisoned

MAX_D = 16384


# ============================================================================ kernels
@triton.jit
def _adaln_fwd(X, Y, GATE, SHIFT, SCALE, R, Out, MEAN, RSTD,
               sx_g0, sx_g1, sx_r0, sx_r1, sx_d,
               sy_g0, sy_g1, sy_r0, sy_r1, sy_d,
               sr_g0, sr_g1, sr_r0, sr_r1, sr_d,
               so_g0, so_g1, so_r0, so_r1, so_d,
               sga_g0, sga_g1, sga_d,
               ssh_g0, ssh_g1, ssh_d,
               ssc_g0, ssc_g1, ssc_d,
               G1, R1, NR, D, eps,
               HAS_RES: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr):
    pid_g = tl.program_id(0)
    pid_r = tl.program_id(1)
    g0 = (pid_g // G1).to(tl.int64)
    g1 = (pid_g % G1).to(tl.int64)
    rows = pid_r * BLOCK_R + tl.arange(0, BLOCK_R)
    r_ok = rows < NR
    r0 = (rows // R1).to(tl.int64)
    r1 = (rows % R1).to(tl.int64)
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < D
    msk = r_ok[:, None] & d_ok[None, :]

    x = tl.load(X + (g0 * sx_g0 + g1 * sx_g1 + r0 * sx_r0 + r1 * sx_r1)[:, None] + offs_d[None, :] * sx_d,
                mask=msk, other=0.0).to(tl.float32)
    if HAS_RES:
        y = tl.load(Y + (g0 * sy_g0 + g1 * sy_g1 + r0 * sy_r0 + r1 * sy_r1)[:, None] + offs_d[None, :] * sy_d,
                    mask=msk, other=0.0).to(tl.float32)
        gate = tl.load(GATE + g0 * sga_g0 + g1 * sga_g1 + offs_d * sga_d, mask=d_ok, other=0.0).to(tl.float32)
        x = x + gate[None, :] * y
        tl.store(R + (g0 * sr_g0 + g1 * sr_g1 + r0 * sr_r0 + r1 * sr_r1)[:, None] + offs_d[None, :] * sr_d,
                 x.to(R.dtype.element_ty), mask=msk)
    mean = tl.sum(x, 1) / D
    diff = tl.where(d_ok[None, :], x - mean[:, None], 0.0)
    rstd = 1.0 / tl.sqrt(tl.sum(diff * diff, 1) / D + eps)
    shift = tl.load(SHIFT + g0 * ssh_g0 + g1 * ssh_g1 + offs_d * ssh_d, mask=d_ok, other=0.0).to(tl.float32)
    scale = tl.load(SCALE + g0 * ssc_g0 + g1 * ssc_g1 + offs_d * ssc_d, mask=d_ok, other=0.0).to(tl.float32)
    out = diff * rstd[:, None] * (1.0 + scale[None, :]) + shift[None, :]
    tl.store(Out + (g0 * so_g0 + g1 * so_g1 + r0 * so_r0 + r1 * so_r1)[:, None] + offs_d[None, :] * so_d,
             out.to(Out.dtype.element_ty), mask=msk)
    stat = pid_g.to(tl.int64) * NR + rows
    tl.store(MEAN + stat, mean, mask=r_ok)
    tl.store(RSTD + stat, rstd, mask=r_ok)


@triton.jit
def _adaln_bwd(DOUT, DR, X, Y, GATE, SCALE, MEAN, RSTD, DX, DY, PART,
               sdo_g0, sdo_g1, sdo_r0, sdo_r1, sdo_d,
               sdr_g0, sdr_g1, sdr_r0, sdr_r1, sdr_d,
               sx_g0, sx_g1, sx_r0, sx_r1, sx_d,
               sy_g0, sy_g1, sy_r0, sy_r1, sy_d,
               sdx_g0, sdx_g1, sdx_r0, sdx_r1, sdx_d,
               sdy_g0, sdy_g1, sdy_r0, sdy_r1, sdy_d,
               sga_g0, sga_g1, sga_d,
               ssc_g0, ssc_g1, ssc_d,
               G1, R1, NR, D, SPLITS,
               HAS_RES: tl.constexpr, HAS_DR: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr):
    pid_g = tl.program_id(0)
    pid_s = tl.program_id(1)
    g0 = (pid_g // G1).to(tl.int64)
    g1 = (pid_g % G1).to(tl.int64)
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < D
    scale = tl.load(SCALE + g0 * ssc_g0 + g1 * ssc_g1 + offs_d * ssc_d, mask=d_ok, other=0.0).to(tl.float32)
    if HAS_RES:
        gate = tl.load(GATE + g0 * sga_g0 + g1 * sga_g1 + offs_d * sga_d, mask=d_ok, other=0.0).to(tl.float32)
    acc_shift = tl.zeros([BLOCK_D], tl.float32)
    acc_scale = tl.zeros([BLOCK_D], tl.float32)
    acc_gate = tl.zeros([BLOCK_D], tl.float32)
    for start in range(pid_s * BLOCK_R, NR, SPLITS * BLOCK_R):
        rows = start + tl.arange(0, BLOCK_R)
        r_ok = rows < NR
        r0 = (rows // R1).to(tl.int64)
        r1 = (rows % R1).to(tl.int64)
        msk = r_ok[:, None] & d_ok[None, :]
        x = tl.load(X + (g0 * sx_g0 + g1 * sx_g1 + r0 * sx_r0 + r1 * sx_r1)[:, None] + offs_d[None, :] * sx_d,
                    mask=msk, other=0.0).to(tl.float32)
        if HAS_RES:
            y = tl.load(Y + (g0 * sy_g0 + g1 * sy_g1 + r0 * sy_r0 + r1 * sy_r1)[:, None] + offs_d[None, :] * sy_d,
                        mask=msk, other=0.0).to(tl.float32)
            x = x + gate[None, :] * y
        stat = pid_g.to(tl.int64) * NR + rows
        mean = tl.load(MEAN + stat, mask=r_ok, other=0.0)
        rstd = tl.load(RSTD + stat, mask=r_ok, other=0.0)
        xhat = tl.where(msk, (x - mean[:, None]) * rstd[:, None], 0.0)
        dout = tl.load(DOUT + (g0 * sdo_g0 + g1 * sdo_g1 + r0 * sdo_r0 + r1 * sdo_r1)[:, None]
                       + offs_d[None, :] * sdo_d, mask=msk, other=0.0).to(tl.float32)
        acc_shift += tl.sum(dout, 0)
        acc_scale += tl.sum(dout * xhat, 0)
        g = dout * (1.0 + scale[None, :])
        c1 = tl.sum(g * xhat, 1) / D
        c2 = tl.sum(g, 1) / D
        dx = (g - (xhat * c1[:, None] + c2[:, None])) * rstd[:, None]
        if HAS_DR:
            dx += tl.load(DR + (g0 * sdr_g0 + g1 * sdr_g1 + r0 * sdr_r0 + r1 * sdr_r1)[:, None]
                          + offs_d[None, :] * sdr_d, mask=msk, other=0.0).to(tl.float32)
        tl.store(DX + (g0 * sdx_g0 + g1 * sdx_g1 + r0 * sdx_r0 + r1 * sdx_r1)[:, None] + offs_d[None, :] * sdx_d,
                 dx.to(DX.dtype.element_ty), mask=msk)
        if HAS_RES:
            acc_gate += tl.sum(tl.where(msk, dx * y, 0.0), 0)
            tl.store(DY + (g0 * sdy_g0 + g1 * sdy_g1 + r0 * sdy_r0 + r1 * sdy_r1)[:, None]
                     + offs_d[None, :] * sdy_d, (dx * gate[None, :]).to(DY.dtype.element_ty), mask=msk)
    base = PART + ((pid_g.to(tl.int64) * SPLITS + pid_s) * 3) * BLOCK_D + offs_d
    tl.store(base, acc_shift)
    tl.store(base + BLOCK_D, acc_scale)
    tl.store(base + 2 * BLOCK_D, acc_gate)


# ============================================================================ layout plumbing
class _Plan:
    """Folded sizes (g0, g1, r0, r1) and per-tensor strides (5 for token tensors, 3 for mods)."""

    def __init__(self, sizes, tok: dict, mod: dict):
        self.g0, self.g1, self.r0, self.r1 = sizes
        self.tok, self.mod = tok, mod


def _plan(x: torch.Tensor, tok: dict[str, torch.Tensor], mod: dict[str, torch.Tensor]) -> _Plan | str:
    k = next(iter(mod.values())).dim() - 1  # number of group dims (1: [B, D]; 2: [B, T, D])
    gsz = tuple(x.shape[:k])
    rsz = tuple(x.shape[k:-1])
    tn, mn = list(tok), list(mod)
    gf = collapse_dims(gsz, [tok[n].stride()[:k] for n in tn] + [mod[n].stride()[:k] for n in mn], 2)
    rf = collapse_dims(rsz, [tok[n].stride()[k:-1] for n in tn], 2)
    if gf is None or rf is None:
        return f"token dims {tuple(x.shape[:-1])} cannot be folded into (group, row) dims without a copy"
    (g0, g1), gst = gf
    (r0, r1), rst = rf
    tstr = {n: tuple(gst[i]) + tuple(rst[i]) + (tok[n].stride(-1),) for i, n in enumerate(tn)}
    mstr = {n: tuple(gst[len(tn) + i]) + (mod[n].stride(-1),) for i, n in enumerate(mn)}
    return _Plan((g0, g1, r0, r1), tstr, mstr)


def _blocks(d: int) -> tuple[int, int, int]:
    """(BLOCK_R, BLOCK_D, num_warps) for width d."""
    bd = next_pow2(d)
    if interpreting():
        return 4, bd, 4
    br = max(1, min(16, 4096 // bd))
    return br, bd, (4 if br * bd <= 4096 else 8)


# ============================================================================ launchers
def _fwd(x, y, gate, shift, scale, eps: float):
    res = y is not None
    out = poisoned(torch.empty(x.shape, device=x.device, dtype=x.dtype))
    r = poisoned(torch.empty(x.shape, device=x.device, dtype=x.dtype)) if res else out
    tok = {"x": x, "y": y if res else x, "r": r, "out": out}
    mod = {"gate": gate if res else shift, "shift": shift, "scale": scale}
    plan = _plan(x, tok, mod)
    if isinstance(plan, str):
        raise RuntimeError(plan)
    g, nr, d = plan.g0 * plan.g1, plan.r0 * plan.r1, x.shape[-1]
    mean = poisoned(torch.empty((g, nr), device=x.device, dtype=torch.float32))
    rstd = poisoned(torch.empty((g, nr), device=x.device, dtype=torch.float32))
    if x.numel() == 0:
        return r, out, mean, rstd
    br, bd, warps = _blocks(d)
    t, m = plan.tok, plan.mod
    _adaln_fwd[(g, triton.cdiv(nr, br))](
        x, tok["y"], mod["gate"], shift, scale, r, out, mean, rstd,
        *t["x"], *t["y"], *t["r"], *t["out"], *m["gate"], *m["shift"], *m["scale"],
        plan.g1, plan.r1, nr, d, eps, HAS_RES=res, BLOCK_R=br, BLOCK_D=bd, num_warps=warps)
    return r, out, mean, rstd


def _bwd(dout, dr, x, y, gate, scale, mean, rstd):
    res = y is not None
    dx = poisoned(torch.empty(x.shape, device=x.device, dtype=x.dtype))
    dy = poisoned(torch.empty(x.shape, device=x.device, dtype=x.dtype)) if res else dx
    if dout is None:
        dout = torch.zeros_like(dx)
    tok = {"dout": dout, "dr": dr if dr is not None else dout, "x": x, "y": y if res else x, "dx": dx, "dy": dy}
    mod = {"gate": gate if res else scale, "scale": scale}
    plan = _plan(x, tok, mod)
    if isinstance(plan, str):  # incoming grads with unfoldable strides: pack them
        dout = dout.contiguous()
        tok["dout"] = dout
        if dr is not None:
            dr = dr.contiguous()
            tok["dr"] = dr
        plan = _plan(x, tok, mod)
        if isinstance(plan, str):
            raise RuntimeError(plan)
    g, nr, d = plan.g0 * plan.g1, plan.r0 * plan.r1, x.shape[-1]
    br, bd, warps = _blocks(d)
    nblk = max(1, triton.cdiv(nr, br))
    splits = min(nblk, 2) if interpreting() else max(1, min(nblk, triton.cdiv(4 * 132, max(g, 1))))
    part = poisoned(torch.empty((g, splits, 3, bd), device=x.device, dtype=torch.float32))
    t, m = plan.tok, plan.mod
    if x.numel() > 0:
        _adaln_bwd[(g, splits)](
            dout, tok["dr"], x, tok["y"], mod["gate"], scale, mean, rstd, dx, dy, part,
            *t["dout"], *t["dr"], *t["x"], *t["y"], *t["dx"], *t["dy"], *m["gate"], *m["scale"],
            plan.g1, plan.r1, nr, d, splits,
            HAS_RES=res, HAS_DR=dr is not None, BLOCK_R=br, BLOCK_D=bd, num_warps=warps)
    else:
        part.zero_()
    sums = part.sum(1)[..., :d]  # [G, 3, D] fp32
    dshift = sums[:, 0].reshape(scale.shape).to(scale.dtype, copy=True)
    dscale = sums[:, 1].reshape(scale.shape).to(scale.dtype, copy=True)
    if not res:
        return dx, x.new_empty(0), x.new_empty(0), dshift, dscale
    dgate = sums[:, 2].reshape(gate.shape).to(gate.dtype, copy=True)
    return dx, dy, dgate, dshift, dscale


# ============================================================================ custom ops
@torch.library.custom_op("dit_video::gated_residual_adaln", mutates_args=())
def gated_residual_adaln_op(x: torch.Tensor, y: torch.Tensor, gate: torch.Tensor, shift: torch.Tensor,
                            scale: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor,
                                                                       torch.Tensor]:
    """Forward: (r, out, mean, rstd); mean/rstd are fp32 ``[groups, rows]`` saved for backward."""
    return _fwd(x, y, gate, shift, scale, eps)


@torch.library.custom_op("dit_video::adaln_modulate", mutates_args=())
def adaln_modulate_op(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor,
                      eps: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Forward: (out, mean, rstd)."""
    _, out, mean, rstd = _fwd(x, None, None, shift, scale, eps)
    return out, mean, rstd


def _stats_shape(x: torch.Tensor, m: torch.Tensor) -> tuple[int, int]:
    k = m.dim() - 1
    g = 1
    for s in x.shape[:k]:
        g = g * s
    n = 1
    for s in x.shape[k:-1]:
        n = n * s
    return g, n


@gated_residual_adaln_op.register_fake
def _(x, y, gate, shift, scale, eps):
    st = _stats_shape(x, shift)
    f = torch.float32
    return x.new_empty(x.shape), x.new_empty(x.shape), x.new_empty(st, dtype=f), x.new_empty(st, dtype=f)


@adaln_modulate_op.register_fake
def _(x, shift, scale, eps):
    st = _stats_shape(x, shift)
    return x.new_empty(x.shape), x.new_empty(st, dtype=torch.float32), x.new_empty(st, dtype=torch.float32)


@torch.library.custom_op("dit_video::adaln_backward", mutates_args=())
def adaln_backward_op(dout: torch.Tensor | None, dr: torch.Tensor | None, x: torch.Tensor, y: torch.Tensor | None,
                      gate: torch.Tensor | None, scale: torch.Tensor, mean: torch.Tensor,
                      rstd: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor,
                                                   torch.Tensor]:
    """(dx, dy, dgate, dshift, dscale); dy/dgate are empty when there is no residual (y None)."""
    return _bwd(dout, dr, x, y, gate, scale, mean, rstd)


@adaln_backward_op.register_fake
def _(dout, dr, x, y, gate, scale, mean, rstd):
    if y is None:
        return x.new_empty(x.shape), x.new_empty(0), x.new_empty(0), scale.new_empty(scale.shape), \
            scale.new_empty(scale.shape)
    return x.new_empty(x.shape), x.new_empty(x.shape), gate.new_empty(gate.shape), scale.new_empty(scale.shape), \
        scale.new_empty(scale.shape)


def _gated_setup(ctx, inputs, output):
    x, y, gate, shift, scale, eps = inputs
    _, _, mean, rstd = output
    ctx.save_for_backward(x, y, gate, scale, mean, rstd)


def _gated_backward(ctx, dr, dout, dmean, drstd):
    x, y, gate, scale, mean, rstd = ctx.saved_tensors
    dx, dy, dgate, dshift, dscale = adaln_backward_op(dout, dr, x, y, gate, scale, mean, rstd)
    return dx, dy, dgate, dshift, dscale, None


def _mod_setup(ctx, inputs, output):
    x, shift, scale, eps = inputs
    _, mean, rstd = output
    ctx.save_for_backward(x, scale, mean, rstd)


def _mod_backward(ctx, dout, dmean, drstd):
    x, scale, mean, rstd = ctx.saved_tensors
    dx, _, _, dshift, dscale = adaln_backward_op(dout, None, x, None, None, scale, mean, rstd)
    return dx, dshift, dscale, None


gated_residual_adaln_op.register_autograd(_gated_backward, setup_context=_gated_setup)
adaln_modulate_op.register_autograd(_mod_backward, setup_context=_mod_setup)


# ============================================================================ public impls + registration
def gated_residual_adaln(x: torch.Tensor, y: torch.Tensor, gate: torch.Tensor, shift: torch.Tensor,
                         scale: torch.Tensor, eps: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor]:
    """Fused ``r = x + gate*y`` and ``LN(r)*(1+scale)+shift``; same contract as the reference."""
    r, out, _, _ = gated_residual_adaln_op(x, y, gate, shift, scale, float(eps))
    return r, out


def adaln_modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Fused ``LN(x)*(1+scale)+shift``; same contract as the reference."""
    return adaln_modulate_op(x, shift, scale, float(eps))[0]


def _reason(x: torch.Tensor, toks: list[torch.Tensor], mods: list[torch.Tensor]) -> str | None:
    why = device_reason(x, *toks, *mods) or dtype_reason(x, *toks, *mods)
    if why:
        return why
    if len({tuple(m.shape) for m in mods}) != 1:
        return "modulation tensors of different shapes"
    if x.shape[-1] > MAX_D:
        return f"width {x.shape[-1]} > {MAX_D}"
    plan = _plan(x, {"x": x, **{f"t{i}": t for i, t in enumerate(toks)}},
                 {f"m{i}": m for i, m in enumerate(mods)})
    return plan if isinstance(plan, str) else None


def check_gated(x, y, gate, shift, scale, eps: float = 1e-6) -> str | None:
    return _reason(x, [y], [gate, shift, scale])


def check_modulate(x, shift, scale, eps: float = 1e-6) -> str | None:
    return _reason(x, [], [shift, scale])


dispatch.register("gated_residual_adaln", "triton", gated_residual_adaln, check_gated)
dispatch.register("adaln_modulate", "triton", adaln_modulate, check_modulate)


# ============================================================================ ahead-of-time specs
def aot_kernels(arch: str) -> list:
    """Forward/backward, with and without the gated residual, at the S/2 (D 384) and XL/2 (D 1152)
    widths, bf16; reference shape: tokens [1, 16, 1024, D] with per-sample modulation."""
    from .aot_spec import make_spec
    from .roofline import adaln_modulate_work, gated_residual_adaln_work

    tok = {k: [f"s{k}_{i}" for i in ("g0", "g1", "r0", "r1", "d")]
           for k in ("x", "y", "r", "o", "do", "dr", "dx", "dy")}
    mods = {k: [f"s{k}_{i}" for i in ("g0", "g1", "d")] for k in ("ga", "sh", "sc")}
    ones = [s[-1] for s in list(tok.values()) + list(mods.values())]
    div16 = [x for s in tok.values() for x in s[:-1]] + [x for s in mods.values() for x in s[:-1]] + ["D", "NR"]
    fp32 = {"MEAN", "RSTD", "PART"}
    pointers = {"X", "Y", "GATE", "SHIFT", "SCALE", "R", "Out", "DOUT", "DR", "DX", "DY"} | fp32
    specs = []
    for d in (384, 1152):
        br, bd, warps = _blocks(d)
        for res in (True, False):
            kind = "gated_residual_adaln" if res else "adaln_modulate"
            model = gated_residual_adaln_work if res else adaln_modulate_work
            fw, bw = (model(16 * 1024, d, 1, 2, mode=m) for m in ("fwd", "bwd"))
            for name, fn, nbytes, flops in ((f"{kind}_fwd", _adaln_fwd, fw.bytes, fw.flops),
                                            (f"{kind}_bwd", _adaln_bwd, bw.bytes, bw.flops)):
                specs.append(make_spec(
                    name, fn,
                    pointers={a: ("fp32" if a in fp32 else "bf16") for a in fn.arg_names if a in pointers},
                    constexprs=dict(HAS_RES=res, BLOCK_R=br, BLOCK_D=bd, **({"HAS_DR": res} if "HAS_DR" in
                                                                               fn.arg_names else {})),
                    floats=("eps",), ones=[o for o in ones if o in fn.arg_names],
                    div16=[x for x in div16 if x in fn.arg_names], num_warps=warps, num_stages=1,
                    config=f"D{d} R{br} BD{bd} w{warps}", shape=f"x [1, 16, 1024, {d}] bf16",
                    flops=flops, nbytes=nbytes))
    return specs
