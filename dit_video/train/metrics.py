"""Training metrics: tensorboard scalars and a ``metrics.jsonl`` log (rank 0 only).

The JSON lines keep full float precision, so tests can compare losses bit for bit and the loss
plot can be drawn without tensorboard.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


class MetricsLogger:
    """``log(step, {"loss": ...})`` -> tensorboard (``<out>/tb``) and ``<out>/metrics.jsonl``."""

    def __init__(self, out_dir: str | Path, enabled: bool = True, tensorboard: bool = True):
        self.enabled = enabled
        self.path = Path(out_dir) / "metrics.jsonl"
        self.writer = None
        if enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if tensorboard:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(str(Path(out_dir) / "tb"))

    def log(self, step: int, scalars: dict[str, float], **extra: Any) -> None:
        if not self.enabled:
            return
        if self.writer is not None:
            for k, v in scalars.items():
                self.writer.add_scalar(k, v, step)
        with self.path.open("a") as f:
            f.write(json.dumps({"step": step, **scalars, **extra}) + "\n")

    def flush(self) -> None:
        if self.writer is not None:
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a ``metrics.jsonl``; after a resume, a later row for a step replaces the earlier one."""
    rows: dict[int, dict[str, Any]] = {}
    p = Path(path)
    if p.is_file():
        for line in p.read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                rows[int(row["step"])] = row
    return [rows[k] for k in sorted(rows)]
