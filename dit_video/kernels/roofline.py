"""The one FLOP / byte model of the fused ops, and the H100 / H200 floors it implies.

Used by ``benchmarks/`` (every timing row reads against a floor), by the ahead-of-time kernel report
(``aot.py``: each compiled kernel's reference shape) and by ``python -m benchmarks gpu-check``.

The floor of a call on a GPU is ``max(FLOPs / peak rate, minimum bytes / HBM bandwidth)``: no
implementation can beat it (docs/kernels.md §1). Minimum bytes count every input read once and every
output written once; broadcast operands (a text key shared by all frames, per-sample modulation
vectors) count once.

Attention: forward ``4·N·H·Lq·Lk·D`` FLOPs (two matmuls); the backward's minimum is 2.5x forward
(recompute S, then dV, dP, dQ, dK: five matmuls). Forward reads q, k, v and writes o plus the fp32
log-sum-exp; backward reads q, k, v, o, dO and the log-sum-exp, writes dq, dk, dv. Flash kernels
that split the backward into a dK/dV kernel and a dQ kernel recompute S and dP in both and execute
3.5x forward in all: :func:`flash_kernel_work` gives each kernel's executed share.
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
    bwd = Work(2.5 * fwd_flops, 4 * q_like + 4 * kv_like + lse)
    return {"fwd": fwd, "bwd": bwd, "fwd+bwd": fwd + bwd}[mode]


def gated_residual_adaln_work(tokens: int, width: int, batch: int, es: int, mode: str = "fwd") -> Work:
    """``r = x + g*y; h = LN(r)*(1+scale)+shift``: ~10 FLOPs per element forward, ~20 backward.

    Forward reads x, y and writes r, h (mean/rstd are recomputable); backward reads dr, dh, r, y and
    writes dx, dy (the per-sample dgate/dshift/dscale reductions are tiny).
    """
    el = tokens * width
    mods = 3 * batch * width * es
    fwd = Work(10.0 * el, 4 * el * es + mods)
    bwd = Work(20.0 * el, 6 * el * es + 2 * mods)
    return {"fwd": fwd, "bwd": bwd, "fwd+bwd": fwd + bwd}[mode]


def adaln_modulate_work(tokens: int, width: int, batch: int, es: int, mode: str = "fwd") -> Work:
    """``h = LN(x)*(1+scale)+shift``: ~8 FLOPs per element forward (read x, write h), ~16 backward
    (read dh and x, write dx)."""
    el = tokens * width
    mods = 2 * batch * width * es
    fwd = Work(8.0 * el, 2 * el * es + mods)
    bwd = Work(16.0 * el, 3 * el * es + 2 * mods)
    return {"fwd": fwd, "bwd": bwd, "fwd+bwd": fwd + bwd}[mode]


def gelu_tanh_work(numel: int, es: int, mode: str = "fwd") -> Work:
    """GELU (tanh): ~10 FLOPs per element forward (read z, write a), ~20 backward (read da and z, write dz);
    the tanh / exp counts as a few of them."""
    fwd = Work(10.0 * numel, 2 * numel * es)
    bwd = Work(20.0 * numel, 3 * numel * es)
    return {"fwd": fwd, "bwd": bwd, "fwd+bwd": fwd + bwd}[mode]


def rope3d_work(numel: int, table_numel: int, es: int, mode: str = "fwd") -> Work:
    """Rotate pairs: 3 FLOPs per output element; read x and the fp32 cos/sin tables, write out.

    Backward is the inverse rotation of the gradient: the same traffic again.
    """
    fwd = Work(3.0 * numel, 2 * numel * es + 2 * table_numel * 4)
    return {"fwd": fwd, "bwd": fwd, "fwd+bwd": fwd + fwd}[mode]


def flash_kernel_work(kernel: str, nh: int, lq: int, lk: int, d: int, es: int) -> Work:
    """What one launch of a flash-attention kernel executes over ``nh`` (sequence, head) pairs.

    ``fwd``: S = QK^T, O = PV (4 units of nh*Lq*Lk*D); ``bwd_dkdv``: S, dP, dV, dK (8); ``bwd_dq``: S, dP,
    dQ (6); ``bwd_delta``: rowsum(dO * O) (2 nh*Lq*D). Bytes: every operand read once, every result written.
    """
    q_like, kv_like, lse = nh * lq * d * es, nh * lk * d * es, nh * lq * LSE_BYTES
    unit = nh * lq * lk * d
    return {"fwd": Work(4.0 * unit, 2 * q_like + 2 * kv_like + lse),
            "bwd_dkdv": Work(8.0 * unit, 2 * q_like + 4 * kv_like + 2 * lse),
            "bwd_dq": Work(6.0 * unit, 3 * q_like + 2 * kv_like + 2 * lse),
            "bwd_delta": Work(2.0 * nh * lq * d, 2 * q_like + lse)}[kernel]


def floor_us(work: Work, dtype: torch.dtype = torch.bfloat16, gpu: str = "h100") -> tuple[float, str]:
    """The floor on ``gpu`` in microseconds and which side bounds it ('compute' or 'memory')."""
    rate = PEAK_FLOPS.get(dtype, PEAK_FLOPS[torch.float32])
    tc, tm = work.flops / rate, work.bytes / GPUS[gpu]
    return max(tc, tm) * 1e6, ("compute" if tc >= tm else "memory")


def floors_ms(work: Work, dtype: torch.dtype) -> dict[str, float]:
    """``{"floor_h100_ms": ..., "floor_h200_ms": ...}`` for this work at ``dtype``'s peak rate."""
    rate = PEAK_FLOPS.get(dtype, PEAK_FLOPS[torch.float32])
    return {f"floor_{name}_ms": 1e3 * max(work.flops / rate, work.bytes / bw) for name, bw in GPUS.items()}


def bound_by(work: Work, dtype: torch.dtype, gpu: str = "h100") -> str:
    """'compute' or 'memory': which term sets the floor on ``gpu``."""
    rate = PEAK_FLOPS.get(dtype, PEAK_FLOPS[torch.float32])
    return "compute" if work.flops / rate >= work.bytes / GPUS[gpu] else "memory"
