"""Timing: interleaved rounds on CPU, CUDA events / ``triton.testing.do_bench`` with an L2 flush on GPU.

Everything reported as a ratio is measured **in the same process, pair by pair**: on CPU each
round runs every candidate once (round robin, so a noisy neighbour slows all of them alike) and
the ratio of a candidate to the baseline is the median over rounds of the per-round ratio.
Absolute times are medians with their spread (interquartile range, min, max).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch


@dataclass
class Timing:
    """Per-run times (ms) of one candidate, plus per-round ratios to the baseline."""

    times_ms: list[float] = field(default_factory=list)
    ratios: list[float] = field(default_factory=list)

    @property
    def median_ms(self) -> float:
        return statistics.median(self.times_ms)

    def summary(self) -> dict[str, float | int | None]:
        t = sorted(self.times_ms)
        q = statistics.quantiles(t, n=4, method="inclusive") if len(t) >= 2 else [t[0], t[0], t[0]]
        return {
            "time_ms": statistics.median(t),
            "time_iqr_ms": q[2] - q[0],
            "time_min_ms": t[0],
            "time_max_ms": t[-1],
            "reps": len(t),
            "ratio_vs_baseline": statistics.median(self.ratios) if self.ratios else None,
        }


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def time_cpu(fns: dict[str, Callable[[], object]], baseline: str | None, *, warmup: int = 1, reps: int = 5,
             min_reps: int = 3, budget_s: float = 10.0) -> dict[str, Timing]:
    """Round-robin ``time.perf_counter`` timing of every fn; stops at ``reps`` rounds or the budget.

    ``warmup`` rounds (not recorded) come first: they include torch.compile's compilation.
    At least ``min_reps`` rounds are recorded whatever the budget.
    """
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    out = {name: Timing() for name in fns}
    start = time.perf_counter()
    for i in range(reps):
        if i >= min_reps and time.perf_counter() - start > budget_s:
            break
        round_ms: dict[str, float] = {}
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            round_ms[name] = 1e3 * (time.perf_counter() - t0)
            out[name].times_ms.append(round_ms[name])
        if baseline in round_ms:
            for name, ms in round_ms.items():
                out[name].ratios.append(ms / round_ms[baseline])
    return out


_L2_FLUSH: torch.Tensor | None = None


def _flush_l2() -> None:
    """Overwrite a buffer larger than any L2 (H100: 50 MB) so each run starts cold."""
    global _L2_FLUSH
    if _L2_FLUSH is None:
        _L2_FLUSH = torch.empty(256 * 2**20, dtype=torch.int8, device="cuda")
    _L2_FLUSH.zero_()


def time_cuda_events(fn: Callable[[], object], *, warmup: int = 5, reps: int = 50,
                     grad_to_none: list[torch.Tensor] | None = None) -> list[float]:
    """CUDA-event timing of ``fn``, L2 flushed before each run (the flush is outside the events)."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
    for i in range(reps):
        for t in grad_to_none or ():
            t.grad = None
        _flush_l2()
        starts[i].record()
        fn()
        ends[i].record()
    torch.cuda.synchronize()
    return [s.elapsed_time(e) for s, e in zip(starts, ends)]


def time_cuda(fns: dict[str, Callable[[], object]], baseline: str | None, *, reps: int = 50,
              grad_to_none: list[torch.Tensor] | None = None) -> dict[str, Timing]:
    """GPU timing: ``triton.testing.do_bench`` (flushes L2 itself) when triton imports, else CUDA events.

    Candidates run one after another on an idle GPU; the ratio is median(candidate)/median(baseline)
    of runs taken in this process.
    """
    try:
        from triton.testing import do_bench
    except Exception:  # noqa: BLE001 - triton missing or broken: events do the same job
        do_bench = None
    out: dict[str, Timing] = {}
    for name, fn in fns.items():
        if do_bench is not None:
            times = do_bench(fn, warmup=25, rep=100, grad_to_none=grad_to_none, return_mode="all")
            times = [float(t) for t in times]
        else:
            times = time_cuda_events(fn, reps=reps, grad_to_none=grad_to_none)
        out[name] = Timing(times_ms=times)
    if baseline in out:
        base = out[baseline].median_ms
        for t in out.values():
            t.ratios = [t.median_ms / base]
    return out


def time_fns(device: str, fns: dict[str, Callable[[], object]], baseline: str | None, *, quick: bool = False,
             grad_to_none: list[torch.Tensor] | None = None, budget_s: float = 10.0) -> dict[str, Timing]:
    """Dispatch to :func:`time_cpu` or :func:`time_cuda` with the suite's repetition settings."""
    if device == "cuda":
        return time_cuda(fns, baseline, reps=10 if quick else 50, grad_to_none=grad_to_none)

    def with_grads_cleared(fn: Callable[[], object]) -> Callable[[], object]:
        def run() -> object:
            for t in grad_to_none or ():
                t.grad = None
            return fn()
        return run

    return time_cpu({k: with_grads_cleared(f) for k, f in fns.items()}, baseline,
                    warmup=1, reps=3 if quick else 7, min_reps=3, budget_s=0.5 if quick else budget_s)
