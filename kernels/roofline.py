"""FLOP and minimum-byte counts per kernel, and the H100 / H200 floors they imply.

The floor of a kernel on a GPU is ``max(FLOPs / peak rate, minimum bytes / HBM bandwidth)``:
no implementation can beat it, so a GPU timing reads against it directly (KERNELS.md §1).
Minimum bytes count every input read once and every output written once; broadcast operands
(a text key shared by all frames, per-sample modulation vectors) count once.

Attention: forward ``4·N·H·Lq·Lk·D`` FLOPs; backward 2.5x forward. Forward reads q, k, v and writes
o plus the fp32 log-sum-exp; backward reads q, k, v, o, dO and the log-sum-exp, writes dq, dk, dv.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

# Dense peak rates (no sparsity) of the SXM parts, and HBM bandwidth.
PEAK_FLOPS: dict[torch.dtype, float] = {
    torch.bfloat16: 989e12,
    torch.float16: 989e12,
    torch.float32: 67e12,  # SIMT fp32 (TF32 tensor cores: 494.7e12, when allowed)
}
GPUS: dict[str, float] = {"h100": 3.35e12, "h200": 4.8e12}  # name -> bytes/s

LSE_BYTES = 4  # the fp32 log-sum-exp an attention forward keeps per (row, head)


@dataclass(frozen=True)
class Work:
    """What one call must do: FLOPs and the fewest bytes it must move."""

    flops: float
    bytes: float

    def __add__(self, other: Work) -> Work:
        return Work(self.flops + other.flops, self.bytes + other.bytes)


def attention_work(n: int, heads: int, lq: int, lk: int, d: int, es: int, kv_n: int | None = None,
                   mode: str = "fwd") -> Work:
    """``n`` independent sequences (``kv_n`` distinct k/v sets when k/v broadcast, e.g. cross)."""
    kv_n = n if kv_n is None else kv_n
    fwd_flops = 4.0 * n * heads * lq * lk * d
    q_like = n * heads * lq * d * es  # q, o, dO, dq each
    kv_like = kv_n * heads * lk * d * es  # k, v, dk, dv each
    lse = n * heads * lq * LSE_BYTES
    fwd = Work(fwd_flops, 2 * q_like + 2 * kv_like + lse)
    if mode == "fwd":
        return fwd
    bwd = Work(2.5 * fwd_flops, 4 * q_like + 4 * kv_like + lse)
    return fwd + bwd


def gated_residual_adaln_work(tokens: int, width: int, batch: int, es: int, mode: str = "fwd") -> Work:
    """``r = x + g*y; h = LN(r)*(1+scale)+shift``: ~10 FLOPs per element forward, ~20 backward.

    Forward reads x, y and writes r, h (mean/rstd are recomputable); backward reads dr, dh, r, y and
    writes dx, dy (the per-sample dgate/dshift/dscale reductions are tiny).
    """
    el = tokens * width
    mods = 3 * batch * width * es
    fwd = Work(10.0 * el, 4 * el * es + mods)
    if mode == "fwd":
        return fwd
    return fwd + Work(20.0 * el, 6 * el * es + 2 * mods)


def rope3d_work(numel: int, table_numel: int, es: int, mode: str = "fwd") -> Work:
    """Rotate pairs: 3 FLOPs per output element; read x and the fp32 cos/sin tables, write out.

    Backward is the inverse rotation of the gradient: the same traffic again.
    """
    fwd = Work(3.0 * numel, 2 * numel * es + 2 * table_numel * 4)
    return fwd if mode == "fwd" else fwd + fwd


def floors_ms(work: Work, dtype: torch.dtype) -> dict[str, float]:
    """``{"floor_h100_ms": ..., "floor_h200_ms": ...}`` for this work at ``dtype``'s peak rate."""
    rate = PEAK_FLOPS.get(dtype, PEAK_FLOPS[torch.float32])
    return {f"floor_{name}_ms": 1e3 * max(work.flops / rate, work.bytes / bw) for name, bw in GPUS.items()}


def bound_by(work: Work, dtype: torch.dtype, gpu: str = "h100") -> str:
    """'compute' or 'memory': which term sets the floor on ``gpu``."""
    rate = PEAK_FLOPS.get(dtype, PEAK_FLOPS[torch.float32])
    return "compute" if work.flops / rate >= work.bytes / GPUS[gpu] else "memory"
