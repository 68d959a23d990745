"""Local-path checks: nothing in dit_video downloads; a missing directory is a clear error."""

from __future__ import annotations

import os
from pathlib import Path


def require_local_dir(path: str | os.PathLike, what: str, needs: str = "config.json") -> Path:
    """``Path(path)`` if it is a directory holding ``needs``; ``FileNotFoundError`` naming it otherwise."""
    p = Path(path).expanduser()
    if not p.is_dir():
        raise FileNotFoundError(f"{what}: local directory {str(p)!r} does not exist (dit-video never downloads; "
                                "save the model with save_pretrained() and pass that directory)")
    if needs and not (p / needs).is_file():
        raise FileNotFoundError(f"{what}: {str(p / needs)!r} not found; expected a directory written by "
                                "save_pretrained()")
    return p
