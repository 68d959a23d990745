"""``dit-video kernels-report [--arch sm_80 sm_90a] [--json F] [--only NAME]``.

Compiles every Triton kernel x every autotune config ahead of time for each GPU arch (no GPU
needed) and prints one row each: kernel, config, arch, registers, spill bytes, shared memory,
wgmma / mma.sync instruction counts, and the FLOPs, bytes and H100 roofline floor at a reference
shape; then the bytes the packed temporal kernel moves vs a permute+SDPA path. Exits non-zero if
any config spills, exceeds the arch's shared memory, fails to compile, or (attention on sm_90a)
does not run its matmuls on wgmma. CI runs it.

The work happens in ``dit_video.kernels.aot``, run in a child process with ``TRITON_INTERPRET``
removed from its environment: the interpreter (set by the test suite) replaces ``@triton.jit``
functions with interpreted ones that cannot be compiled.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

ARCHS = ("sm_80", "sm_90a")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--arch", nargs="+", default=list(ARCHS), choices=list(ARCHS),
                   help="GPU targets to compile for (default: sm_80 sm_90a)")
    p.add_argument("--json", default=None, metavar="F", help="also write every row as JSON to F")
    p.add_argument("--only", default=None, metavar="NAME", help="only kernels whose name contains NAME")
    p.add_argument("--jobs", type=int, default=None, help="parallel compile processes (default: CPU count, max 8)")


def run(args: argparse.Namespace) -> int:
    cmd = [sys.executable, "-m", "dit_video.kernels.aot", "--arch", *args.arch]
    if args.json:
        cmd += ["--json", args.json]
    if args.only:
        cmd += ["--only", args.only]
    if getattr(args, "jobs", None):
        cmd += ["--jobs", str(args.jobs)]
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    return subprocess.call(cmd, env=env)
