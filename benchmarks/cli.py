"""Command line: ``python -m benchmarks {kernels,e2e,data,all} [options]`` (also ``dit-video bench``);
``python -m benchmarks quality ...`` is the model-quality lab (:mod:`benchmarks.quality`);
``python -m benchmarks gpu-check --out DIR [--dry-run]`` everything that needs a GPU (:mod:`benchmarks.gpu_check`);
``python -m benchmarks longest-clip [--cap-gib 8]`` the most frames that train under a memory cap
(:mod:`benchmarks.longest_clip`)."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

SUITES = ("kernels", "e2e", "data")
DTYPES = ("float32", "bfloat16", "float16")
DEFAULT_OUT = Path(__file__).resolve().parent / "out"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("suite", choices=(*SUITES, "all"), help="which benchmarks to run")
    p.add_argument("--device", choices=("cpu", "cuda"), default=None,
                   help="default: cuda when available, else cpu")
    p.add_argument("--dtype", choices=DTYPES, default=None, help="default: bfloat16 on cuda, float32 on cpu")
    p.add_argument("--quick", action="store_true",
                   help="tiny shapes, few repetitions, no torch.compile: seconds (CI runs this)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output directory (default {DEFAULT_OUT})")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: 1 with --quick, else torch's default). On a shared, "
                        "oversubscribed CPU one thread avoids OpenMP barrier stalls that dwarf small kernels")
    p.add_argument("--presets", default=None,
                   help="kernels: only these model presets, comma-separated (e.g. S/2,XL/2)")
    p.add_argument("--case-budget", type=float, default=6.0,
                   help="kernels: seconds of timing per case (default 6)")
    p.add_argument("--only", default=None,
                   help="kernels: run only cases whose name contains this (e.g. attention/temporal, rope3d)")


def run(args: argparse.Namespace) -> int:
    import torch

    from . import data_suite, e2e, kernels, report
    from .env import metadata
    from .shapes import cases_for

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: CUDA is not available here (torch.cuda.is_available() is False)")
    dtype = getattr(torch, args.dtype or ("bfloat16" if device == "cuda" else "float32"))
    threads = args.threads or (1 if args.quick else None)
    if threads:
        torch.set_num_threads(threads)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    meta = metadata(device, dtype, args.quick)
    meta["torch_threads"] = torch.get_num_threads()
    suites = SUITES if args.suite == "all" else (args.suite,)
    results: dict[str, list[dict]] = {}
    elapsed: dict[str, float] = {}
    cpu_s: dict[str, float] = {}
    for suite in suites:
        t0, c0 = time.perf_counter(), time.process_time()
        if suite == "kernels":
            presets = set(args.presets.split(",")) if args.presets else None
            cases = [c for c in cases_for(device, args.quick) if (not args.only or args.only in c.name)
                     and (presets is None or c.preset in presets)]
            rows = kernels.run(device, dtype, args.quick, cases=cases, budget_s=args.case_budget,
                               partial=out / "kernels_partial.jsonl")
        elif suite == "e2e":
            rows = e2e.run(device, dtype, args.quick)
        else:
            rows = data_suite.run(quick=args.quick, out_dir=out)
        elapsed[suite] = time.perf_counter() - t0
        cpu_s[suite] = time.process_time() - c0  # this process's CPU time (not the backend probe's child)
        for r in rows:
            r.setdefault("device_name", meta["device_name"])
        results[suite] = rows
        meta_s = meta | {"suite": suite, "elapsed_s": elapsed[suite], "cpu_s": cpu_s[suite]}
        print(f"{suite}: {len(rows)} rows in {elapsed[suite]:.1f}s -> {report.write_json(out, suite, meta_s, rows)}")
    md = out / ("results.md" if args.suite == "all" else f"{args.suite}.md")
    md.write_text(report.markdown(meta, results, elapsed, cpu_s))
    pngs = report.plot_kernels(out, results.get("kernels", [])) + report.plot_e2e(out, results.get("e2e", []))
    print(f"markdown: {md}")
    for p in pngs:
        print(f"plot: {p}")
    if "e2e" in results:
        print("e2e goals:", *report.e2e_goals(results["e2e"]), sep="\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    runner = run
    if argv[:1] == ["gpu-check"]:  # the one-call GPU check (benchmarks/gpu_check.py)
        from . import gpu_check

        return gpu_check.main(argv[1:])
    if argv[:1] == ["longest-clip"]:  # frames under a memory cap, ours vs Latte (benchmarks/longest_clip.py)
        from . import longest_clip

        return longest_clip.main(argv[1:])
    if argv[:1] == ["quality"]:  # the model-quality lab has its own options (benchmarks/quality.py)
        from . import quality

        parser = argparse.ArgumentParser(prog="python -m benchmarks quality", description=quality.__doc__,
                                         formatter_class=argparse.RawDescriptionHelpFormatter)
        quality.add_arguments(parser)
        parser.add_argument("-v", "--verbose", action="store_true")
        argv, runner = argv[1:], quality.run
    else:
        parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
        parser.add_argument("-v", "--verbose", action="store_true", help="log each case")
        add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return runner(args)
    except ValueError as e:
        print(f"benchmarks: error: {e}", file=sys.stderr)
        return 2
