"""``python -m benchmarks gpu-check``: the dry run (what CI runs) and the step runner's partial results."""

from __future__ import annotations

import json
import sys

from benchmarks import gpu_check


def test_dry_run_lists_every_step_within_the_budget(capsys):
    assert gpu_check.dry_run() == 0
    out = capsys.readouterr().out
    for s in gpu_check.steps():
        assert s.name in out
    assert sum(s.budget_s for s in gpu_check.steps()) <= gpu_check.TOTAL_BUDGET_S <= 480


def test_dry_run_fails_on_a_missing_import(monkeypatch, capsys):
    real = gpu_check.steps
    monkeypatch.setattr(gpu_check, "steps", lambda: [*real(), gpu_check.Step("x", 1, ("true",),
                                                                              ("no_such_module_xyz",), "x")])
    assert gpu_check.dry_run() == 1
    assert "no_such_module_xyz" in capsys.readouterr().out


def test_a_step_past_its_budget_leaves_the_finished_steps(monkeypatch, tmp_path):
    py = sys.executable
    monkeypatch.setattr(gpu_check, "steps", lambda: [
        gpu_check.Step("fast", 30, (py, "-c", "print('done fast')"), (), "a step that finishes"),
        gpu_check.Step("slow", 1, (py, "-c", "import time; print('started', flush=True); time.sleep(30)"), (),
                       "a step that hangs")])
    assert gpu_check.run(tmp_path) == 1
    rows = json.loads((tmp_path / "gpu_check.json").read_text())
    assert [r["status"] for r in rows] == ["ok", "timeout (partial)"]
    md = (tmp_path / "gpu_check.md").read_text()
    assert "done fast" in md and "| slow | timeout (partial) |" in md
