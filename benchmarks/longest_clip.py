"""The longest clip that trains under a memory cap: ``python -m benchmarks longest-clip [--cap-gib 8]``.

For VideoDiT (at each ``--recompute`` mode) and diffusers' ``LatteTransformer3DModel`` at the same S/2 shape
(width 384, 6 heads, patch 2, 32x32 latents, 120 text tokens, batch 1, ``--layers`` Latte layers = twice as many
VideoDiT blocks), find the most frames whose forward + backward keeps the process's peak resident memory (RSS:
weights, gradients, activations, allocator, the Python runtime -- what the machine has to hold) under the cap.

Each probe runs in a fresh process (peak RSS is per process), which a watchdog ends as soon as its RSS passes
the cap (so a probe never takes the machine down). Frames are searched in steps of ``--step``: doubling from 16
until a probe does not fit, then bisection. Output: one JSON line per probe and a summary table.

On CPU the cap is the RSS; on a GPU the same question is ``torch.cuda.max_memory_allocated`` (not run here).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

_PROBE = r"""
import json, os, resource, sys, threading, time
import torch
sys.path.insert(0, {root!r})
torch.set_num_threads({threads})
from benchmarks import e2e, memory
cap = {cap}
def watchdog():
    while True:
        rss = memory._rss_bytes()
        if rss > cap:
            print(json.dumps({{"fits": False, "rss_at_kill": rss}}), flush=True)
            os._exit(3)
        time.sleep(0.002)
threading.Thread(target=watchdog, daemon=True).start()
s = e2e.E2EShape("S/2", 384, 6, {layers}, {frames}, 32, 4096, 120)
torch.manual_seed(0)
if {model!r} == "latte":
    m = e2e.build_latte(s, False)
else:
    m = e2e.build_videodit(s, "auto", False, recompute={recompute!r})
m.train()
b = e2e.make_batch(s, "cpu", torch.float32)
fwd = e2e._forward("latte" if {model!r} == "latte" else "ours", m, b)
t0 = time.perf_counter()
fwd().backward()
dt = time.perf_counter() - t0
print(json.dumps({{"fits": True, "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                  "step_s": dt}}), flush=True)
"""


def probe(model: str, recompute: str, frames: int, cap: int, layers: int, threads: int) -> dict:
    root = str(Path(__file__).resolve().parent.parent)
    code = _PROBE.format(root=root, threads=threads, cap=cap, layers=layers, frames=frames, model=model,
                         recompute=recompute)
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=3600,
                       env=dict(os.environ, PYTHONWARNINGS="ignore"))
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        raise RuntimeError(f"probe {model} {recompute} T={frames} failed (exit {p.returncode}): {p.stderr[-2000:]}")
    out = json.loads(lines[-1])
    return dict(out, model=model, recompute=recompute, frames=frames, wall_s=round(time.perf_counter() - t0, 1))


def longest(model: str, recompute: str, cap: int, layers: int, threads: int, step: int, log) -> tuple[int, list]:
    """The most frames (a multiple of ``step``) that fit, and every probe made."""
    probes = []

    def fits(frames: int) -> bool:
        r = probe(model, recompute, frames, cap, layers, threads)
        probes.append(r)
        log(r)
        return r["fits"]

    lo, hi = 0, 16
    while fits(hi):
        lo, hi = hi, hi * 2
    while hi - lo > step:
        mid = (lo + hi) // 2 // step * step
        if mid in (lo, hi):
            break
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return lo, probes


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks longest-clip", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cap-gib", type=float, default=8.0, help="peak RSS cap per probe (default 8 GiB)")
    p.add_argument("--layers", type=int, default=12, help="Latte layers N (VideoDiT depth 2N; default 12, S/2)")
    p.add_argument("--recompute", default="none,norms", help="VideoDiT modes to search (default none,norms)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--step", type=int, default=4, help="frame granularity (default 4)")
    p.add_argument("--out", type=Path, default=None, help="write probes.jsonl and longest_clip.md here")
    args = p.parse_args(argv)
    cap = int(args.cap_gib * 2**30)
    sink = None
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        sink = (args.out / "longest_clip_probes.jsonl").open("w")

    def log(r: dict) -> None:
        print(json.dumps(r), flush=True)
        if sink is not None:
            sink.write(json.dumps(r) + "\n")
            sink.flush()

    runs = [("latte", "none")] + [("videodit", m) for m in args.recompute.split(",")]
    found = {}
    for model, rc in runs:
        found[(model, rc)], _ = longest(model, rc, cap, args.layers, args.threads, args.step, log)
    base = found[("latte", "none")]
    lines = [f"Longest S/2 clip (32x32 latents, patch 2, {args.layers} Latte layers, batch 1, fp32) whose fwd+bwd "
             f"keeps peak RSS <= {args.cap_gib:g} GiB (frames searched in steps of {args.step}):", "",
             "| model | recompute | frames | vs Latte |", "|---|---|---:|---:|"]
    for (model, rc), n in found.items():
        lines.append(f"| {model} | {rc} | {n} | {n / base:.2f}x |" if base else f"| {model} | {rc} | {n} | – |")
    text = "\n".join(lines)
    print(text)
    if args.out is not None:
        (args.out / "longest_clip.md").write_text(text + "\n")
    return 0
