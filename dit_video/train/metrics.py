"""Training metrics: tensorboard scalars and a ``metrics.jsonl`` log (rank 0 only).

The JSON lines keep full float precision, so tests can compare losses bit for bit and the loss
plot can be drawn without tensorboard.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class MetricsLogger:
    """``log(step, {"loss": ...})`` -> tensorboard (``<out>/tb``) and ``<out>/metrics.jsonl``."""

    def __init__(self, out_dir: str | Path, enabled: bool = True, tensorboard: bool = True):
        self.enabled = enabled
        self.path = Path(out_dir) / "metrics.jsonl"
        self.writer = None
        if enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._end_torn_line()
            if tensorboard:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(str(Path(out_dir) / "tb"))

    def _end_torn_line(self) -> None:
        """A crash mid-write leaves a last line without its newline: end it, so new rows start on their own line."""
        try:
            with self.path.open("rb") as f:
                f.seek(0, 2)
                if f.tell() == 0:
                    return
                f.seek(-1, 2)
                torn = f.read(1) != b"\n"
        except FileNotFoundError:
            return
        if torn:
            with self.path.open("a") as f:
                f.write("\n")

    def log(self, step: int, scalars: dict[str, float], **extra: Any) -> None:
        if not self.enabled:
            return
        if self.writer is not None:
            for k, v in scalars.items():
                if math.isfinite(v):
                    self.writer.add_scalar(k, v, step)
        row = {"step": step, **{k: (v if math.isfinite(v) else None) for k, v in scalars.items()}, **extra}
        with self.path.open("a") as f:
            f.write(json.dumps(row) + "\n")

    def flush(self) -> None:
        if self.writer is not None:
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def read_events(path: str | Path, event: str) -> list[dict[str, Any]]:
    """The rows of one event kind (``skipped_nonfinite``, ``sample_eval``), in file order."""
    p = Path(path)
    out = []
    if p.is_file():
        for line in p.read_text(errors="replace").splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if isinstance(row, dict) and row.get("event") == event:
                out.append(row)
    return out


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a ``metrics.jsonl``; after a resume, a later row for a step replaces the earlier one.

    Lines that are not a JSON row with a step (a line torn by a crash) are skipped and counted in one warning.
    Non-finite values are stored as null.
    """
    rows: dict[int, dict[str, Any]] = {}
    p = Path(path)
    bad = 0
    if p.is_file():
        for line in p.read_text(errors="replace").splitlines():
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                step = int(row["step"])
            except (ValueError, KeyError, TypeError):
                bad += 1
                continue
            if row.get("event") is None:  # event rows (skipped steps, sample evals) ride beside the step rows
                rows[step] = row
    if bad:
        log.warning("%s: skipped %d unreadable line(s) (torn by a crash?)", p, bad)
    return [rows[k] for k in sorted(rows)]
