"""Video data: shard writer, synthetic clips, and the webdataset + decord streaming loader.

``DataConfig`` imports no torch; ``make_loader`` and ``write_synthetic_shards`` load their modules on
first use.
"""

from __future__ import annotations

from typing import Any

from .config import DataConfig

__all__ = ["DataConfig", "make_loader", "write_synthetic_shards", "make_shards", "to_float"]


def __getattr__(name: str) -> Any:
    if name == "make_loader":
        from .loader import make_loader

        return make_loader
    if name == "to_float":
        from .pipeline import to_float

        return to_float
    if name == "write_synthetic_shards":
        from .synthetic import write_synthetic_shards

        return write_synthetic_shards
    if name == "make_shards":
        from .builder import make_shards

        return make_shards
    raise AttributeError(f"module 'dit_video.data' has no attribute {name!r}")
