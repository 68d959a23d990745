"""Flash attention (FlashAttention-2 style) in Triton: forward + backward over strided views.

What: softmax(q k^T * scale) v for q ``[..., Lq, H, D]``, k/v ``[..., Lk, H, D]`` with arbitrary
strides, an optional boolean key-padding mask ``[..., Lk]`` (True = attend), head dims up to 256
(any size; the tile is the next power of two, masked), fp32/fp16/bf16 inputs, fp32 accumulation.

Why strided: the model's spatial view (batch ``(B, T)``, sequence S) and temporal view (batch
``(B, S)``, sequence T) are both views of one fused ``[B, T, S, 3, H, D]`` projection. Each kernel
program addresses its (b0, b1, head) slice through strides, so neither view is copied, and o is
written into a tensor laid out like q (:func:`layout.empty_in_layout_of`): for the temporal view
that is token layout, so the output projection reads it with no transpose either. Leading dims
that broadcast (text keys ``[B, 1, L, H, D]`` against every frame) are read with stride 0; their
gradients are summed back to the operand's shape.

How (online softmax, FA2): the forward keeps a running max and sum per query row in fp32 and
saves only o and the row log-sum-exp (base 2, ``+inf`` for a fully masked row, which makes that
row's o and all its gradients exactly 0). The backward recomputes P from the log-sum-exp: one
kernel for dK/dV (loop over query blocks), one for dQ (loop over key blocks), no atomics.

Numerics: loads are upcast to fp32 under the Triton interpreter (its bf16 arithmetic is wrong) and
for fp32 inputs; on the GPU fp16/bf16 operands go to ``tl.dot`` directly (tensor cores: wgmma on
sm_90a, mma on sm_80), fp32 operands use 3xTF32.

Registered as the ``triton`` implementation of ``attention`` through the torch.library custom op
``dit_video::flash_attention`` (fake + autograd), so torch.compile traces it without breaks.
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

MAX_HEAD_DIM = 256


# ============================================================================ kernels
@triton.jit
def _attn_fwd(Q, K, V, Out, LSE, MASK,
              sq0, sq1, sql, sqh, sqd,
              sk0, sk1, skl, skh, skd,
              sv0, sv1, svl, svh, svd,
              so0, so1, sol, soh, sod,
              sm0, sm1, sml,
              N1, H, Lq, Lk, D, qk_scale,
              HAS_MASK: tl.constexpr, UPCAST: tl.constexpr, DOT_PREC: tl.constexpr,
              BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    h = pid_bh % H
    b = pid_bh // H
    b1 = (b % N1).to(tl.int64)
    b0 = (b // N1).to(tl.int64)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    m_ok = offs_m < Lq
    d_ok = offs_d < D

    q_ptrs = Q + b0 * sq0 + b1 * sq1 + h * sqh + offs_m.to(tl.int64)[:, None] * sql + offs_d[None, :] * sqd
    q = tl.load(q_ptrs, mask=m_ok[:, None] & d_ok[None, :], other=0.0)
    if UPCAST:
        q = q.to(tl.float32)
    k_base = K + b0 * sk0 + b1 * sk1 + h * skh
    v_base = V + b0 * sv0 + b1 * sv1 + h * svh
    m_base = MASK + b0 * sm0 + b1 * sm1

    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    for start_n in range(0, Lk, BLOCK_N):
        cols = start_n + offs_n
        n_ok = cols < Lk
        kt = tl.load(k_base + cols.to(tl.int64)[None, :] * skl + offs_d[:, None] * skd,
                     mask=n_ok[None, :] & d_ok[:, None], other=0.0)  # [D, N]
        v = tl.load(v_base + cols.to(tl.int64)[:, None] * svl + offs_d[None, :] * svd,
                    mask=n_ok[:, None] & d_ok[None, :], other=0.0)  # [N, D]
        if UPCAST:
            kt = kt.to(tl.float32)
            v = v.to(tl.float32)
        s = tl.dot(q, kt, input_precision=DOT_PREC) * qk_scale  # base-2 logits
        valid = n_ok
        if HAS_MASK:
            valid = valid & (tl.load(m_base + cols * sml, mask=n_ok, other=0) != 0)
        s = tl.where(valid[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # rows with no key yet
        alpha = tl.exp2(m_i - m_safe)
        p = tl.exp2(s - m_safe[:, None])
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=DOT_PREC)
        m_i = m_new

    empty = l_i == 0.0  # fully masked row: o = 0, lse = +inf (so backward P = 0)
    o = acc / tl.where(empty, 1.0, l_i)[:, None]
    lse = tl.where(empty, float("inf"), m_i + tl.log2(tl.where(empty, 1.0, l_i)))
    o_ptrs = Out + b0 * so0 + b1 * so1 + h * soh + offs_m.to(tl.int64)[:, None] * sol + offs_d[None, :] * sod
    tl.store(o_ptrs, o.to(Out.dtype.element_ty), mask=m_ok[:, None] & d_ok[None, :])
    tl.store(LSE + pid_bh.to(tl.int64) * Lq + offs_m, lse, mask=m_ok)


@triton.jit
def _attn_bwd_delta(Out, DO, DELTA,
                    so0, so1, sol, soh, sod,
                    sg0, sg1, sgl, sgh, sgd,
                    N1, H, Lq, D,
                    BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr):
    """delta[row] = sum_d o * do (fp32): the softmax-gradient correction term."""
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    h = pid_bh % H
    b = pid_bh // H
    b1 = (b % N1).to(tl.int64)
    b0 = (b // N1).to(tl.int64)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    msk = (offs_m < Lq)[:, None] & (offs_d < D)[None, :]
    rows = offs_m.to(tl.int64)[:, None]
    o = tl.load(Out + b0 * so0 + b1 * so1 + h * soh + rows * sol + offs_d[None, :] * sod, mask=msk, other=0.0)
    do = tl.load(DO + b0 * sg0 + b1 * sg1 + h * sgh + rows * sgl + offs_d[None, :] * sgd, mask=msk, other=0.0)
    delta = tl.sum(o.to(tl.float32) * do.to(tl.float32), 1)
    tl.store(DELTA + pid_bh.to(tl.int64) * Lq + offs_m, delta, mask=offs_m < Lq)


@triton.jit
def _attn_bwd_dkdv(Q, K, V, DO, LSE, DELTA, MASK, DK, DV,
                   sq0, sq1, sql, sqh, sqd,
                   sk0, sk1, skl, skh, skd,
                   sv0, sv1, svl, svh, svd,
                   sg0, sg1, sgl, sgh, sgd,
                   sm0, sm1, sml,
                   sdk0, sdk1, sdkl, sdkh, sdkd,
                   sdv0, sdv1, sdvl, sdvh, sdvd,
                   N1, H, Lq, Lk, D, qk_scale, sm_scale,
                   HAS_MASK: tl.constexpr, UPCAST: tl.constexpr, DOT_PREC: tl.constexpr,
                   BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
                   COMPUTE_DK: tl.constexpr = True, COMPUTE_DV: tl.constexpr = True):
    """dK, dV for one block of keys of one (b0, b1, head), looping over all query blocks.

    For head dims > 128 the two [BLOCK_N, D] fp32 accumulators do not fit in registers together;
    the launcher then runs this kernel twice, once per accumulator (COMPUTE_DK / COMPUTE_DV),
    recomputing P in each (more FLOPs, no spills).
    """
    pid_n = tl.program_id(0)
    pid_bh = tl.program_id(1)
    h = pid_bh % H
    b = pid_bh // H
    b1 = (b % N1).to(tl.int64)
    b0 = (b // N1).to(tl.int64)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_m = tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    n_ok = offs_n < Lk
    d_ok = offs_d < D
    nrows = offs_n.to(tl.int64)[:, None]
    kv_msk = n_ok[:, None] & d_ok[None, :]
    k = tl.load(K + b0 * sk0 + b1 * sk1 + h * skh + nrows * skl + offs_d[None, :] * skd, mask=kv_msk, other=0.0)
    v = tl.load(V + b0 * sv0 + b1 * sv1 + h * svh + nrows * svl + offs_d[None, :] * svd, mask=kv_msk, other=0.0)
    if UPCAST:
        k = k.to(tl.float32)
        v = v.to(tl.float32)
    valid = n_ok
    if HAS_MASK:
        valid = valid & (tl.load(MASK + b0 * sm0 + b1 * sm1 + offs_n * sml, mask=n_ok, other=0) != 0)

    q_base = Q + b0 * sq0 + b1 * sq1 + h * sqh
    g_base = DO + b0 * sg0 + b1 * sg1 + h * sgh
    row_base = pid_bh.to(tl.int64) * Lq
    dk = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
    dv = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
    for start_m in range(0, Lq, BLOCK_M):
        rows = start_m + offs_m
        m_ok = rows < Lq
        qt = tl.load(q_base + rows.to(tl.int64)[None, :] * sql + offs_d[:, None] * sqd,
                     mask=m_ok[None, :] & d_ok[:, None], other=0.0)  # [D, M]
        do = tl.load(g_base + rows.to(tl.int64)[:, None] * sgl + offs_d[None, :] * sgd,
                     mask=m_ok[:, None] & d_ok[None, :], other=0.0)  # [M, D]
        if UPCAST:
            qt = qt.to(tl.float32)
            do = do.to(tl.float32)
        lse = tl.load(LSE + row_base + rows, mask=m_ok, other=float("inf"))
        delta = tl.load(DELTA + row_base + rows, mask=m_ok, other=0.0)
        st = tl.dot(k, qt, input_precision=DOT_PREC) * qk_scale  # [N, M] base-2 logits
        pt = tl.where(valid[:, None], tl.exp2(st - lse[None, :]), 0.0)
        if COMPUTE_DV:
            dv += tl.dot(pt.to(do.dtype), do, input_precision=DOT_PREC)
        if COMPUTE_DK:
            dpt = tl.dot(v, tl.trans(do), input_precision=DOT_PREC)  # [N, M]
            dst = pt * (dpt - delta[None, :])
            dk += tl.dot(dst.to(qt.dtype), tl.trans(qt), input_precision=DOT_PREC)
    if COMPUTE_DK:
        dk = dk * sm_scale
        tl.store(DK + b0 * sdk0 + b1 * sdk1 + h * sdkh + nrows * sdkl + offs_d[None, :] * sdkd,
                 dk.to(DK.dtype.element_ty), mask=kv_msk)
    if COMPUTE_DV:
        tl.store(DV + b0 * sdv0 + b1 * sdv1 + h * sdvh + nrows * sdvl + offs_d[None, :] * sdvd,
                 dv.to(DV.dtype.element_ty), mask=kv_msk)


@triton.jit
def _attn_bwd_dq(Q, K, V, DO, LSE, DELTA, MASK, DQ,
                 sq0, sq1, sql, sqh, sqd,
                 sk0, sk1, skl, skh, skd,
                 sv0, sv1, svl, svh, svd,
                 sg0, sg1, sgl, sgh, sgd,
                 sm0, sm1, sml,
                 sdq0, sdq1, sdql, sdqh, sdqd,
                 N1, H, Lq, Lk, D, qk_scale, sm_scale,
                 HAS_MASK: tl.constexpr, UPCAST: tl.constexpr, DOT_PREC: tl.constexpr,
                 BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):
    """dQ for one block of queries of one (b0, b1, head), looping over all key blocks."""
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    h = pid_bh % H
    b = pid_bh // H
    b1 = (b % N1).to(tl.int64)
    b0 = (b // N1).to(tl.int64)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    m_ok = offs_m < Lq
    d_ok = offs_d < D
    mrows = offs_m.to(tl.int64)[:, None]
    q_msk = m_ok[:, None] & d_ok[None, :]
    q = tl.load(Q + b0 * sq0 + b1 * sq1 + h * sqh + mrows * sql + offs_d[None, :] * sqd, mask=q_msk, other=0.0)
    do = tl.load(DO + b0 * sg0 + b1 * sg1 + h * sgh + mrows * sgl + offs_d[None, :] * sgd, mask=q_msk, other=0.0)
    if UPCAST:
        q = q.to(tl.float32)
        do = do.to(tl.float32)
    row_base = pid_bh.to(tl.int64) * Lq
    lse = tl.load(LSE + row_base + offs_m, mask=m_ok, other=float("inf"))
    delta = tl.load(DELTA + row_base + offs_m, mask=m_ok, other=0.0)
    k_base = K + b0 * sk0 + b1 * sk1 + h * skh
    v_base = V + b0 * sv0 + b1 * sv1 + h * svh
    m_base = MASK + b0 * sm0 + b1 * sm1
    dq = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    for start_n in range(0, Lk, BLOCK_N):
        cols = start_n + offs_n
        n_ok = cols < Lk
        kt = tl.load(k_base + cols.to(tl.int64)[None, :] * skl + offs_d[:, None] * skd,
                     mask=n_ok[None, :] & d_ok[:, None], other=0.0)  # [D, N]
        vt = tl.load(v_base + cols.to(tl.int64)[None, :] * svl + offs_d[:, None] * svd,
                     mask=n_ok[None, :] & d_ok[:, None], other=0.0)  # [D, N]
        if UPCAST:
            kt = kt.to(tl.float32)
            vt = vt.to(tl.float32)
        valid = n_ok
        if HAS_MASK:
            valid = valid & (tl.load(m_base + cols * sml, mask=n_ok, other=0) != 0)
        s = tl.dot(q, kt, input_precision=DOT_PREC) * qk_scale
        p = tl.where(valid[None, :], tl.exp2(s - lse[:, None]), 0.0)
        dp = tl.dot(do, vt, input_precision=DOT_PREC)
        ds = p * (dp - delta[:, None])
        dq += tl.dot(ds.to(kt.dtype), tl.trans(kt), input_precision=DOT_PREC)
    dq = dq * sm_scale
    tl.store(DQ + b0 * sdq0 + b1 * sdq1 + h * sdqh + mrows * sdql + offs_d[None, :] * sdqd,
             dq.to(DQ.dtype.element_ty), mask=q_msk)


# ============================================================================ configs
# GPU tile configs per arch and head-dim tile (BLOCK_D): (BLOCK_M, BLOCK_N, num_warps, num_stages).
# Every one is compiled for its arch by `dit-video kernels-report`, which fails on any spill,
# shared memory over the limit, or (sm_90a) a matmul not on wgmma; the lists below are the configs
# that passed (others tried are in the report's history: 4-warp tiles at D>=128 spill).
_FWD = {
    64: [(128, 64, 8, 3), (64, 64, 4, 3)],
    128: [(128, 64, 8, 3), (128, 32, 8, 2)],
    256: [(64, 32, 8, 2), (64, 16, 8, 2)],
}
_DKDV = {
    64: [(32, 128, 8, 2), (32, 64, 4, 3)],
    128: [(32, 64, 8, 1), (16, 64, 8, 1)],
    256: [(16, 64, 8, 1)],  # dK and dV in separate launches (SPLIT_DKDV_ABOVE)
}
_DQ = {
    64: [(128, 64, 8, 2), (64, 32, 4, 2)],
    128: [(64, 32, 8, 2), (64, 16, 4, 1)],
    256: [(64, 16, 8, 1)],
}
FWD_CONFIGS: dict[str, dict[int, list[tuple[int, int, int, int]]]] = {
    "sm_80": {**_FWD, 256: [(64, 16, 8, 2)]},  # the N32 tile spills 88 B with the key mask on sm_80
    "sm_90a": _FWD,
}
DKDV_CONFIGS: dict[str, dict[int, list[tuple[int, int, int, int]]]] = {"sm_80": _DKDV, "sm_90a": _DKDV}
DQ_CONFIGS: dict[str, dict[int, list[tuple[int, int, int, int]]]] = {
    # mma.sync keeps the 64-row dQ accumulator and q/dO in registers: these spill on sm_80
    "sm_80": {**_DQ, 128: [(32, 64, 8, 2), (32, 32, 4, 2)], 256: [(32, 16, 8, 1), (16, 32, 4, 1)]},
    # D 256 on sm_90a: every wgmma tiling tried (M64 x N16/N32, 4/8/16 warps, q/dO reloaded per step)
    # spills 200+ bytes; the 32-row mma.sync tile does not. Reported as a waiver by kernels-report.
    "sm_90a": {**_DQ, 256: [(32, 16, 4, 1)]},
}
WGMMA_WAIVERS = {("flash_bwd_dq", 256): "D256 dQ on mma.sync: every wgmma tiling tried spills"}
SPLIT_DKDV_ABOVE = 128  # head-dim tile above which dK and dV are computed by separate launches
INTERP_BLOCK = 16  # interpreter tile: small, so tiny test shapes still cross block boundaries


def _delta_block(block_d: int) -> int:
    """Rows per program of the delta kernel: two [rows, D] tiles stay within ~64 fp32 regs/thread."""
    return max(16, 4096 // block_d)


def _dbucket(block_d: int) -> int:
    return 64 if block_d <= 64 else block_d


def _configs(table: dict, block_d: int, arch: str) -> list[triton.Config]:
    return [triton.Config({"BLOCK_M": bm, "BLOCK_N": bn}, num_warps=w, num_stages=s)
            for bm, bn, w, s in table[arch][_dbucket(block_d)]]


_tuned: dict[tuple[str, int, str], object] = {}


def _launcher(kernel, table: dict, block_d: int, device: torch.device):
    """The kernel itself under the interpreter; on the GPU an autotuner over ``table``'s configs."""
    if interpreting():
        return kernel
    arch = arch_of(device)
    key = (kernel.__name__, block_d, arch)
    if key not in _tuned:
        keys = [a for a in ("Lq", "Lk", "D", "HAS_MASK", "COMPUTE_DK", "COMPUTE_DV") if a in kernel.arg_names]
        _tuned[key] = triton.autotune(configs=_configs(table, block_d, arch), key=keys)(kernel)
    return _tuned[key]


