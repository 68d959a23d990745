"""Two CPU processes under torchrun (gloo): ZeRO-2 training, checkpoint, ``--resume auto``, export."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from train_helpers import DEMO, ROOT, tiny_overrides


def _torchrun(args: list[str], tmp_path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    env.pop("RANK", None)
    env.pop("WORLD_SIZE", None)
    from dit_video.train.distributed import free_port

    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
           "-m", "dit_video.cli", *args]
    return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)


def test_two_process_zero2_train_resume_export(tmp_path, shards):
    out = tmp_path / "run"
    base = ["train", str(DEMO), *tiny_overrides(shards, out, "train.deepspeed=zero2_fp32", "train.ckpt_every=2")]
    first = _torchrun([*base, "train.steps=4"], tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    assert first.stdout.count("trained steps 0 -> 4") == 2  # both ranks finished
    assert (out / "checkpoints" / "step_00000004").is_dir()
    # ZeRO-2 with 2 ranks: each rank saved its optimizer partition
    parts = sorted(p.name for p in (out / "checkpoints" / "step_00000004").iterdir() if "optim_states" in p.name)
    assert len(parts) == 2, parts

    second = _torchrun([*base, "train.steps=6", "--resume", "auto"], tmp_path)
    assert second.returncode == 0, second.stderr[-3000:]
    assert second.stdout.count("trained steps 4 -> 6") == 2
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]
    losses = [json.loads(line)["loss"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert all(0 < v < 10 for v in losses)

    from dit_video.cli import main
    from dit_video.models import VideoDiT

    assert main(["export", str(out), str(tmp_path / "w")]) == 0
    model = VideoDiT.from_pretrained(tmp_path / "w")
    assert model.config.hidden_size == 32
