"""``python -m benchmarks gpu-check --out DIR [--dry-run]``: everything that needs a GPU, in one call.

For a session that is lent one GPU (an H100 / H200) for a few minutes: the steps below run in order,
each in its own child process under its own time limit (a hang or a crash costs that step only), and
``DIR/gpu_check.json`` + ``DIR/gpu_check.md`` are rewritten after every step, so a run cut short still
leaves every finished step's figures. The whole check fits in :data:`TOTAL_BUDGET_S` (8 minutes).

1. ``env``: ``nvidia-smi``, torch / CUDA / Triton / flash-attn versions, the device's name and capability.
2. ``device-tests``: the test suite's CUDA-device tests (``tests/kernels``, ``tests/csrc``: every CUDA,
   Triton and flash-attn implementation on the device against the torch reference with the 2x rule of
   ``dit_video/kernels/numerics.py``, fp32 and bf16, gradients included; model-sized cases on CUDA).
3. ``kernels-bf16`` / ``kernels-fp16``: the kernel benchmarks at S/2 ... XL/2 shapes against SDPA (and
   flash-attn when installed): time, TFLOP/s, fraction of the roofline floor.
4. ``e2e-bf16``: the fwd+bwd step of VideoDiT vs diffusers' Latte, tokens/s, peak memory, x the floor.

``--dry-run`` (CI runs it on a CPU machine): prints each step with its budget and command and fails if
a module a step needs cannot be imported or a step's command line does not parse. What to send back:
``DIR/gpu_check.md`` (and the JSON files next to it).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TOTAL_BUDGET_S = 480


@dataclass(frozen=True)
class Step:
    name: str
    budget_s: int
    argv: tuple[str, ...]  # {out} is replaced by the step's output folder
    needs: tuple[str, ...]  # modules that must import
    what: str


def steps() -> list[Step]:
    py = sys.executable
    bench = (py, "-m", "benchmarks")
    return [
        Step("env", 20, (py, "-c", "import benchmarks.gpu_check as g; g.print_env()"), ("torch",),
             "nvidia-smi, versions, device"),
        Step("device-tests", 170, (py, "-m", "pytest", "-q", "-rs", "-x", "-p", "no:cacheprovider",
                                   "tests/kernels", "tests/csrc", "-k", "cuda or triton or flash"),
             ("pytest", "torch", "triton", "dit_video.kernels.triton_attention"),
             "CUDA / Triton / flash-attn kernels on the device vs the torch reference (fp32, bf16, grads)"),
        Step("kernels-bf16", 110, (*bench, "kernels", "--device", "cuda", "--dtype", "bfloat16", "--presets",
                                   "S/2,XL/2", "--case-budget", "1.0", "--out", "{out}"),
             ("benchmarks.kernels", "dit_video.kernels.triton_attention"),
             "kernel benchmarks S/2..XL/2 vs SDPA / flash-attn, bf16"),
        Step("kernels-fp16", 60, (*bench, "kernels", "--device", "cuda", "--dtype", "float16", "--only",
                                  "attention", "--presets", "XL/2", "--case-budget", "1.0", "--out", "{out}"),
             ("benchmarks.kernels",),
             "attention benchmarks, fp16"),
        Step("e2e-bf16", 110, (*bench, "e2e", "--device", "cuda", "--dtype", "bfloat16", "--out", "{out}"),
             ("benchmarks.e2e", "diffusers"), "e2e fwd+bwd step vs Latte: tokens/s, peak memory, x the floor"),
    ]


def print_env() -> None:
    import torch

    info = {"torch": torch.__version__, "cuda": torch.version.cuda, "cuda_available": torch.cuda.is_available()}
    for mod in ("triton", "flash_attn", "diffusers", "deepspeed"):
        try:
            info[mod] = getattr(importlib.import_module(mod), "__version__", "?")
        except Exception as e:  # noqa: BLE001 - a missing optional module is a fact to report
            info[mod] = f"unavailable ({type(e).__name__})"
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        info |= {"device": p.name, "capability": f"{p.major}.{p.minor}", "memory_gib": round(p.total_memory / 2**30, 1),
                 "sms": p.multi_processor_count}
    print(json.dumps(info, indent=1))
    try:
        print(subprocess.run(["nvidia-smi"], capture_output=True, text=True, timeout=10).stdout)
    except (OSError, subprocess.TimeoutExpired) as e:
        print(f"nvidia-smi: {e}")


def _markdown(rows: list[dict]) -> str:
    out = ["# gpu-check", "", "| step | status | seconds (budget) | what |", "|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r['step']} | {r['status']} | {r['seconds']:.0f} ({r['budget_s']}) | {r['what']} |")
    for r in rows:
        out += ["", f"## {r['step']} ({r['status']})", "", "```", r["tail"].rstrip(), "```"]
        mds = sorted(Path(r["out"]).glob("*.md"))
        for md in mds:
            out += ["", f"### {md.name}", "", md.read_text()]
        partial = Path(r["out"]) / "kernels_partial.jsonl"
        if not mds and partial.is_file():  # cut short: the rows measured so far
            out += ["", "### rows measured before the time limit (kernels_partial.jsonl)", "", "```",
                    *partial.read_text().splitlines()[:80], "```"]
    return "\n".join(out) + "\n"


def dry_run() -> int:
    bad = 0
    total = 0
    for s in steps():
        total += s.budget_s
        missing = []
        for mod in s.needs:
            try:
                importlib.import_module(mod)
            except Exception as e:  # noqa: BLE001 - report every failure, then fail
                missing.append(f"{mod} ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})")
        if s.argv[1:3] == ("-m", "benchmarks"):
            from .cli import add_arguments

            p = argparse.ArgumentParser(exit_on_error=False)
            add_arguments(p)
            try:
                p.parse_args([a.replace("{out}", "x") for a in s.argv[3:]])
            except (argparse.ArgumentError, SystemExit) as e:
                missing.append(f"command line does not parse: {e}")
        status = "ok" if not missing else "FAIL: " + "; ".join(missing)
        bad += bool(missing)
        print(f"{s.name:14s} budget {s.budget_s:4d} s  {status}\n    {s.what}\n    $ {shlex.join(s.argv)}")
    print(f"total budget {total} s (limit {TOTAL_BUDGET_S} s); {bad} step(s) failing")
    return 1 if bad or total > TOTAL_BUDGET_S else 0


def run(out: Path) -> int:
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    for s in steps():
        d = out / s.name
        d.mkdir(exist_ok=True)
        argv = [a.replace("{out}", str(d)) for a in s.argv]
        t0 = time.perf_counter()
        print(f"[gpu-check] {s.name} (budget {s.budget_s} s): {s.what}", flush=True)
        try:
            p = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=s.budget_s)
            status, text = ("ok" if p.returncode == 0 else f"rc {p.returncode}"), p.stdout + p.stderr
        except subprocess.TimeoutExpired as e:
            text = ((e.stdout or b"").decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or ""))
            status = "timeout (partial)"
        (d / "log.txt").write_text(text)
        rows.append({"step": s.name, "status": status, "seconds": time.perf_counter() - t0, "budget_s": s.budget_s,
                     "what": s.what, "out": str(d), "tail": text[-3000:]})
        (out / "gpu_check.json").write_text(json.dumps(rows, indent=1))
        (out / "gpu_check.md").write_text(_markdown(rows))
        print(f"[gpu-check] {s.name}: {status} in {rows[-1]['seconds']:.0f} s", flush=True)
    print(f"[gpu-check] results: {out / 'gpu_check.md'}")
    return 0 if all(r["status"] == "ok" for r in rows) else 1


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks gpu-check", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out" / "gpu_check")
    p.add_argument("--dry-run", action="store_true", help="list the steps and check their imports (no GPU needed)")
    args = p.parse_args(argv)
    if args.dry_run:
        return dry_run()
    import torch

    if not torch.cuda.is_available():
        print("gpu-check: error: no CUDA device here (torch.cuda.is_available() is False); use --dry-run on a CPU",
              file=sys.stderr)
        return 2
    return run(args.out)
