"""Outputs of a run: JSON (meta + rows per suite), one markdown file, PNG plots."""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path

from .e2e import GOAL_RATIO

MB = 2**20


def write_json(out: Path, suite: str, meta: dict, rows: list[dict]) -> Path:
    path = out / f"{suite}.json"
    path.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1, default=str))
    return path


def _f(x: float | None, spec: str = ".3g") -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return format(x, spec)


def _mb(x: int | None) -> str:
    return "–" if x is None else f"{x / MB:.2f}"


def _shape(r: dict) -> str:
    s = r["shape"]
    txt = f"{s['B']}×{s['T']}×{s['S']} {s['H']}×{s['D']}"
    return txt + (f" L{s['L']}" if "L" in s else "")


def kernels_markdown(rows: list[dict]) -> str:
    ran = [r for r in rows if r["status"] == "ok"]
    lines = [
        "## Kernels",
        "",
        "Shape: B×T×S (batch × latent frames × tokens per frame), heads×head_dim. Time: median (IQR) "
        "over interleaved rounds; `vs torch`: median of per-round ratios to the torch reference (< 1 is "
        "faster); `vs SDPA`: median time over the user-style SDPA path's (attention: permute copies + SDPA + copy "
        "back); `auto` rows name what the dispatcher measured fastest here. TFLOP/s and GB/s: FLOPs and "
        "minimum bytes over the median time. Floors: the least "
        "time on an H100 / H200 for this shape in this dtype. Saved: bytes saved for backward "
        "(new = other than the inputs). Peak: CUDA max_memory_allocated growth, or CPU peak RSS growth.",
        "",
        "| op | preset | shape | tokens | backend | mode | time ms (IQR) | vs torch | vs SDPA | TFLOP/s | GB/s | GFLOP "
        "| min MB | H100 floor ms | H200 floor ms | saved MB (new) | peak MB |",
        "|---|---|---|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in ran:
        backend = r["backend"] + (f" → {r['auto_chose']}" if r.get("auto_chose") else "")
        peak = r.get("cuda_peak_bytes", r.get("peak_rss_delta_bytes"))
        saved = "–" if "saved_bytes" not in r else f"{_mb(r['saved_bytes'])} ({_mb(r['saved_new_bytes'])})"
        lines.append(
            f"| {r['name']} | {r['preset']} | {_shape(r)} | {r['tokens']} | {backend} | {r['mode']} "
            f"| {_f(r['time_ms'])} ({_f(r['time_iqr_ms'], '.2g')}) | {_f(r['ratio_vs_torch'], '.2f')} "
            f"| {_f(r.get('ratio_vs_sdpa'), '.2f')} "
            f"| {_f(r['tflops'])} | {_f(r['gbs'])} | {_f(r['flops'] / 1e9)} | {_f(r['min_bytes'] / MB)} "
            f"| {_f(r['floor_h100_ms'])} | {_f(r['floor_h200_ms'])} | {saved} | {_mb(peak)} |")
    missing: dict[tuple[str, str, str], set[str]] = defaultdict(set)
    for r in rows:
        if r["status"] != "ok":
            missing[(r["backend"], r["status"], r["reason"] or "")].add(r["name"])
    if missing:
        lines += ["", "### Not run (absent, skipped or failed), with the reason", "",
                  "| backend | status | ops | reason |", "|---|---|---|---|"]
        for (backend, status, reason), names in sorted(missing.items()):
            lines.append(f"| {backend} | {status} | {', '.join(sorted(names))} | {reason.replace('|', '/')} |")
    return "\n".join(lines)


def e2e_goals(rows: list[dict]) -> list[str]:
    """One line per variant: our step time and saved activations over Latte's, against the 0.5x goal."""
    out = []
    for r in rows:
        if r.get("model") != "videodit[auto]" or r["status"] != "ok":
            continue
        t, a = r.get("ratio_vs_latte"), r.get("saved_ratio_vs_latte")
        met = lambda x: "–" if x is None else ("meets" if x <= GOAL_RATIO else "misses")
        out.append(f"- {r['variant_name']}: step time {_f(t, '.2f')}x Latte ({met(t)} the <= {GOAL_RATIO}x goal), "
                   f"saved activations {_f(a, '.2f')}x ({met(a)} the goal)")
    return out


def e2e_markdown(rows: list[dict]) -> str:
    lines = ["## End to end: VideoDiT vs diffusers Latte (fwd + loss + bwd)", ""]
    ok = [r for r in rows if r["status"] == "ok"]
    if ok:
        s = ok[0]["shape"]
        lines += [f"Config {s['name']}: width {s['width']}, {s['heads']} heads, Latte num_layers={s['num_layers']} "
                  f"= {2 * s['num_layers']} VideoDiT blocks, batch {s['batch']}, latents {s['in_channels']}×"
                  f"{s['frames']}×{s['latent_hw']}×{s['latent_hw']}, patch {s['patch']}, text {s['text_len']}×"
                  f"{s['caption_channels']}; {ok[0]['tokens']} tokens. Ratios are ours / Latte, measured pair by "
                  "pair in one process.", "", "Goals (issue 7, <= 0.5x):", *e2e_goals(rows), ""]
    floor = next((r for r in ok if r.get("floor_ms")), None)
    if floor:
        lines += [f"Compute floor: {floor['step_gflop']:.4g} GFLOP per VideoDiT step (counted by torch's "
                  f"FlopCounterMode on the reference path) / {floor['gemm_gflops']:.1f} GFLOP/s (the GEMM rate "
                  f"measured in this run at the step's shapes and dtype) = {floor['floor_ms']:.4g} ms; `x floor` "
                  "is step time / that.", ""]
    lines += ["| variant | model | params | step ms (IQR) | x floor | vs Latte | tokens/s | saved MB | saved vs Latte "
              "| held MB | held vs Latte | peak live MB |",
              "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        if r["status"] != "ok":
            lines.append(f"| {r['variant_name']} | {r['model']} | {r['status']}: {r['reason']} | | | | | | | | | |")
            continue
        lines.append(
            f"| {r['variant_name']} | {r['model']} | {r['params']:,} | {_f(r['time_ms'], '.4g')} "
            f"({_f(r['time_iqr_ms'], '.2g')}) | {_f(r.get('x_floor'), '.2f')} | {_f(r['ratio_vs_latte'], '.2f')} "
            f"| {_f(r['tokens_per_s'], '.4g')} "
            f"| {_mb(r.get('saved_bytes'))} | {_f(r.get('saved_ratio_vs_latte'), '.2f')} | {_mb(r.get('held_bytes'))} "
            f"| {_f(r.get('held_ratio_vs_latte'), '.2f')} | {_mb(r.get('peak_live_bytes'))} |")
    auto = next((r.get("auto_backends") for r in ok if r.get("auto_backends")), None)
    if auto:
        lines += ["", "`videodit[auto]` dispatch at these shapes: "
                  + ", ".join(f"{k} → {v}" for k, v in auto.items())]
    return "\n".join(lines)


def data_markdown(rows: list[dict]) -> str:
    keys = [k for k in dict.fromkeys(k for r in rows for k in r) if k not in ("suite",)]
    lines = ["## Data loader", "", "| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    for r in rows:
        lines.append("| " + " | ".join(str(r.get(k, "")).replace("|", "/") for k in keys) + " |")
    return "\n".join(lines)


def markdown(meta: dict, suites: dict[str, list[dict]], elapsed_s: dict[str, float],
             cpu_s: dict[str, float] | None = None) -> str:
    cpu_s = cpu_s or {}
    head = [
        "# dit-video benchmarks",
        "",
        f"- device: {meta['device']} — {meta['device_name']}; dtype {meta['dtype']}; quick={meta['quick']}",
        f"- git {meta['git_commit']}, {meta['timestamp']}; torch {meta['versions'].get('torch')}, "
        f"triton {meta['versions'].get('triton')}, diffusers {meta['versions'].get('diffusers')}, "
        f"flash-attn {meta['versions'].get('flash-attn')}",
        f"- torch threads: {meta.get('torch_threads')}; load average at start: {meta.get('loadavg', '–')}",
        "- wall time (process CPU time): "
        + ", ".join(f"{k} {v:.0f}s ({cpu_s[k]:.0f}s)" if k in cpu_s else f"{k} {v:.0f}s" for k, v in elapsed_s.items()),
        "",
    ]
    parts = {"kernels": kernels_markdown, "e2e": e2e_markdown, "data": data_markdown}
    return "\n".join(head) + "\n" + "\n\n".join(parts[k](v) for k, v in suites.items()) + "\n"


def plot_kernels(out: Path, rows: list[dict]) -> list[Path]:
    """One PNG per op: time vs tokens per backend (and preset), fwd and fwd+bwd, H100 floor dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    by_name: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        if r["status"] == "ok":
            by_name[r["name"]].append(r)
    for name, rs in by_name.items():
        if len({r["tokens"] for r in rs}) < 2:  # one shape (e.g. --quick): no curve to draw
            continue
        fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=False)
        for ax, mode in zip(axes, ("fwd", "fwd+bwd")):
            series: dict[str, list[tuple[int, float]]] = defaultdict(list)
            floor: dict[str, list[tuple[int, float]]] = defaultdict(list)
            for r in rs:
                if r["mode"] != mode:
                    continue
                series[f"{r['backend']} {r['preset']}"].append((r["tokens"], r["time_ms"]))
                if r["backend"] == "torch":
                    floor[f"H100 floor {r['preset']}"].append((r["tokens"], r["floor_h100_ms"]))
            for label, pts in sorted(series.items()):
                pts.sort()
                ax.plot(*zip(*pts), marker="o", label=label)
            for label, pts in sorted(floor.items()):
                pts.sort()
                ax.plot(*zip(*pts), linestyle="--", color="gray", label=label)
            ax.set(xscale="log", yscale="log", xlabel="tokens (B·T·S)", ylabel="median time (ms)",
                   title=f"{name} — {mode}")
            ax.grid(True, which="both", alpha=0.3)
            if series:
                ax.legend(fontsize=7)
        fig.subplots_adjust(left=0.07, right=0.98, bottom=0.13, top=0.92, wspace=0.22)
        path = out / f"kernels_{name.replace('/', '_')}.png"
        fig.savefig(path, dpi=90)
        plt.close(fig)
        paths.append(path)
    return paths


def plot_e2e(out: Path, rows: list[dict]) -> list[Path]:
    """Step time per variant and model (bars), annotated with the ratio to Latte."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in rows if r["status"] == "ok"]
    if not ok:
        return []
    variants = list(dict.fromkeys(r["variant_name"] for r in ok))
    models = list(dict.fromkeys(r["model"] for r in ok))
    fig, ax = plt.subplots(figsize=(9, 4))
    width = 0.8 / len(models)
    for i, m in enumerate(models):
        for j, v in enumerate(variants):
            r = next((r for r in ok if r["model"] == m and r["variant_name"] == v), None)
            if r is None:
                continue
            x = j + i * width
            ax.bar(x, r["time_ms"], width, color=f"C{i}", label=m if j == 0 else None)
            ax.text(x, r["time_ms"], f"{r['ratio_vs_latte']:.2f}x", ha="center", va="bottom", fontsize=7)
    ax.set_xticks([j + width * (len(models) - 1) / 2 for j in range(len(variants))], variants)
    ax.set(ylabel="fwd+bwd step, median ms", title=f"VideoDiT vs Latte — {ok[0]['shape']['name']}")
    ax.legend(fontsize=8)
    fig.subplots_adjust(left=0.1, right=0.98, bottom=0.1, top=0.9)
    path = out / "e2e_step_time.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return [path]
