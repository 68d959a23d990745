"""``train.precision: auto``: train in bf16 only where this device's bf16 GEMM is faster than fp32, measured.

Whether bf16 pays depends on the machine, not on the code: a GPU or a CPU with bf16 dot products
(AVX512-BF16, AMX) runs bf16 GEMMs 2-10x faster than fp32, but a CPU with AVX2 only has oneDNN emulate
them, about 20x *slower* (measured on a 2-core AVX2 AMD EPYC: 62 ms vs 2.8 ms for the demo's MLP GEMM).
The machines this project runs on change from day to day, so ``auto`` times the model's own MLP GEMM
(``[tokens, width] @ [width, mlp_ratio * width]``) in both dtypes on the training device, in one process,
interleaved, medians, and takes bf16 only if it is at least :data:`MIN_SPEEDUP` times faster (bf16 also
pays casts and an fp32 master copy). Under several ranks rank 0's choice is broadcast, so all agree.
"""

from __future__ import annotations

import statistics
import time

import torch

MIN_SPEEDUP = 1.25  # bf16 must beat fp32 by this much to be worth its casts and master weights


def _time_gemm(a: torch.Tensor, b: torch.Tensor) -> float:
    sync = torch.cuda.synchronize if a.is_cuda else (lambda: None)
    sync()
    t0 = time.perf_counter()
    a @ b
    sync()
    return time.perf_counter() - t0


def gemm_times(device: torch.device, tokens: int, width: int, hidden: int, reps: int = 5) -> dict[str, float]:
    """Median seconds of one ``[tokens, width] @ [width, hidden]`` GEMM in fp32 and in bf16 (interleaved)."""
    g = torch.Generator(device="cpu").manual_seed(0)
    a32 = torch.randn(tokens, width, generator=g).to(device)
    b32 = torch.randn(width, hidden, generator=g).to(device)
    pairs = {"fp32": (a32, b32), "bf16": (a32.bfloat16(), b32.bfloat16())}
    for a, b in pairs.values():  # warm-up: kernel selection, page faults
        _time_gemm(a, b)
    times: dict[str, list[float]] = {k: [] for k in pairs}
    for _ in range(reps):
        for k, (a, b) in pairs.items():
            times[k].append(_time_gemm(a, b))
    return {k: statistics.median(v) for k, v in times.items()}


def choose_precision(device: torch.device, tokens: int, width: int, hidden: int) -> tuple[str, str]:
    """``("bf16" | "fp32", reason)`` for a model of ``width`` (MLP ``hidden``) on ``tokens`` tokens per step."""
    tokens = max(64, min(tokens, 16384))  # the GEMM's row count: enough to be representative, cheap to time
    t = gemm_times(device, tokens, width, hidden)
    speedup = t["fp32"] / t["bf16"]
    choice = "bf16" if speedup >= MIN_SPEEDUP else "fp32"
    reason = (f"bf16 GEMM {t['bf16'] * 1e3:.2f} ms vs fp32 {t['fp32'] * 1e3:.2f} ms at [{tokens}x{width}]@"
              f"[{width}x{hidden}] on {device.type} ({speedup:.2f}x; bf16 needs >= {MIN_SPEEDUP}x)")
    return choice, reason


def agree(choice: str, world_size: int) -> str:
    """Rank 0's choice on every rank (timings differ between processes)."""
    if world_size <= 1 or not torch.distributed.is_initialized():
        return choice
    box = [choice]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]
