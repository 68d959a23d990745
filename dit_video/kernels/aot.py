"""Ahead-of-time compilation of every Triton kernel x autotune config for real GPU targets.

What: for each kernel spec (declared by the kernel modules in ``aot_kernels()``) and each arch
(sm_80, sm_90a), compile with ``triton.compile(ASTSource(...), target=GPUTarget(...))`` -- no GPU
or driver needed -- and read off what the GPU would see: registers and spill bytes (from the
bundled ``ptxas-blackwell -v`` run on the PTX, since ``n_regs`` needs a driver), shared memory
(``metadata.shared``), and the tensor-core instructions in the PTX (``wgmma.mma_async`` vs
``mma.sync``). Each row also carries the FLOPs and the fewest bytes the kernel must move at a
reference shape, and the H100 roofline floor they imply, so that a GPU timing reads against it.

Why: no GPU is lent to this project, so this is how the kernels are held to account: a config
that spills, overflows shared memory or (for attention on sm_90a) falls back from wgmma fails
:func:`gate`, and ``dit-video kernels-report`` exits non-zero in CI.

Must run with ``TRITON_INTERPRET`` unset: under the interpreter ``@triton.jit`` yields interpreted
functions that cannot be compiled. ``python -m dit_video.kernels.aot`` is the entry point the CLI
runs in a child process with a clean environment.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field

from .aot_spec import AotKernel, make_spec  # noqa: F401 - the specs the kernel modules declare

ARCHS: dict[str, tuple[int, int]] = {  # name -> (capability, shared memory limit per block, bytes)
    "sm_80": (80, 163 * 1024),
    "sm_90a": (90, 227 * 1024),
}


@dataclass
class Row:
    kernel: str
    config: str
    arch: str
    regs: int | None = None
    spill_bytes: int | None = None
    shared: int | None = None
    shared_limit: int = 0
    wgmma: int = 0
    mma_sync: int = 0
    shape: str = ""
    flops: float = 0.0
    nbytes: float = 0.0
    floor_us: float = 0.0
    bound: str = ""
    compile_s: float = 0.0
    errors: list[str] = field(default_factory=list)
    waiver: str = ""


def _ptxas() -> str:
    import triton

    base = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin")
    for exe in ("ptxas-blackwell", "ptxas"):
        p = os.path.join(base, exe)
        if os.path.exists(p):
            return p
    return "ptxas"


_RE_REGS = re.compile(r"Used (\d+) registers")
_RE_SPILL = re.compile(r"(\d+) bytes spill stores, (\d+) bytes spill loads")


def parse_ptxas(log: str) -> tuple[int | None, int | None]:
    """(registers, spill bytes = stores + loads) from a ``ptxas -v`` log."""
    regs = _RE_REGS.search(log)
    sp = _RE_SPILL.search(log)
    return (int(regs.group(1)) if regs else None,
            int(sp.group(1)) + int(sp.group(2)) if sp else None)


def compile_row(spec: AotKernel, arch: str) -> Row:
    """Compile one spec for one arch and measure it."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from .roofline import Work, floor_us

    cap, limit = ARCHS[arch]
    row = Row(spec.name, spec.config, arch, shared_limit=limit, shape=spec.shape, flops=spec.flops,
              nbytes=spec.nbytes)
    row.floor_us, row.bound = floor_us(Work(spec.flops, spec.nbytes)) if spec.nbytes else (0.0, "")
    t0 = time.perf_counter()
    try:
        src = ASTSource(fn=spec.fn, signature=spec.signature, constexprs=spec.constexprs, attrs=spec.attrs)
        k = triton.compile(src, target=GPUTarget("cuda", cap, 32),
                           options={"num_warps": spec.num_warps, "num_stages": spec.num_stages})
    except Exception as e:  # noqa: BLE001 - a config that does not compile is a failed row
        row.errors.append(f"compile failed: {type(e).__name__}: {str(e).splitlines()[0][:200]}")
        row.compile_s = time.perf_counter() - t0
        return row
    ptx = k.asm["ptx"]
    row.shared = int(k.metadata.shared)
    row.wgmma = len(re.findall(r"wgmma\.mma_async", ptx))
    row.mma_sync = len(re.findall(r"\bmma\.sync", ptx))
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "k.ptx")
        with open(path, "w") as f:
            f.write(ptx)
        r = subprocess.run([_ptxas(), "-v", f"--gpu-name={arch}", path, "-o", os.path.join(d, "k.cubin")],
                           capture_output=True, text=True)
    row.regs, row.spill_bytes = parse_ptxas(r.stdout + r.stderr)
    if r.returncode != 0 or row.regs is None:
        row.errors.append(f"ptxas failed: {(r.stderr or r.stdout).strip()[:200]}")
    row.compile_s = time.perf_counter() - t0
    row.errors += gate(row, spec.needs_wgmma and not spec.waiver)
    row.waiver = spec.waiver
    return row


def gate(row: Row, needs_wgmma: bool) -> list[str]:
    """Why a compiled row fails CI: spills, shared memory over the arch limit, no wgmma on sm_90a."""
    bad = []
    if row.spill_bytes:
        bad.append(f"{row.spill_bytes} bytes of spills")
    if row.shared is not None and row.shared > row.shared_limit:
        bad.append(f"shared memory {row.shared} B > {row.shared_limit} B")
    if needs_wgmma and row.arch == "sm_90a" and (row.wgmma == 0 or row.mma_sync > 0):
        bad.append(f"matmuls not all on wgmma (wgmma {row.wgmma}, mma.sync {row.mma_sync})")
    return bad


