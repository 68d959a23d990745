"""``python -m benchmarks all --quick`` runs, writes well-formed rows, and reports absent backends as absent.

Runs the CLI in-process (one torch import) into a temporary directory; seconds on a quiet CPU.
"""

from __future__ import annotations

import json
import sys

import pytest

from dit_video.commands.bench import find_benchmarks

ROOT = find_benchmarks()
if ROOT is not None and str(ROOT) not in sys.path:  # benchmarks/ is a directory of the checkout, not a package
    sys.path.insert(0, str(ROOT))

STATUSES = {"ok", "absent", "skipped", "error"}
KERNEL_KEYS = {"suite", "name", "op", "kind", "preset", "backend", "mode", "status", "reason", "device", "dtype",
               "shape", "tokens", "flops", "min_bytes", "floor_h100_ms", "floor_h200_ms", "bound_h100"}
KERNEL_OK_KEYS = {"time_ms", "time_iqr_ms", "time_min_ms", "time_max_ms", "reps", "ratio_vs_torch", "tflops", "gbs",
                  "pct_of_h100_floor", "peak_rss_delta_bytes"}
E2E_OK_KEYS = {"model", "variant", "variant_name", "params", "tokens", "time_ms", "time_iqr_ms", "ratio_vs_latte",
               "tokens_per_s", "saved_bytes", "saved_ratio_vs_latte", "held_bytes", "peak_live_bytes"}
META_KEYS = {"device", "device_name", "dtype", "git_commit", "timestamp", "versions", "torch_threads"}


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    from benchmarks import cli

    assert cli.main(["all", "--quick", "--device", "cpu", "--out", str(out)]) == 0
    return out


def test_dit_video_bench_runs_the_benchmarks_in_a_child_process(capfd):
    from dit_video.cli import main

    assert main(["bench", "all", "--help"]) == 0  # the benchmarks' own help, from the child process
    assert "--quick" in capfd.readouterr().out


def _load(out, suite):
    data = json.loads((out / f"{suite}.json").read_text())
    assert META_KEYS <= set(data["meta"]), set(data["meta"]) ^ META_KEYS
    assert data["meta"]["versions"]["torch"]
    assert data["rows"], f"{suite}: no rows"
    for r in data["rows"]:
        assert r["suite"] == suite and r["status"] in STATUSES, r
        if r["status"] != "ok":
            assert isinstance(r["reason"], str) and r["reason"], f"{suite}: {r['status']} row without a reason: {r}"
    return data["rows"]


def test_outputs_written(quick_run):
    assert find_benchmarks() is not None
    md = (quick_run / "results.md").read_text()
    assert "## Kernels" in md and "## End to end" in md and "## Data loader" in md
    assert (quick_run / "e2e_step_time.png").stat().st_size > 0


def test_kernel_rows(quick_run):
    from benchmarks.candidates import applicable
    from benchmarks.shapes import cases_for

    rows = _load(quick_run, "kernels")
    for r in rows:
        assert KERNEL_KEYS <= set(r), KERNEL_KEYS - set(r)
        assert r["flops"] > 0 and r["min_bytes"] > 0 and 0 < r["floor_h100_ms"] <= r["floor_h200_ms"] * 1.5
        if r["status"] == "ok":
            assert KERNEL_OK_KEYS <= set(r), KERNEL_OK_KEYS - set(r)
            assert r["time_ms"] > 0 and r["tflops"] > 0 and r["gbs"] > 0
            if r["mode"] == "fwd+bwd":
                assert r["saved_bytes"] > 0 and 0 <= r["saved_new_bytes"] <= r["saved_bytes"]
    # every (case, candidate, mode) has exactly one row: nothing is dropped silently
    keys = [(r["name"], r["preset"], r["tokens"], r["backend"], r["mode"]) for r in rows]
    assert len(keys) == len(set(keys))
    expected = {(c.name, c.preset, c.tokens, b, m) for c in cases_for("cpu", True) for b in applicable(c.op)
                for m in ("fwd", "fwd+bwd")}
    assert set(keys) == expected
    by = {(r["name"], r["backend"]): r for r in rows if r["mode"] == "fwd"}
    for name in {r["name"] for r in rows}:
        assert by[(name, "torch")]["status"] == "ok"
        assert by[(name, "compile")]["status"] == "skipped"  # --quick
        gpu_only_backends = ("cuda", "flash") + (("flash-attn",) if name.startswith("attention") else ())
        for gpu_only in gpu_only_backends:  # cannot run on CPU tensors: absent, with the reason
            assert by[(name, gpu_only)]["status"] == "absent", by[(name, gpu_only)]
        assert by[(name, "triton")]["status"] in ("absent", "skipped")


def test_absent_backend_reason_comes_from_dispatch(quick_run):
    from dit_video.kernels import available

    rows = _load(quick_run, "kernels")
    for r in rows:
        why = available(r["op"]).get(r["backend"]) if r["backend"] in ("triton", "cpu", "cuda", "flash") else None
        if why is not None:
            assert r["status"] == "absent" and why in r["reason"], r


def test_e2e_rows(quick_run):
    rows = _load(quick_run, "e2e")
    ok = [r for r in rows if r["status"] == "ok"]
    assert {r["variant_name"] for r in ok} == {"eager", "eager + ckpt"}
    assert {r["variant_name"] for r in rows if r["status"] == "skipped"} == {"compile", "compile + ckpt"}
    for r in ok:
        assert E2E_OK_KEYS <= set(r), E2E_OK_KEYS - set(r)
        assert r["time_ms"] > 0 and r["saved_bytes"] > 0 and r["ratio_vs_latte"] > 0
    params = {r["params"] for r in ok}
    assert len(params) == 1, f"VideoDiT and Latte are not matched: {params}"
    latte = [r for r in ok if r["model"] == "latte"]
    assert latte and all(abs(r["ratio_vs_latte"] - 1) < 1e-9 for r in latte)


def test_data_rows(quick_run):
    _load(quick_run, "data")


def test_roofline_counts():
    import torch

    from dit_video.kernels.roofline import attention_work, floors_ms

    w = attention_work(n=2, heads=3, lq=5, lk=7, d=8, es=2, mode="fwd")
    assert w.flops == 4 * 2 * 3 * 5 * 7 * 8
    assert w.bytes == 2 * (2 * 3 * 5 * 8 * 2) + 2 * (2 * 3 * 7 * 8 * 2) + 2 * 3 * 5 * 4
    wb = attention_work(n=2, heads=3, lq=5, lk=7, d=8, es=2, mode="fwd+bwd")
    assert wb.flops == pytest.approx(3.5 * w.flops)
    f = floors_ms(w, torch.bfloat16)
    assert f["floor_h200_ms"] <= f["floor_h100_ms"]
