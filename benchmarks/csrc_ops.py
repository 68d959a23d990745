"""The compiled ``cpu`` backend (dit_video._C) against its peers, fwd+bwd, ratios in one process.

    python -m benchmarks.csrc_ops [--reps 15] [--quick] [--json out.json]

Cases (the ones issue 6 asks for):

* temporal attention at B1 T16 S1024 H6 D64: ours reads q/k/v in place from the temporal view of
  the fused QKV projection ``[B, T, S, 3, H, D]`` and writes o in token layout; the peer path is
  what a model without strided kernels does: permute copies to ``[B*S, H, T, D]`` +
  ``F.scaled_dot_product_attention`` + permute back to token layout (+ their backward). Measured
  twice: gradients of the q/k/v views (the op), and gradients into ``qkv`` (+ the unbind-backward
  stack both pay in a model).
* gated_residual_adaln at 4096 tokens x 384 and x 1152 against eager PyTorch (the reference op).

fp32 and bf16. Each round runs every candidate once, alternating (a noisy neighbour slows both);
the ratio is the median over rounds of ours / peer. FLOPs and the minimum bytes are printed so a
reader can place the absolute times against the machine's roofline.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from dit_video.kernels import csrc_ops
from dit_video.kernels.reference import gated_residual_adaln_ref


def _time(fn: Callable[[], None]) -> float:
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1e3


def compare(ours: Callable[[], None], peer: Callable[[], None], reps: int) -> dict[str, float]:
    ours(), peer()  # warm up
    t_o, t_p, ratios = [], [], []
    for r in range(reps):
        if r % 2:
            b, a = _time(peer), _time(ours)
        else:
            a, b = _time(ours), _time(peer)
        t_o.append(a)
        t_p.append(b)
        ratios.append(a / b)
    return {"ours_ms": statistics.median(t_o), "peer_ms": statistics.median(t_p), "ratio": statistics.median(ratios)}


def attention_case(dtype: torch.dtype, reps: int, into_qkv: bool, b=1, t=16, s=1024, h=6, d=64) -> dict:
    """fwd + bwd. ``into_qkv=False``: gradients of the q/k/v views (the op's own cost); True: gradients
    reach the fused projection output ``qkv`` (adds the unbind-backward stack that both paths pay)."""
    qkv = torch.randn(b, t, s, 3, h, d, dtype=dtype, requires_grad=True)
    g = torch.randn(b, s, t, h, d, dtype=dtype).transpose(1, 2)  # grad of o in token layout [B, T, S, H, D]

    def grads(o: torch.Tensor, views: tuple[torch.Tensor, ...]) -> None:
        torch.autograd.grad(o, [qkv] if into_qkv else list(views), g)

    def ours() -> None:
        views = tuple(x.transpose(1, 2) for x in qkv.unbind(3))  # [B, S, T, H, D] views, no copy
        o = csrc_ops.attention(*views).transpose(1, 2)  # written in token layout, no copy
        grads(o, views)

    def peer() -> None:
        views = tuple(x.transpose(1, 2) for x in qkv.unbind(3))
        # the copies a model makes with rearrange("b s t h d -> (b s) h t d") (a view only when B = 1)
        q, k, v = (x.permute(0, 1, 3, 2, 4).contiguous().view(b * s, h, t, d) for x in views)
        o = F.scaled_dot_product_attention(q, k, v)
        o = o.reshape(b, s, h, t, d).permute(0, 3, 1, 2, 4).contiguous()  # back to [B, T, S, H, D]
        grads(o, views)

    flops = 4 * b * s * h * t * t * d * 3.5  # fwd + bwd (2.5x fwd)
    elt = qkv.element_size()
    n = b * t * s * h * d
    min_bytes = elt * n * (4 + 8)  # fwd: q,k,v -> o; bwd: q,k,v,o,do -> dq,dk,dv (+ lse, negligible)
    out = compare(ours, peer, reps)
    what = "grads into qkv" if into_qkv else "grads of q,k,v"
    return {"case": f"temporal_attention B{b} T{t} S{s} H{h} D{d} ({what})", "dtype": str(dtype).split(".")[-1],
            "gflop": flops / 1e9, "min_mb": min_bytes / 1e6, **out}


def adaln_case(dtype: torch.dtype, reps: int, width: int, tokens: int = 4096) -> dict:
    b, t = 2, 8
    s = tokens // (b * t)
    x = torch.randn(b, t, s, width, dtype=dtype, requires_grad=True)
    y = torch.randn(b, t, s, width, dtype=dtype, requires_grad=True)
    mods = [torch.randn(b, width, dtype=dtype, requires_grad=True) for _ in range(3)]
    g_r, g_o = torch.randn_like(x), torch.randn_like(x)

    def run(fn) -> Callable[[], None]:
        def go() -> None:
            r, out = fn(x, y, *mods)
            torch.autograd.grad([r, out], [x, y, *mods], [g_r, g_o])

        return go

    n = x.numel()
    min_bytes = x.element_size() * n * (4 + 5)  # fwd: x, y -> r, out; bwd: r, y, g_r, g_out -> dx, dy (+ tiny)
    out = compare(run(csrc_ops.gated_residual_adaln), run(gated_residual_adaln_ref), reps)
    return {"case": f"gated_residual_adaln {tokens} tokens x {width}", "dtype": str(dtype).split(".")[-1],
            "gflop": 20 * n / 1e9, "min_mb": min_bytes / 1e6, **out}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reps", type=int, default=15)
    p.add_argument("--quick", action="store_true", help="fewer reps (CI smoke)")
    p.add_argument("--json", help="write the rows here")
    args = p.parse_args(argv)
    reps = 3 if args.quick else args.reps
    print(f"dit_video._C: {csrc_ops.ORIGIN}; torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"CPU capability {torch.backends.cpu.get_cpu_capability()}")
    rows = []
    for dtype in (torch.float32, torch.bfloat16):
        rows.append(attention_case(dtype, reps, into_qkv=False))
        rows.append(attention_case(dtype, reps, into_qkv=True))
        for width in (384, 1152):
            rows.append(adaln_case(dtype, reps, width))
    print(f"{'case':<66}{'dtype':>9}{'ours ms':>10}{'peer ms':>10}{'ratio':>8}{'GFLOP':>8}{'min MB':>9}")
    for r in rows:
        print(f"{r['case']:<66}{r['dtype']:>9}{r['ours_ms']:>10.2f}{r['peer_ms']:>10.2f}{r['ratio']:>8.3f}"
              f"{r['gflop']:>8.2f}{r['min_mb']:>9.1f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
