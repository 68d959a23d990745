"""``python -m benchmarks kernels``: every fused op x typical shapes x every candidate on the device.

For each case (op, attention kind, shape) and mode (``fwd`` under no_grad, ``fwd+bwd``), the
runnable candidates are first called once each (the warm-up, which is also where torch.compile
compiles; a candidate that raises becomes an ``error`` row), then timed together (interleaved
rounds on CPU; ``do_bench`` with an L2 flush on CUDA) and measured for memory. Candidates that
cannot run are rows with ``status`` ``absent`` or ``skipped`` and the reason.
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path

import torch

from dit_video import kernels
from dit_video.kernels.roofline import bound_by, floors_ms

from . import memory, timing
from .backend_probe import load_backends
from .candidates import BASELINE, Inputs, applicable, make_fn, make_inputs, why_not, work
from .shapes import Case, cases_for

log = logging.getLogger("benchmarks.kernels")
MODES = ("fwd", "fwd+bwd")


def _tensors(outs: object) -> list[torch.Tensor]:
    return [o for o in (outs if isinstance(outs, (tuple, list)) else (outs,)) if isinstance(o, torch.Tensor)]


def _grads_for(outs: object) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    outs_l = _tensors(outs)
    return outs_l, [torch.randn_like(o) for o in outs_l]


def _mode_fn(fn: Callable[[], object], mode: str, grads: list[torch.Tensor]) -> Callable[[], object]:
    if mode == "fwd":
        def fwd() -> object:
            with torch.no_grad():
                return fn()

        return fwd

    def fwd_bwd() -> object:  # the output gradients are made once, outside the timing (randn is not free)
        torch.autograd.backward(_tensors(fn()), grads)
        return None

    return fwd_bwd


def _memory(device: str, fn: Callable[[], object], mode: str, run: Callable[[], object],
            inputs: Inputs) -> dict[str, int | None]:
    out: dict[str, int | None] = {}
    if mode == "fwd+bwd":
        with torch.enable_grad():
            total, res = memory.saved_bytes(fn)
            del res
            new, res = memory.saved_bytes(fn, exclude=inputs.leaves)
            del res
        out["saved_bytes"] = total
        out["saved_new_bytes"] = new  # saved tensors other than the inputs themselves (copies, o, lse...)
    for t in inputs.leaves:
        t.grad = None
    if device == "cuda":
        out["cuda_peak_bytes"] = memory.cuda_peak(run)
    else:
        out["peak_rss_delta_bytes"] = memory.peak_rss_delta(run)
    for t in inputs.leaves:
        t.grad = None
    return out


def _base_row(case: Case, device: str, dtype: torch.dtype, mode: str, candidate: str, inputs: Inputs) -> dict:
    w = work(case, inputs, dtype, mode)
    row = {
        "suite": "kernels", "name": case.name, "op": case.op, "kind": case.kind, "preset": case.preset,
        "backend": candidate, "mode": mode, "device": device, "dtype": str(dtype).removeprefix("torch."),
        "shape": case.shape(), "tokens": case.tokens, "flops": w.flops, "min_bytes": w.bytes,
        "bound_h100": bound_by(w, dtype),
    }
    row.update(floors_ms(w, dtype))
    return row


def run_case(case: Case, device: str, dtype: torch.dtype, quick: bool, budget_s: float) -> list[dict]:
    """All rows (every candidate x both modes) for one case."""
    torch.manual_seed(0)
    inputs = make_inputs(case, device, dtype)
    rows: list[dict] = []
    runnable: dict[str, Callable[[], object]] = {}
    for cand in applicable(case.op):
        skip = why_not(cand, case, inputs, device, quick)
        if skip is not None:
            for mode in MODES:
                rows.append(_base_row(case, device, dtype, mode, cand, inputs) | {"status": skip[0], "reason": skip[1]})
            continue
        runnable[cand] = make_fn(cand, case, inputs)

    with torch.no_grad():
        _, grads = _grads_for(runnable[BASELINE]())
    for mode in MODES:
        fns: dict[str, Callable[[], object]] = {}
        for cand, fn in runnable.items():
            run = _mode_fn(fn, mode, grads)
            row = _base_row(case, device, dtype, mode, cand, inputs)
            t0 = time.perf_counter()
            try:
                run()  # warm-up / compilation; errors (unsupported, OOM) become rows
                if device == "cuda":
                    torch.cuda.synchronize()
            except Exception as e:  # noqa: BLE001 - report, do not abort the suite
                rows.append(row | {"status": "error", "reason": f"{type(e).__name__}: {e}"[:500]})
                continue
            finally:
                for t in inputs.leaves:
                    t.grad = None
            fns[cand] = run
            if cand == "compile":
                row["compile_s"] = time.perf_counter() - t0
            rows.append(row | {"status": "ok", "reason": None})
        if not fns:
            continue
        times = timing.time_fns(device, fns, BASELINE if BASELINE in fns else None, quick=quick,
                                grad_to_none=inputs.leaves, budget_s=budget_s)
        sdpa = times["sdpa"].summary()["time_ms"] if "sdpa" in fns else None
        for row in rows:
            if row["mode"] != mode or row["status"] != "ok" or row["backend"] not in fns:
                continue
            cand = row["backend"]
            summ = times[cand].summary()
            row.update(summ)
            row["ratio_vs_torch"] = row.pop("ratio_vs_baseline")
            row["ratio_vs_sdpa"] = None if sdpa is None else summ["time_ms"] / sdpa  # the user-style path
            if cand == "auto":  # what it resolved to in this mode (no_grad is another layout key)
                with torch.no_grad() if mode == "fwd" else contextlib.nullcontext():
                    args, kwargs = inputs.build()
                    row["auto_chose"] = kernels.resolve(case.op, "auto", *args, **kwargs).backend
            sec = summ["time_ms"] / 1e3
            row["tflops"] = row["flops"] / sec / 1e12
            row["gbs"] = row["min_bytes"] / sec / 1e9
            row["pct_of_h100_floor"] = 100.0 * row["floor_h100_ms"] / summ["time_ms"]
            row.update(_memory(device, runnable[cand], mode, fns[cand], inputs))
    del inputs
    if not quick:
        gc.collect()
    return rows


def run(device: str = "cpu", dtype: torch.dtype = torch.float32, quick: bool = False,
        cases: list[Case] | None = None, budget_s: float = 6.0, partial: Path | None = None) -> list[dict]:
    """The kernels suite: rows for every case of :func:`benchmarks.shapes.cases_for` (or ``cases``).
    ``partial``: a JSON-lines file that gets each case's rows as soon as they exist (a run cut short keeps them)."""
    load_backends(device)
    rows: list[dict] = []
    for case in cases if cases is not None else cases_for(device, quick):
        t0 = time.perf_counter()
        new = run_case(case, device, dtype, quick, budget_s)
        rows.extend(new)
        if partial is not None:
            with partial.open("a") as f:
                f.writelines(json.dumps(r, default=str) + "\n" for r in new)
        log.info("kernels: %s %s %s done in %.1fs", case.name, case.preset, case.shape(), time.perf_counter() - t0)
    return rows
