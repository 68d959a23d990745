"""Parallel training figures: ``python -m benchmarks.parallel {bytes,memory,overhead,plan,all} [--out DIR]``.

- ``bytes``: all-to-all bytes per rank per layer and per step, DSP (two all-to-alls of the activations per
  temporal block, none per spatial one) vs Ulysses (q, k, v and o of every attention), at S/2 and XL/2
  widths, 16x32x32 and 32x64x64 latents, SP 2/4/8 -- arithmetic; plus the bytes counted on gloo in
  ``all_to_all_single`` for one SP=2 forward + backward, against the arithmetic for that case.
- ``memory``: per-rank bytes of parameters / gradients / optimizer states at ZeRO 0-3 on 1 and 2 ranks
  for S/2, read from the DeepSpeed engine (dit_video.train.memory.zero_bytes).
- ``overhead``: step time of SP=2 on 2 ranks vs SP=1 on 1 rank for the same clip (on 2 shared CPU cores
  there is no speed-up to expect: the figure is the cost of the switches).
- ``plan``: memory per rank of S/2 and XL/2 at 16x32x32 and 64x64x64 latents for ZeRO stages and SP
  degrees (model states from the 16-bytes-per-parameter arithmetic of bf16 + fp32 Adam, activations
  from the bytes saved for backward per token per block, measured here with saved-tensor hooks).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODELS = {"S/2": dict(hidden_size=384, depth=12, num_heads=6), "XL/2": dict(hidden_size=1152, depth=28, num_heads=16)}
LATENTS = {"16x32x32": (16, 32, 32), "32x64x64": (32, 64, 64), "64x64x64": (64, 64, 64)}


# ------------------------------------------------------------------------------------------- arithmetic
def a2a_bytes(b: int, t: int, s: int, d: int, n: int, elt: int = 2) -> float:
    """Bytes one rank sends in one all-to-all of a [B, T', S, D] activation split over n ranks."""
    return b * t * s * d / n * (n - 1) / n * elt


def bytes_rows(batch: int = 1, elt: int = 2) -> list[dict]:
    rows = []
    for name, m in MODELS.items():
        for lat, (t, h, w) in LATENTS.items():
            if lat == "64x64x64":
                continue
            s = (h // 2) * (w // 2)
            for n in (2, 4, 8):
                one = a2a_bytes(batch, t, s, m["hidden_size"], n, elt)
                temporal = m["depth"] // 2
                dsp_layer, uly_layer = 2 * one, 4 * one  # forward; backward doubles both
                dsp_step = 2 * temporal * dsp_layer
                uly_step = 2 * m["depth"] * uly_layer
                rows.append({"model": name, "latents": lat, "sp": n, "tokens": t * s,
                             "dsp_MB_per_temporal_block": dsp_layer / 2**20, "ulysses_MB_per_block": uly_layer / 2**20,
                             "dsp_MB_per_step": dsp_step / 2**20, "ulysses_MB_per_step": uly_step / 2**20,
                             "dsp_over_ulysses": dsp_step / uly_step})
    return rows


# ------------------------------------------------------------------------------------------- workers
def _torchrun(nproc: int, args: list[str], timeout: int = 1200) -> subprocess.CompletedProcess:
    sys.path.insert(0, str(ROOT))
    from dit_video.train.distributed import free_port

    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--master_port",
           str(free_port()), "-m", "benchmarks.parallel", *args]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    if r.returncode != 0:
        raise RuntimeError(f"worker {args[:2]} failed: {r.stderr[-2000:]}")
    return r


def _tiny_cfg(**over):
    from dit_video import VideoDiTConfig

    base = dict(depth=4, hidden_size=64, num_heads=4, sample_size=[16, 16], num_frames=8, patch_size=[1, 2, 2],
                in_channels=4)
    return VideoDiTConfig.from_preset("tiny", **{**base, **over})


def worker_count(out: str) -> None:
    """Under torchrun: one SP forward + backward with every all_to_all_single's bytes counted."""
    import torch
    import torch.distributed as dist

    from dit_video import VideoDiT
    from dit_video.parallel import build_layout

    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    world, rank = dist.get_world_size(), dist.get_rank()
    layout = build_layout(world, rank, world)
    sent = []
    orig = dist.all_to_all_single

    def counting(output, input, *a, **k):
        sent.append(input.numel() * input.element_size() * (world - 1) // world)
        return orig(output, input, *a, **k)

    dist.all_to_all_single = counting
    cfg = _tiny_cfg()
    torch.manual_seed(0)
    model = VideoDiT(cfg).set_sequence_parallel(layout.sp)
    x = torch.randn(1, 4, 8, 16, 16)
    model(x, torch.rand(1) * 1000).square().mean().backward()
    if rank == 0:
        t, s, d = 8, 64, cfg.hidden_size
        want = 2 * (cfg.depth // 2) * 2 * a2a_bytes(1, t, s, d, world, elt=4)  # fp32 here
        json.dump({"counted_bytes": sum(sent), "calls": len(sent), "arithmetic_bytes": want},
                  open(out, "w"))


def worker_memory(out: str, stage: str) -> None:
    """Under torchrun: S/2 (class-conditional, 16x32x32 latents, batch 1) on the DeepSpeed engine, one step;
    the per-rank ZeRO bytes between backward and step."""
    import deepspeed
    import torch

    from dit_video import VideoDiT, VideoDiTConfig
    from dit_video.train.distributed import init_distributed
    from dit_video.train.memory import zero_bytes

    torch.set_num_threads(1)
    rank, world = init_distributed()
    cfg = VideoDiTConfig.from_preset("S/2", num_frames=4)  # fewer frames: the bytes of model states don't depend
    model = VideoDiT(cfg)
    num_params = model.num_parameters()  # before ZeRO-3 turns the parameters into shells
    ds = {"train_micro_batch_size_per_gpu": 1, "zero_optimization": {"stage": int(stage)},
          "zero_allow_untested_optimizer": True, "steps_per_print": 10**9, "gradient_clipping": 1.0}
    engine, *_ = deepspeed.initialize(model=model, optimizer=torch.optim.AdamW(model.parameters(), lr=1e-4),
                                      config=ds)
    x = torch.randn(1, 4, 4, 32, 32)
    out_ = engine(x, torch.rand(1) * 1000, labels=torch.tensor([3]))
    engine.backward(out_.square().mean())
    live = zero_bytes(engine)
    engine.step()
    after = zero_bytes(engine)
    if rank == 0:
        json.dump({**after, "grads": live["grads"], "num_params": num_params},
                  open(out, "w"))


def worker_overhead(out: str, reps: str, threads: str = "1") -> None:
    """Under torchrun (or alone): median fwd+bwd time of one clip with SP over all ranks."""
    import torch
    import torch.distributed as dist

    from dit_video import VideoDiT
    from dit_video.parallel import build_layout

    torch.set_num_threads(int(threads))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        dist.init_process_group("gloo")
    layout = build_layout(world, int(os.environ.get("RANK", "0")), world) if world > 1 else None
    cfg = _tiny_cfg(depth=8, hidden_size=128, num_frames=16, sample_size=[32, 32])
    torch.manual_seed(0)
    model = VideoDiT(cfg).set_sequence_parallel(layout.sp if layout else None)
    x = torch.randn(1, 4, 16, 32, 32)
    times = []
    for _ in range(int(reps)):
        if world > 1:
            dist.barrier()
        t0 = time.perf_counter()
        model(x, torch.rand(1) * 1000).square().mean().backward()
        if world > 1:
            dist.barrier()
        times.append(time.perf_counter() - t0)
    if int(os.environ.get("RANK", "0")) == 0:
        json.dump({"median_s": statistics.median(times), "times": times, "world": world}, open(out, "w"))


# ------------------------------------------------------------------------------------------- suites
def run_bytes(out: Path) -> dict:
    rows = bytes_rows()
    _torchrun(2, ["worker", "count", str(out / "count.json")])
    counted = json.loads((out / "count.json").read_text())
    return {"rows": rows, "gloo_check": counted}


def run_memory(out: Path) -> dict:
    rows = []
    for stage in (0, 1, 2, 3):
        for n in (1, 2):
            f = out / f"mem_{stage}_{n}.json"
            _torchrun(n, ["worker", "memory", str(f), str(stage)])
            rows.append({"stage": stage, "ranks": n, **json.loads(f.read_text())})
    return {"rows": rows}


def run_overhead(out: Path, reps: int = 5) -> dict:
    """SP=2 (2 ranks x 1 thread) vs one process with 1 and with 2 threads, interleaved rounds, medians."""
    res: dict[str, list[float]] = {"sp1_1thread": [], "sp1_2threads": [], "sp2": []}
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for k in ("RANK", "WORLD_SIZE"):
        env.pop(k, None)
    for _ in range(3):
        for key in res:
            f = out / f"overhead_{key}.json"
            if key == "sp2":
                _torchrun(2, ["worker", "overhead", str(f), str(reps)])
            else:
                th = "1" if key == "sp1_1thread" else "2"
                subprocess.run([sys.executable, "-m", "benchmarks.parallel", "worker", "overhead", str(f), str(reps),
                                th], env={**env, "OMP_NUM_THREADS": th}, check=True, cwd=ROOT, capture_output=True)
            res[key].append(json.loads(f.read_text())["median_s"])
    med = {k: statistics.median(v) for k, v in res.items()}
    return {**{f"{k}_s": v for k, v in med.items()}, "sp2_over_sp1_1thread": med["sp2"] / med["sp1_1thread"],
            "sp2_over_sp1_2threads": med["sp2"] / med["sp1_2threads"], "load_avg": os.getloadavg()[0],
            "clip": "tiny VideoDiT depth 8 width 128, latents 4x16x32x32 (T'=16, S=256), fp32"}


def activation_bytes_per_token_block(width: int, dtype: str = "bf16") -> float:
    """Bytes saved for backward per token per block, measured with saved-tensor hooks (autocast for bf16)."""
    import torch

    from dit_video import VideoDiT

    cfg = _tiny_cfg(hidden_size=width, num_heads=width // 64, depth=2, num_frames=4, sample_size=[16, 16])
    model = VideoDiT(cfg)
    x = torch.randn(1, 4, 4, 16, 16)
    seen: dict[int, int] = {}

    def pack(t):
        seen[id(t)] = t.numel() * t.element_size()  # one storage counted once per tensor object
        return t

    ctx = torch.autocast("cpu", dtype=torch.bfloat16) if dtype == "bf16" else torch.autocast("cpu", enabled=False)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), ctx:
        model(x, torch.rand(1) * 1000).float().square().mean()
    tokens = 4 * 64
    return sum(seen.values()) / tokens / cfg.depth


def model_state_bytes(p: int, stage: int, n: int) -> float:
    """bf16 weights + bf16 grads + fp32 master + two fp32 Adam moments = 16 bytes/param, as ZeRO divides them."""
    return {0: 16 * p, 1: 4 * p + 12 * p / n, 2: 2 * p + 14 * p / n, 3: 16 * p / n}[stage]


def run_plan(out: Path) -> dict:
    import torch

    from dit_video import VideoDiT, VideoDiTConfig

    act = {w: activation_bytes_per_token_block(w) for w in (384, 1152)}
    rows = []
    for name, m in MODELS.items():
        with torch.device("meta"):
            p = VideoDiT(VideoDiTConfig.from_preset(name)).num_parameters()
        for lat, (t, h, w) in LATENTS.items():
            if lat == "32x64x64":
                continue
            tokens = t * (h // 2) * (w // 2)
            a = act[m["hidden_size"]] * tokens * m["depth"]  # one clip, no recompute
            for stage in (0, 1, 2, 3):
                for n in (1, 2, 4, 8):
                    st = model_state_bytes(p, stage, n)
                    rows.append({"model": name, "params_M": p / 1e6, "latents": lat, "tokens": tokens, "zero": stage,
                                 "ranks_sp": n, "model_states_GB": st / 2**30, "activations_GB": a / n / 2**30,
                                 "total_GB": (st + a / n) / 2**30})
    return {"bytes_per_token_block_bf16": act, "rows": rows}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["worker"]:
        {"count": worker_count, "memory": worker_memory, "overhead": worker_overhead}[argv[1]](*argv[2:])
        return 0
    ap = argparse.ArgumentParser(prog="python -m benchmarks.parallel", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("suite", choices=("bytes", "memory", "overhead", "plan", "all"))
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    suites = ("bytes", "memory", "overhead", "plan") if args.suite == "all" else (args.suite,)
    result = {}
    for s in suites:
        t0 = time.perf_counter()
        result[s] = {"bytes": run_bytes, "memory": run_memory, "overhead": run_overhead, "plan": run_plan}[s](args.out)
        print(f"{s}: {time.perf_counter() - t0:.0f}s")
    path = args.out / "parallel.json"
    prev = json.loads(path.read_text()) if path.is_file() else {}
    path.write_text(json.dumps({**prev, **result}, indent=1))
    print(json.dumps(result, indent=1)[:6000])
    return 0


if __name__ == "__main__":
    sys.exit(main())
