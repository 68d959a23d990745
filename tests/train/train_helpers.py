"""Shared constants of the trainer tests."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "configs" / "train" / "demo.yaml"

# A recipe small enough for a step in well under a second on one CPU core.
TINY = [
    "model.sample_size=[16,16]", "model.num_frames=4", "model.hidden_size=32", "model.depth=2",
    "model.num_heads=2", "model.caption_channels=16", "condition.tiny_dim=16", "data.size=16",
    "data.num_frames=4", "data.batch_size=2", "data.num_workers=0", "data.shuffle_buffer=8",
    "train.log_every=1", "train.progress=false", "train.threads=1", "optim.warmup_steps=2", "sample.steps=2",
]


def tiny_overrides(shards: Path, out_dir: Path, *extra: str) -> list[str]:
    return [*TINY, f"data.shards={shards}", f"train.out_dir={out_dir}", *extra]
