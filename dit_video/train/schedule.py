"""Learning-rate schedule: linear warmup, then cosine decay to ``min_lr_ratio`` of the peak."""

from __future__ import annotations

import math


def warmup_cosine(step: int, *, warmup: int, total: int, min_ratio: float, progress_floor: float = 0.0) -> float:
    """Multiplier of the peak lr after ``step`` optimizer steps (``LambdaLR`` convention).

    ``progress_floor`` (in [0, 1]) lets a wall-time budget advance the cosine faster than the step count.
    """
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    span = max(1, total - warmup)
    progress = min(1.0, max(0.0, (step - warmup) / span, progress_floor))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))