def all_specs(arch: str) -> list[AotKernel]:
    """Every kernel x config the Triton kernel modules declare for ``arch``."""
    from . import triton_adaln, triton_attention, triton_rope3d, triton_temporal_attention

    specs: list[AotKernel] = []
    for mod in (triton_attention, triton_temporal_attention, triton_adaln, triton_rope3d):
        specs += mod.aot_kernels(arch)
    return specs


def _compile_nth(arch: str, i: int) -> Row:
    """Worker: compile the i-th spec of ``arch`` (specs are rebuilt here: jit functions don't pickle)."""
    return compile_row(all_specs(arch)[i], arch)


def run(archs: Iterable[str], only: str | None = None, log: Callable[[str], None] | None = None,
        jobs: int = 1) -> list[Row]:
    """Compile every selected (spec, arch); ``jobs`` > 1 compiles in that many worker processes."""
    todo = [(arch, i, spec) for arch in archs for i, spec in enumerate(all_specs(arch))
            if not only or only in spec.name]
    if jobs <= 1 or len(todo) <= 1:
        rows = []
        for arch, _, spec in todo:
            rows.append(compile_row(spec, arch))
            if log:
                log(format_row(rows[-1]))
        return rows
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=jobs) as pool:
        futures = [pool.submit(_compile_nth, arch, i) for arch, i, _ in todo]
        rows = []
        for f in futures:  # in order, so the table reads the same as a serial run
            rows.append(f.result())
            if log:
                log(format_row(rows[-1]))
    return rows


# ---------------------------------------------------------------------------- output
HEADER = (f"{'kernel':<22} {'config':<30} {'arch':<7} {'regs':>4} {'spill':>5} {'smem KB':>7} "
          f"{'wgmma':>5} {'mma':>4}  {'ref shape':<28} {'GFLOP':>7} {'MB':>7} {'floor us':>8} {'bound':<7} status")


def format_row(r: Row) -> str:
    smem = f"{r.shared / 1024:.1f}" if r.shared is not None else "-"
    status = "ok" if not r.errors else "FAIL: " + "; ".join(r.errors)
    if r.waiver:
        status += f" (WAIVER: {r.waiver})"
    return (f"{r.kernel:<22} {r.config:<30} {r.arch:<7} {r.regs if r.regs is not None else '-':>4} "
            f"{r.spill_bytes if r.spill_bytes is not None else '-':>5} {smem:>7} {r.wgmma:>5} {r.mma_sync:>4}  "
            f"{r.shape:<28} {r.flops / 1e9:>7.2f} {r.nbytes / 1e6:>7.1f} {r.floor_us:>8.1f} {r.bound:<7} {status}")


def temporal_traffic(b: int = 1, t: int = 16, s: int = 1024, h: int = 6, d: int = 64, elt: int = 2) -> dict:
    """Bytes moved by temporal attention on the view of a fused ``[B, T, S, 3, H, D]`` projection.

    The packed kernel reads q, k, v through their strides and writes o in token layout: 4 tensor
    passes (+ the fp32 log-sum-exp). A permute+SDPA path must first materialize q, k, v as
    ``[B*S, H, T, D]`` (read + write each: 6 passes), run SDPA (read 3, write 1), then transpose o
    back to token layout for the output projection (read + write: 2 passes): 12 passes. The
    backward: ours reads q, k, v, o, dO (+lse) and writes dq, dk, dv (8 passes); permute+SDPA also
    permutes dO in (2), and dq, dk, dv back out (6): 16, plus the forward's saved permuted copies.
    """
    tensor = b * t * s * h * d * elt
    lse = b * s * h * t * 4
    return {
        "shape": f"B{b} T{t} S{s} H{h} D{d} bf16",
        "tensor_bytes": tensor,
        "kernel_fwd_bytes": 4 * tensor + lse,
        "permute_sdpa_fwd_bytes": 12 * tensor + lse,
        "kernel_bwd_bytes": 8 * tensor + lse,
        "permute_sdpa_bwd_bytes": 16 * tensor + lse,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m dit_video.kernels.aot", description=__doc__.splitlines()[0])
    p.add_argument("--arch", nargs="+", default=list(ARCHS), choices=list(ARCHS))
    p.add_argument("--json", default=None, help="also write the rows as JSON to this file")
    p.add_argument("--only", default=None, help="only kernels whose name contains this")
    p.add_argument("--jobs", type=int, default=min(8, os.cpu_count() or 1),
                   help="compile in this many processes (default: CPU count, at most 8)")
    args = p.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET") == "1":
        print("kernels-report: unset TRITON_INTERPRET (interpreted kernels cannot be compiled)", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    print(HEADER, flush=True)
    rows = run(args.arch, args.only, log=lambda line: print(line, flush=True), jobs=args.jobs)
    tt = temporal_traffic()
    print(f"\ntemporal view {tt['shape']}: packed kernel moves {tt['kernel_fwd_bytes'] / 1e6:.1f} MB forward "
          f"({tt['kernel_bwd_bytes'] / 1e6:.1f} MB backward); permute+SDPA moves "
          f"{tt['permute_sdpa_fwd_bytes'] / 1e6:.1f} MB forward ({tt['permute_sdpa_bwd_bytes'] / 1e6:.1f} MB backward)")
    failed = [r for r in rows if r.errors]
    waived = [r for r in rows if r.waiver]
    total = time.perf_counter() - t0
    print(f"{len(rows)} compiles ({len(rows) - len(failed)} ok, {len(failed)} failed, {len(waived)} with a "
          f"wgmma waiver) in {total:.0f}s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rows": [asdict(r) for r in rows], "temporal_traffic": tt, "seconds": total}, f, indent=1)
    return 1 if failed or not rows else 0


if __name__ == "__main__":
    sys.exit(main())
