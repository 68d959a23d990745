"""Counters by reason and rate-limited warnings, shared by the loader's workers."""

from __future__ import annotations

import logging

log = logging.getLogger("dit_video.data")


class Counters(dict):
    """``reason -> count``, starting from a resumed run's counts."""

    def __init__(self, initial: dict[str, int] | None = None) -> None:
        super().__init__(initial or {})

    def add(self, key: str, n: int = 1) -> None:
        self[key] = self.get(key, 0) + n

    def warn(self, key: str, message: str) -> None:
        """Count ``key`` and log a warning for its 1st-3rd, 10th, 100th, 1000th, ... occurrence."""
        self.add(key)
        n = self[key]
        if n <= 3 or (n >= 10 and str(n).strip("0") == "1"):
            more = "" if n < 3 else f" (occurrence {n}; further ones logged at 10, 100, 1000, ...)"
            log.warning("%s: %s%s", key, message, more)


def merge(parts: list[dict[str, int]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for p in parts:
        for k, v in p.items():
            out[k] = out.get(k, 0) + int(v)
    return dict(sorted(out.items()))
