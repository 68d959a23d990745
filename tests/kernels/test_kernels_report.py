"""`dit-video kernels-report`: AOT compilation for sm_80/sm_90a, its parsing and its CI gate.

The full report (every kernel x config x arch) runs in CI as its own step; here one small
kernel family is compiled for real through the CLI, and the gate logic is checked on rows.
"""

from __future__ import annotations

import argparse
import json
import os

from dit_video.commands import kernels_report
from dit_video.kernels import aot

PTXAS_LOG = """ptxas info    : Compiling entry function '_attn_fwd' for 'sm_90a'
ptxas info    : Function properties for _attn_fwd
    8 bytes stack frame, 12 bytes spill stores, 20 bytes spill loads
ptxas info    : Used 255 registers, used 1 barriers, 392 bytes cmem[0]
"""


def test_parse_ptxas():
    assert aot.parse_ptxas(PTXAS_LOG) == (255, 32)
    assert aot.parse_ptxas("nothing") == (None, None)


def _row(**kw) -> aot.Row:
    base = dict(kernel="flash_fwd", config="c", arch="sm_90a", regs=200, spill_bytes=0, shared=1000,
                shared_limit=aot.ARCHS["sm_90a"][1], wgmma=8, mma_sync=0)
    base.update(kw)
    return aot.Row(**base)


def test_gate_fails_on_spills_shared_memory_and_missing_wgmma():
    assert aot.gate(_row(), needs_wgmma=True) == []
    assert "spills" in aot.gate(_row(spill_bytes=4), needs_wgmma=False)[0]
    assert "shared memory" in aot.gate(_row(shared=300 * 1024), needs_wgmma=False)[0]
    assert "wgmma" in aot.gate(_row(wgmma=0, mma_sync=16), needs_wgmma=True)[0]
    assert aot.gate(_row(arch="sm_80", wgmma=0, mma_sync=16), needs_wgmma=True) == []  # no wgmma on Ampere


def test_report_exits_nonzero_when_a_row_fails(monkeypatch, capsys):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.setattr(aot, "run", lambda archs, only, log, jobs: [_row(errors=["4 bytes of spills"])])
    assert aot.main(["--arch", "sm_90a"]) == 1
    monkeypatch.setattr(aot, "run", lambda archs, only, log, jobs: [_row()])
    assert aot.main(["--arch", "sm_90a"]) == 0
    assert "permute+SDPA" in capsys.readouterr().out


def test_report_refuses_the_interpreter(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert aot.main(["--arch", "sm_80"]) == 2


def test_temporal_traffic_counts_copies():
    tt = aot.temporal_traffic(1, 16, 1024, 6, 64)
    elt = 16 * 1024 * 6 * 64 * 2
    assert tt["tensor_bytes"] == elt
    assert tt["permute_sdpa_fwd_bytes"] - tt["kernel_fwd_bytes"] == 8 * elt  # 3 permutes in, 1 out: 2 passes each


def test_every_spec_has_a_matching_signature():
    """Each declared spec names real arguments (no compile needed): catches stale AOT specs."""
    for arch in aot.ARCHS:
        specs = aot.all_specs(arch)
        assert {s.name for s in specs} >= {"flash_fwd", "flash_bwd_dq", "flash_bwd_delta", "packed_fwd", "packed_bwd",
                                           "gated_residual_adaln_fwd", "adaln_modulate_bwd", "rope3d_fwd"}
        for s in specs:
            assert list(s.signature) == list(s.fn.arg_names), s.name
            assert all(v == "constexpr" for k, v in s.signature.items() if k in s.constexprs), s.name


def test_cli_compiles_rope3d_for_both_archs(tmp_path):
    """Real AOT compile + ptxas through the CLI (child process without TRITON_INTERPRET)."""
    out = tmp_path / "report.json"
    args = argparse.Namespace(arch=["sm_80", "sm_90a"], json=str(out), only="rope3d")
    assert os.environ.get("TRITON_INTERPRET") == "1"  # the child must drop it
    assert kernels_report.run(args) == 0
    rows = json.loads(out.read_text())["rows"]
    assert {r["arch"] for r in rows} == {"sm_80", "sm_90a"} and len(rows) == 8
    for r in rows:
        assert r["errors"] == [] and r["regs"] > 0 and r["spill_bytes"] == 0
        assert 0 <= r["shared"] <= r["shared_limit"] and r["floor_us"] > 0