def _interp_meta() -> dict:
    return {"BLOCK_M": INTERP_BLOCK, "BLOCK_N": INTERP_BLOCK} if interpreting() else {}


# ============================================================================ launchers
def _launch_fwd(q, k, v, mask, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    batch, out_shape = attention_out_shape(q, k, v, mask)
    o = empty_attention_out(q, out_shape)
    plan = attention_plan(q, k, v, o.stride(), mask)
    assert isinstance(plan, AttnPlan), plan
    lq, h, d = q.shape[-3:]
    lk = k.shape[-3]
    nbh = plan.n0 * plan.n1 * h
    lse = poisoned(torch.empty((nbh, lq), device=q.device, dtype=torch.float32))
    if o.numel() == 0:
        return o, lse
    st = plan.strides
    block_d = next_pow2(d)
    fn = _launcher(_attn_fwd, FWD_CONFIGS, block_d, q.device)
    grid = lambda meta: (triton.cdiv(lq, meta["BLOCK_M"]), nbh)  # noqa: E731
    fn[grid](q, k, v, o, lse, mask_arg(mask, q),
             *st["q"], *st["k"], *st["v"], *st["o"], *(st["mask"] if mask is not None else (0, 0, 0)),
             plan.n1, h, lq, lk, d, scale * LOG2E,
             HAS_MASK=mask is not None, UPCAST=upcast_for(q.dtype), DOT_PREC=dot_precision(q.dtype),
             BLOCK_D=block_d, **_interp_meta())
    return o, lse


def _launch_bwd(do, q, k, v, o, lse, mask, scale: float):
    batch, out_shape = attention_out_shape(q, k, v, mask)
    lq, h, d = q.shape[-3:]
    lk = k.shape[-3]
    dq = grad_buffer(q, batch + tuple(q.shape[-3:]))
    dk = grad_buffer(k, batch + tuple(k.shape[-3:]))
    dv = grad_buffer(v, batch + tuple(v.shape[-3:]))
    bufs = {"do": do, "dq": dq, "dk": dk, "dv": dv}
    plan = attention_plan(q, k, v, o.stride(), mask, bufs)
    if isinstance(plan, str):  # an upstream op handed us dO with strides that do not fold: pack it
        do = do.contiguous()
        bufs["do"] = do
        plan = attention_plan(q, k, v, o.stride(), mask, bufs)
    assert isinstance(plan, AttnPlan), plan
    if do.numel() == 0:
        return reduce_grad(dq.zero_(), q), reduce_grad(dk.zero_(), k), reduce_grad(dv.zero_(), v)
    nbh = plan.n0 * plan.n1 * h
    st = plan.strides
    block_d = next_pow2(d)
    delta = poisoned(torch.empty_like(lse))
    bm = _delta_block(block_d) if not interpreting() else INTERP_BLOCK
    _attn_bwd_delta[(triton.cdiv(lq, bm), nbh)](o, do, delta, *st["o"], *st["do"], plan.n1, h, lq, d,
                                                BLOCK_M=bm, BLOCK_D=block_d)
    mst = st["mask"] if mask is not None else (0, 0, 0)
    common = dict(HAS_MASK=mask is not None, UPCAST=upcast_for(q.dtype), DOT_PREC=dot_precision(q.dtype),
                  BLOCK_D=block_d, **_interp_meta())
    fn = _launcher(_attn_bwd_dkdv, DKDV_CONFIGS, block_d, q.device)
    for which in ([(True, False), (False, True)] if block_d > SPLIT_DKDV_ABOVE else [(True, True)]):
        fn[lambda meta: (triton.cdiv(lk, meta["BLOCK_N"]), nbh)](
            q, k, v, do, lse, delta, mask_arg(mask, q), dk, dv,
            *st["q"], *st["k"], *st["v"], *st["do"], *mst, *st["dk"], *st["dv"],
            plan.n1, h, lq, lk, d, scale * LOG2E, scale, COMPUTE_DK=which[0], COMPUTE_DV=which[1], **common)
    fn = _launcher(_attn_bwd_dq, DQ_CONFIGS, block_d, q.device)
    fn[lambda meta: (triton.cdiv(lq, meta["BLOCK_M"]), nbh)](
        q, k, v, do, lse, delta, mask_arg(mask, q), dq,
        *st["q"], *st["k"], *st["v"], *st["do"], *mst, *st["dq"],
        plan.n1, h, lq, lk, d, scale * LOG2E, scale, **common)
    return reduce_grad(dq, q), reduce_grad(dk, k), reduce_grad(dv, v)


# ============================================================================ custom ops
flash_attention_op = define_attention_op("flash_attention", _launch_fwd, _launch_bwd)
flash_attention_backward_op = flash_attention_op.backward_op


# ============================================================================ public impl + registration
def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_padding_mask: torch.Tensor | None = None,
              scale: float | None = None) -> torch.Tensor:
    """Triton flash attention; same contract as ``reference.attention_ref``."""
    scale = q.shape[-1] ** -0.5 if scale is None else float(scale)
    return flash_attention_op(q, k, v, key_padding_mask, scale)[0]


