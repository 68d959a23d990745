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
    "train.precision=fp32",  # the demo recipe's "auto" measures the CPU: tests must not depend on which one
    "diffusion.cond_frames=2", "diffusion.cond_prob=0.25",  # video prediction, as the demo recipe, in 4 frames
]


def tiny_overrides(shards: Path, out_dir: Path, *extra: str) -> list[str]:
    return [*TINY, f"data.shards={shards}", f"train.out_dir={out_dir}", *extra]


def cli_error(err: str) -> str:
    """The one-line error a CLI call printed, checked to come without a traceback of ours.

    Blocks that start with ``--- Logging error ---`` are dropped first: a third-party logger (DeepSpeed's)
    bound at import to an earlier test's captured stderr reports the closed stream that way.
    """
    lines, keep, skipping = err.strip().splitlines(), [], False
    for line in lines:
        if line.startswith("--- Logging error ---"):
            skipping = True
        elif skipping and (line.startswith("Message:") or line.startswith("Arguments:")):
            continue
        elif skipping and not line.startswith((" ", "Traceback", "Call stack", "ValueError", "OSError")):
            skipping = False
        if not skipping:
            keep.append(line)
    text = "\n".join(keep)
    assert "Traceback (most recent call last)" not in text, text[-2000:]
    return keep[-1] if keep else ""
