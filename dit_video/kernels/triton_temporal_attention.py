"""Packed attention for short sequences (temporal attention, T <= 64) in Triton: forward + backward.

What: the same contract as :mod:`triton_attention` (strided q/k/v ``[..., L, H, D]`` with two outer
batch dims, broadcasting, key-padding mask, o in q's layout, fully masked rows -> 0), restricted
to Lq, Lk <= 64 and head dims <= 128.

Why: the temporal view of ``[B, T, S, 3, H, D]`` is B*S*H tiny sequences (T = 16 frames). A flash
kernel gives each (sequence, head) its own program with a 64-row tile that is 3/4 empty, and
its launch and tail costs dominate. Here one program takes G = BLOCK // T_PAD whole sequences at
once (T_PAD = next power of two >= max(Lq, Lk)): their rows are stacked into one ``[BLOCK, D]``
query tile and one ``[BLOCK, D]`` key/value tile, and a block-diagonal mask keeps each sequence
to its own keys. The
``tl.dot`` is G times larger than needed, but temporal attention is memory-bound (about T/2
FLOP/byte in bf16, far below the H100's ~295 FLOP/byte ridge), so the extra tensor-core work is
free and the kernel's job is to stream q, k, v, o at bandwidth. Consecutive sequences are the
heads of one (b, s) token, so a program's rows are contiguous H*D runs of the fused projection.

Each sequence lies whole in one tile, so softmax needs no online rescaling and the backward is a
single kernel per tile: recompute P from the saved log-sum-exp, then dV, dP, dS, dQ, dK, with
delta = rowsum(dO * O) computed in place (no atomics, no second pass).

Registered as a second ``triton`` attention implementation with a higher priority than the flash
kernel: dispatch takes it whenever its check (short sequences) passes.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import dispatch
from .triton_common import (
    LOG2E,
    AttnPlan,
    arch_of,
    attention_out_shape,
    attention_plan,
    attention_reason,
    define_attention_op,
    dot_precision,
    empty_attention_out,
    grad_buffer,
    interpreting,
    mask_arg,
    next_pow2,
    poisoned,
    reduce_grad,
    upcast_for,
)

MAX_SEQ = 64
MAX_HEAD_DIM = 128


# ============================================================================ kernels
@triton.jit
def _rows(pid, NSEQ, H, N1, L, s0, s1, sl, sh, T_PAD: tl.constexpr, BLOCK: tl.constexpr):
    """int64 element offsets [BLOCK] of the rows of program pid's G = BLOCK // T_PAD sequences, and
    which rows are real. Row r is position r % T_PAD of sequence pid*G + r // T_PAD, and sequence
    n = (b0 * N1 + b1) * H + h. The (b0, b1, h) split is done on G scalars, not per row."""
    G: tl.constexpr = BLOCK // T_PAD
    r = tl.arange(0, BLOCK)
    g = r // T_PAD
    t = r % T_PAD
    off = tl.zeros([BLOCK], tl.int64)
    for i in tl.static_range(G):
        seq = pid * G + i
        h = seq % H
        b = seq // H
        base = (b // N1).to(tl.int64) * s0 + (b % N1).to(tl.int64) * s1 + h.to(tl.int64) * sh
        off = tl.where(g == i, base, off)
    off += t.to(tl.int64) * sl
    ok = (t < L) & (pid * G + g < NSEQ)
    return off, ok


@triton.jit
def _packed_fwd(Q, K, V, Out, LSE, MASK,
                sq0, sq1, sql, sqh, sqd,
                sk0, sk1, skl, skh, skd,
                sv0, sv1, svl, svh, svd,
                so0, so1, sol, soh, sod,
                sm0, sm1, sml,
                N1, H, NSEQ, Lq, Lk, D, qk_scale,
                HAS_MASK: tl.constexpr, UPCAST: tl.constexpr, DOT_PREC: tl.constexpr,
                T_PAD: tl.constexpr, BLOCK: tl.constexpr, BLOCK_D: tl.constexpr):
    pid = tl.program_id(0)
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < D
    r = tl.arange(0, BLOCK)
    grp = r // T_PAD  # which packed sequence a row / column belongs to
    q_off, q_ok = _rows(pid, NSEQ, H, N1, Lq, sq0, sq1, sql, sqh, T_PAD, BLOCK)
    k_off, k_ok = _rows(pid, NSEQ, H, N1, Lk, sk0, sk1, skl, skh, T_PAD, BLOCK)
    v_off, _ = _rows(pid, NSEQ, H, N1, Lk, sv0, sv1, svl, svh, T_PAD, BLOCK)
    q = tl.load(Q + q_off[:, None] + offs_d[None, :] * sqd, mask=q_ok[:, None] & d_ok[None, :], other=0.0)
    kt = tl.load(K + k_off[None, :] + offs_d[:, None] * skd, mask=k_ok[None, :] & d_ok[:, None], other=0.0)
    v = tl.load(V + v_off[:, None] + offs_d[None, :] * svd, mask=k_ok[:, None] & d_ok[None, :], other=0.0)
    if UPCAST:
        q = q.to(tl.float32)
        kt = kt.to(tl.float32)
        v = v.to(tl.float32)
    col_ok = k_ok
    if HAS_MASK:
        m_off, _ = _rows(pid, NSEQ, H, N1, Lk, sm0, sm1, sml, 0, T_PAD, BLOCK)
        col_ok = col_ok & (tl.load(MASK + m_off, mask=k_ok, other=0) != 0)
    valid = (grp[:, None] == grp[None, :]) & col_ok[None, :]  # block diagonal: own sequence's keys
    s = tl.dot(q, kt, input_precision=DOT_PREC) * qk_scale
    s = tl.where(valid, s, float("-inf"))
    m = tl.max(s, 1)
    m_safe = tl.where(m == float("-inf"), 0.0, m)
    p = tl.exp2(s - m_safe[:, None])
    l_i = tl.sum(p, 1)
    empty = l_i == 0.0
    o = tl.dot(p.to(v.dtype), v, input_precision=DOT_PREC) / tl.where(empty, 1.0, l_i)[:, None]
    lse = tl.where(empty, float("inf"), m_safe + tl.log2(tl.where(empty, 1.0, l_i)))
    o_off, _ = _rows(pid, NSEQ, H, N1, Lq, so0, so1, sol, soh, T_PAD, BLOCK)
    tl.store(Out + o_off[:, None] + offs_d[None, :] * sod, o.to(Out.dtype.element_ty),
             mask=q_ok[:, None] & d_ok[None, :])
    G: tl.constexpr = BLOCK // T_PAD
    lse_row = (pid * G + grp).to(tl.int64) * Lq + r % T_PAD
    tl.store(LSE + lse_row, lse, mask=q_ok)


@triton.jit
def _packed_bwd(Q, K, V, Out, DO, LSE, MASK, DQ, DK, DV,
                sq0, sq1, sql, sqh, sqd,
                sk0, sk1, skl, skh, skd,
                sv0, sv1, svl, svh, svd,
                so0, so1, sol, soh, sod,
                sg0, sg1, sgl, sgh, sgd,
                sm0, sm1, sml,
                sdq0, sdq1, sdql, sdqh, sdqd,
                sdk0, sdk1, sdkl, sdkh, sdkd,
                sdv0, sdv1, sdvl, sdvh, sdvd,
                N1, H, NSEQ, Lq, Lk, D, qk_scale, sm_scale,
                HAS_MASK: tl.constexpr, UPCAST: tl.constexpr, DOT_PREC: tl.constexpr,
                T_PAD: tl.constexpr, BLOCK: tl.constexpr, BLOCK_D: tl.constexpr):
    pid = tl.program_id(0)
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < D
    r = tl.arange(0, BLOCK)
    grp = r // T_PAD
    q_off, q_ok = _rows(pid, NSEQ, H, N1, Lq, sq0, sq1, sql, sqh, T_PAD, BLOCK)
    o_off, _ = _rows(pid, NSEQ, H, N1, Lq, so0, so1, sol, soh, T_PAD, BLOCK)
    g_off, _ = _rows(pid, NSEQ, H, N1, Lq, sg0, sg1, sgl, sgh, T_PAD, BLOCK)
    k_off, k_ok = _rows(pid, NSEQ, H, N1, Lk, sk0, sk1, skl, skh, T_PAD, BLOCK)
    v_off, _ = _rows(pid, NSEQ, H, N1, Lk, sv0, sv1, svl, svh, T_PAD, BLOCK)
    qm = q_ok[:, None] & d_ok[None, :]
    km = k_ok[:, None] & d_ok[None, :]
    q = tl.load(Q + q_off[:, None] + offs_d[None, :] * sqd, mask=qm, other=0.0)
    o = tl.load(Out + o_off[:, None] + offs_d[None, :] * sod, mask=qm, other=0.0)
    do = tl.load(DO + g_off[:, None] + offs_d[None, :] * sgd, mask=qm, other=0.0)
    k = tl.load(K + k_off[:, None] + offs_d[None, :] * skd, mask=km, other=0.0)
    v = tl.load(V + v_off[:, None] + offs_d[None, :] * svd, mask=km, other=0.0)
    if UPCAST:
        q = q.to(tl.float32)
        do = do.to(tl.float32)
        k = k.to(tl.float32)
        v = v.to(tl.float32)
    delta = tl.sum(o.to(tl.float32) * do.to(tl.float32), 1)
    G: tl.constexpr = BLOCK // T_PAD
    lse = tl.load(LSE + (pid * G + grp).to(tl.int64) * Lq + r % T_PAD, mask=q_ok, other=float("inf"))
    col_ok = k_ok
    if HAS_MASK:
        m_off, _ = _rows(pid, NSEQ, H, N1, Lk, sm0, sm1, sml, 0, T_PAD, BLOCK)
        col_ok = col_ok & (tl.load(MASK + m_off, mask=k_ok, other=0) != 0)
    valid = (grp[:, None] == grp[None, :]) & col_ok[None, :]

    s = tl.dot(q, tl.trans(k), input_precision=DOT_PREC) * qk_scale
    p = tl.where(valid, tl.exp2(s - lse[:, None]), 0.0)  # [M, N]
    dv = tl.dot(tl.trans(p.to(do.dtype)), do, input_precision=DOT_PREC)
    dp = tl.dot(do, tl.trans(v), input_precision=DOT_PREC)
    ds = p * (dp - delta[:, None])
    dq = tl.dot(ds.to(k.dtype), k, input_precision=DOT_PREC) * sm_scale
    dk = tl.dot(tl.trans(ds.to(q.dtype)), q, input_precision=DOT_PREC) * sm_scale
    dq_off, _ = _rows(pid, NSEQ, H, N1, Lq, sdq0, sdq1, sdql, sdqh, T_PAD, BLOCK)
    dk_off, _ = _rows(pid, NSEQ, H, N1, Lk, sdk0, sdk1, sdkl, sdkh, T_PAD, BLOCK)
    dv_off, _ = _rows(pid, NSEQ, H, N1, Lk, sdv0, sdv1, sdvl, sdvh, T_PAD, BLOCK)
    tl.store(DQ + dq_off[:, None] + offs_d[None, :] * sdqd, dq.to(DQ.dtype.element_ty), mask=qm)
    tl.store(DK + dk_off[:, None] + offs_d[None, :] * sdkd, dk.to(DK.dtype.element_ty), mask=km)
    tl.store(DV + dv_off[:, None] + offs_d[None, :] * sdvd, dv.to(DV.dtype.element_ty), mask=km)


# ============================================================================ configs
# (BLOCK, num_warps, num_stages) per arch and head-dim tile; a config serves a call only when
# BLOCK >= T_PAD (pruned at launch). Every config is compiled for its arch at T_PAD 16 and 64 by
# `dit-video kernels-report`. On sm_80 the backward's mma.sync accumulators live in registers:
# 64-row tiles at D 128 spill there, so sm_80 runs D > 64 with T > 32 on the flash kernel.
# (BLOCK, num_warps, num_stages, T_PADs served). A config serves only the sequence paddings listed
# (all <= BLOCK): how many sequences a tile packs changes the per-row bookkeeping and the register
# pressure, so each (config, T_PAD) pair is compiled and checked by `dit-video kernels-report`. On
# sm_80 the backward's mma.sync accumulators live in registers; T 64 at D 128 has no spill-free
# tile on either arch, so those calls go to the flash kernel (see check()).
_UPTO32 = (1, 2, 4, 8, 16, 32)
_ALL = _UPTO32 + (64,)
_FWD = {64: [(64, 4, 1, _ALL), (128, 8, 1, _ALL)], 128: [(64, 4, 1, _ALL), (64, 8, 1, _ALL)]}
FWD_CONFIGS: dict[str, dict[int, list[tuple]]] = {"sm_80": _FWD, "sm_90a": _FWD}
BWD_CONFIGS: dict[str, dict[int, list[tuple]]] = {
    "sm_80": {64: [(32, 4, 1, _UPTO32), (64, 4, 1, (64,))], 128: [(32, 4, 1, _UPTO32)]},
    "sm_90a": {64: [(64, 4, 1, _UPTO32), (64, 8, 1, _ALL)], 128: [(64, 8, 1, _UPTO32)]},
}
REPORT_T_PADS = (16, 64)  # sequence paddings compiled by kernels-report (16: the reference video)


def _fits(block: int, t_pads: tuple, t_pad: int) -> bool:
    return t_pad <= block and t_pad in t_pads


_tuned: dict[tuple[str, int, str], object] = {}


def _dbucket(block_d: int) -> int:
    return 64 if block_d <= 64 else 128


def _prune(configs, named_args, **kwargs):
    t_pad = kwargs.get("T_PAD", named_args.get("T_PAD", 1))
    return [c for c in configs if _fits(c.kwargs["BLOCK"], c.t_pads, t_pad)]


def _launcher(kernel, table: dict, block_d: int, device: torch.device):
    if interpreting():
        return kernel
    arch = arch_of(device)
    key = (kernel.__name__, block_d, arch)
    if key not in _tuned:
        cfgs = []
        for b, w, s, t_pads in table[arch][_dbucket(block_d)]:
            cfg = triton.Config({"BLOCK": b}, num_warps=w, num_stages=s)
            cfg.t_pads = t_pads  # read by _prune, not passed to the kernel
            cfgs.append(cfg)
        _tuned[key] = triton.autotune(configs=cfgs, key=["Lq", "Lk", "D", "HAS_MASK", "T_PAD"],
                                      prune_configs_by={"early_config_prune": _prune})(kernel)
    return _tuned[key]


def _served(arch: str, block_d: int, t_pad: int) -> bool:
    return all(any(_fits(b, tp, t_pad) for b, _, _, tp in t[arch][_dbucket(block_d)])
               for t in (FWD_CONFIGS, BWD_CONFIGS))


def _t_pad(lq: int, lk: int) -> int:
    """Rows reserved per sequence in a tile: the next power of two >= max(Lq, Lk)."""
    return next_pow2(max(lq, lk), minimum=1)


def _meta(t_pad: int) -> dict:
    """Interpreter tile: just big enough to pack 2+ sequences when they are short (tests packing)."""
    if not interpreting():
        return {}
    return {"BLOCK": max(16, min(MAX_SEQ, 2 * t_pad), t_pad)}


def _grid(nseq: int, t_pad: int):
    return lambda meta: (triton.cdiv(nseq, meta["BLOCK"] // t_pad),)


def _launch_fwd(q, k, v, mask, scale: float):
    batch, out_shape = attention_out_shape(q, k, v, mask)
    o = empty_attention_out(q, out_shape)
    plan = attention_plan(q, k, v, o.stride(), mask)
    assert isinstance(plan, AttnPlan), plan
    lq, h, d = q.shape[-3:]
    lk = k.shape[-3]
    nseq = plan.n0 * plan.n1 * h
    lse = poisoned(torch.empty((nseq, lq), device=q.device, dtype=torch.float32))
    if o.numel() == 0:
        return o, lse
    st = plan.strides
    block_d = next_pow2(d)
    fn = _launcher(_packed_fwd, FWD_CONFIGS, block_d, q.device)
    t_pad = _t_pad(lq, lk)
    fn[_grid(nseq, t_pad)](
        q, k, v, o, lse, mask_arg(mask, q),
        *st["q"], *st["k"], *st["v"], *st["o"], *(st["mask"] if mask is not None else (0, 0, 0)),
        plan.n1, h, nseq, lq, lk, d, scale * LOG2E,
        HAS_MASK=mask is not None, UPCAST=upcast_for(q.dtype), DOT_PREC=dot_precision(q.dtype),
        T_PAD=t_pad, BLOCK_D=block_d, **_meta(t_pad))
    return o, lse


def _launch_bwd(do, q, k, v, o, lse, mask, scale: float):
    batch, _ = attention_out_shape(q, k, v, mask)
    lq, h, d = q.shape[-3:]
    lk = k.shape[-3]
    dq = grad_buffer(q, batch + tuple(q.shape[-3:]))
    dk = grad_buffer(k, batch + tuple(k.shape[-3:]))
    dv = grad_buffer(v, batch + tuple(v.shape[-3:]))
    bufs = {"do": do, "dq": dq, "dk": dk, "dv": dv}
    plan = attention_plan(q, k, v, o.stride(), mask, bufs)
    if isinstance(plan, str):
        do = do.contiguous()
        bufs["do"] = do
        plan = attention_plan(q, k, v, o.stride(), mask, bufs)
    assert isinstance(plan, AttnPlan), plan
    if do.numel() == 0:
        return reduce_grad(dq.zero_(), q), reduce_grad(dk.zero_(), k), reduce_grad(dv.zero_(), v)
    nseq = plan.n0 * plan.n1 * h
    st = plan.strides
    block_d = next_pow2(d)
    fn = _launcher(_packed_bwd, BWD_CONFIGS, block_d, q.device)
    t_pad = _t_pad(lq, lk)
    fn[_grid(nseq, t_pad)](
        q, k, v, o, do, lse, mask_arg(mask, q), dq, dk, dv,
        *st["q"], *st["k"], *st["v"], *st["o"], *st["do"], *(st["mask"] if mask is not None else (0, 0, 0)),
        *st["dq"], *st["dk"], *st["dv"],
        plan.n1, h, nseq, lq, lk, d, scale * LOG2E, scale,
        HAS_MASK=mask is not None, UPCAST=upcast_for(q.dtype), DOT_PREC=dot_precision(q.dtype),
        T_PAD=t_pad, BLOCK_D=block_d, **_meta(t_pad))
    return reduce_grad(dq, q), reduce_grad(dk, k), reduce_grad(dv, v)


# ============================================================================ custom ops
packed_attention_op = define_attention_op("packed_attention", _launch_fwd, _launch_bwd)
packed_attention_backward_op = packed_attention_op.backward_op


# ============================================================================ public impl + registration
def packed_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                     key_padding_mask: torch.Tensor | None = None, scale: float | None = None) -> torch.Tensor:
    """Packed short-sequence attention; same contract as ``reference.attention_ref``."""
    scale = q.shape[-1] ** -0.5 if scale is None else float(scale)
    return packed_attention_op(q, k, v, key_padding_mask, scale)[0]


def check(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_padding_mask: torch.Tensor | None = None,
          scale: float | None = None) -> str | None:
    if q.shape[-3] > MAX_SEQ or k.shape[-3] > MAX_SEQ:
        return f"sequence {q.shape[-3]}x{k.shape[-3]} longer than {MAX_SEQ} (packed kernel is for short ones)"
    why = attention_reason(q, k, v, key_padding_mask, MAX_HEAD_DIM)
    if why is None and q.device.type == "cuda":
        t_pad, block_d = _t_pad(q.shape[-3], k.shape[-3]), next_pow2(q.shape[-1])
        if not _served(arch_of(q.device), block_d, t_pad):
            why = f"no spill-free packed config for T {t_pad} x head_dim {q.shape[-1]} on {arch_of(q.device)}"
    return why


dispatch.register("attention", "triton", packed_attention, check, priority=10)


# ============================================================================ ahead-of-time specs
def aot_kernels(arch: str) -> list:
    """Every kernel x GPU config, bf16 operands (the GPU path, UPCAST off); reference shape: the
    temporal view of a B1 T16 S1024 video (H*D = 384), i.e. B*S*H sequences of 16 frames."""
    from .aot_spec import make_spec
    from .roofline import attention_work

    specs = []
    strides = {k: [f"s{k}{i}" for i in ("0", "1", "l", "h", "d")] for k in ("q", "k", "v", "o", "g", "dk", "dv", "dq")}
    ones = [s[-1] for s in strides.values()] + ["sml"]
    div16 = [x for s in strides.values() for x in (s[0], s[1], s[2])] + ["sm0", "sm1", "D"]
    ptr = {"Q": "bf16", "K": "bf16", "V": "bf16", "Out": "bf16", "DO": "bf16", "DQ": "bf16", "DK": "bf16",
           "DV": "bf16", "LSE": "fp32", "MASK": "u8"}
    s = 1024
    for bd in sorted(FWD_CONFIGS[arch]):
        h = 384 // bd
        for name, fn, table in (("packed_fwd", _packed_fwd, FWD_CONFIGS), ("packed_bwd", _packed_bwd, BWD_CONFIGS)):
            for blk, w, st, t_pads in table[arch][bd]:
                for t in REPORT_T_PADS:
                    if not _fits(blk, t_pads, t):
                        continue
                    work = attention_work(s * h, 1, t, t, bd, 2, mode="fwd" if name == "packed_fwd" else "bwd")
                    flops, nbytes = work.flops, work.bytes  # one fused backward kernel: the minimum
                    specs.append(make_spec(
                        name, fn, pointers={p: ty for p, ty in ptr.items() if p in fn.arg_names},
                        constexprs=dict(HAS_MASK=False, UPCAST=False, DOT_PREC="tf32", T_PAD=t, BLOCK=blk,
                                        BLOCK_D=bd),
                        floats=("qk_scale", "sm_scale"), ones=[o for o in ones if o in fn.arg_names], div16=div16,
                        num_warps=w, num_stages=st, config=f"D{bd} T{t} BLOCK{blk} w{w} s{st}",
                        shape=f"temporal B1 T{t} S{s} H{h} D{bd}", flops=flops, nbytes=nbytes, needs_wgmma=False))
    return specs
