"""Sequence parallelism (dit_video.parallel): 2 gloo ranks share each clip; outputs and every parameter
gradient (summed over the group) equal one process's, for DSP (factorized) and Ulysses (full)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dit_video import VideoDiT, VideoDiTConfig
from dit_video.parallel import SequenceParallel
from dit_video.parallel.comm import bytes_all_to_all

ROOT = Path(__file__).resolve().parents[2]
EPS32 = 2.0**-23


def _torchrun(nproc: int, script: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    from dit_video.train.distributed import free_port

    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--master_port",
           str(free_port()), str(script), *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_sp2_forward_and_backward_equal_one_process(tmp_path):
    r = _torchrun(2, Path(__file__).with_name("sp_worker.py"), str(tmp_path), cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-4000:]
    for rank in (0, 1):
        report = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert len(report) == 4
        for case, row in report.items():
            # The same arithmetic on a different split: only summation order differs (token chunks, the
            # all-reduce of the gradient shares). Bound: 64 fp32 ulps at the value's scale, ~sqrt(n) of the
            # longest reduction here (B*T'*S = 2*4*16 = 128 tokens summed into a weight gradient) x 5.
            tol = 64 * EPS32
            assert row["out"] <= tol * max(1.0, row["out_scale"]), (case, row["out"])
            bad = {n: v for n, v in row["grads"].items() if v[0] > tol * max(1.0, v[1])}
            assert not bad, (case, bad)
            assert len(row["grads"]) > 20  # every parameter was compared


def _sp(size: int, rank: int = 0) -> SequenceParallel:
    return SequenceParallel(group=None, size=size, rank=rank)


def test_indivisible_sizes_are_clear_errors_before_any_step():
    cfg = VideoDiTConfig.from_preset("tiny", depth=2, hidden_size=32, num_heads=4, sample_size=[8, 8], num_frames=6)
    model = VideoDiT(cfg).set_sequence_parallel(_sp(4))
    x = torch.randn(1, 3, 6, 8, 8)
    with pytest.raises(ValueError, match=r"T'=6 is not divisible by 4"):
        model(x, torch.rand(1))
    with pytest.raises(ValueError, match=r"S=3x3=9 is not divisible by 2"):
        _sp(2).check((4, 3, 3), 4, "factorized")
    with pytest.raises(ValueError, match=r"num_heads=6 is not divisible by 4"):
        _sp(4).check((4, 2, 2), 6, "full")
    _sp(2).check((4, 2, 2), 4, "full")  # divisible: fine


def test_local_chunks_tile_the_clip():
    for n in (2, 4):
        frames = [_sp(n, r).frames(8) for r in range(n)]
        assert [i for s in frames for i in range(8)[s]] == list(range(8))
        positions = [_sp(n, r).positions(16) for r in range(n)]
        assert [i for s in positions for i in range(16)[s]] == list(range(16))


def test_all_to_all_bytes_arithmetic():
    x = torch.empty(2, 8, 256, 384)  # [B, T'/N, S, D] fp32 on each of 4 ranks
    assert bytes_all_to_all(x, 4) == x.numel() * 4 * 3 // 4
