"""Learning-rate schedule: linear warmup, then cosine decay to ``min_lr_ratio`` of the peak.

The cosine follows the larger of two progress measures: applied optimizer steps out of
``train.steps``, and the fraction of a wall-time budget (``train.max_minutes``) used, which the
trainer passes explicitly with every step (``engine.step(lr_kwargs={"progress": p})``). So a run
with a time budget anneals fully by its end however fast the machine is.
"""

from __future__ import annotations

import math

import torch


def warmup_cosine(step: int, *, warmup: int, total: int, min_ratio: float, progress_floor: float = 0.0) -> float:
    """Multiplier of the peak lr after ``step`` optimizer steps.

    ``progress_floor`` (in [0, 1]) lets a wall-time budget advance the cosine faster than the step count.
    """
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    span = max(1, total - warmup)
    progress = min(1.0, max(0.0, (step - warmup) / span, progress_floor))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


class WarmupCosine(torch.optim.lr_scheduler.LRScheduler):
    """:func:`warmup_cosine` as a scheduler; ``step(progress=p)`` takes the time progress explicitly."""

    def __init__(self, optimizer: torch.optim.Optimizer, *, warmup: int, total: int, min_ratio: float):
        self.warmup, self.total, self.min_ratio = warmup, total, min_ratio
        self.progress = 0.0
        super().__init__(optimizer)

    def step(self, progress: float | None = None) -> None:  # type: ignore[override]
        if progress is not None:
            self.progress = min(1.0, max(0.0, float(progress)))
        super().step()

    def get_lr(self) -> list[float]:
        f = warmup_cosine(self.last_epoch, warmup=self.warmup, total=self.total, min_ratio=self.min_ratio,
                          progress_floor=self.progress)
        return [base * f for base in self.base_lrs]