def check(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_padding_mask: torch.Tensor | None = None,
          scale: float | None = None) -> str | None:
    return attention_reason(q, k, v, key_padding_mask, MAX_HEAD_DIM)


dispatch.register("attention", "triton", attention, check, priority=0)


# ============================================================================ ahead-of-time specs
def _ref_shape(d: int) -> tuple[str, int, int, int]:
    """Spatial attention of a B1 T16 S1024 video at head dim d (H*D kept near 384): (label, N*H, L, d)."""
    h = max(1, 384 // d)
    return f"spatial B1 T16 S1024 H{h} D{d}", 16 * h, 1024, d


def aot_kernels(arch: str) -> list:
    """Every kernel x GPU config for ``arch``, bf16 operands on tensor cores (the GPU path, UPCAST off)."""
    from .aot_spec import make_spec
    from .roofline import flash_kernel_work

    specs = []
    strides = {k: [f"s{k}{i}" for i in ("0", "1", "l", "h", "d")] for k in ("q", "k", "v", "o", "g", "dk", "dv", "dq")}
    ones = [s[-1] for s in strides.values()] + ["sml"]
    div16 = [x for s in strides.values() for x in (s[0], s[1], s[2])] + ["sm0", "sm1", "D", "Lq", "Lk"]
    ptr = {"Q": "bf16", "K": "bf16", "V": "bf16", "Out": "bf16", "DO": "bf16", "DQ": "bf16", "DK": "bf16",
           "DV": "bf16", "LSE": "fp32", "DELTA": "fp32", "MASK": "u8"}
    for bd in sorted(FWD_CONFIGS[arch]):
        label, nh, L, d = _ref_shape(bd)
        work = {k: flash_kernel_work(k, nh, L, L, d, 2) for k in ("fwd", "bwd_dkdv", "bwd_dq", "bwd_delta")}
        for name, fn, table, flops, nbytes in (
                ("flash_fwd", _attn_fwd, FWD_CONFIGS, work["fwd"].flops, work["fwd"].bytes),
                ("flash_bwd_dkdv", _attn_bwd_dkdv, DKDV_CONFIGS, work["bwd_dkdv"].flops, work["bwd_dkdv"].bytes),
                ("flash_bwd_dq", _attn_bwd_dq, DQ_CONFIGS, work["bwd_dq"].flops, work["bwd_dq"].bytes)):
            variants: list[tuple[str, dict]] = [("", {})]
            if name == "flash_fwd":
                variants = [("", {"HAS_MASK": False}), ("_mask", {"HAS_MASK": True})]
            if name == "flash_bwd_dkdv" and bd > SPLIT_DKDV_ABOVE:  # run as two launches
                variants = [("_dk", {"COMPUTE_DV": False}), ("_dv", {"COMPUTE_DK": False})]
                name = "flash_bwd"
            for bm, bn, w, s in table[arch][bd]:
                for suffix, extra in variants:
                    specs.append(make_spec(
                        name + suffix, fn,
                        pointers={p: t for p, t in ptr.items() if p in fn.arg_names},
                        constexprs={**dict(HAS_MASK=False, UPCAST=False, DOT_PREC="tf32",
                                           BLOCK_M=bm, BLOCK_N=bn, BLOCK_D=bd), **extra},
                        floats=("qk_scale", "sm_scale"), ones=[o for o in ones if o in fn.arg_names],
                        div16=div16, num_warps=w, num_stages=s, config=f"D{bd} M{bm} N{bn} w{w} s{s}",
                        shape=label, flops=flops, nbytes=nbytes, needs_wgmma=True,
                        waiver=WGMMA_WAIVERS.get((name, bd), "") if arch == "sm_90a" else ""))
        specs.append(make_spec(
            "flash_bwd_delta", _attn_bwd_delta, pointers={"Out": "bf16", "DO": "bf16", "DELTA": "fp32"},
            constexprs=dict(BLOCK_M=_delta_block(bd), BLOCK_D=bd), ones=["sod", "sgd"], div16=div16, num_warps=4,
            num_stages=1, config=f"D{bd} M{_delta_block(bd)} w4", shape=label, flops=work["bwd_delta"].flops,
            nbytes=work["bwd_delta"].bytes))
    return specs
