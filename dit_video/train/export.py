"""Export a training checkpoint's EMA weights for sampling and sharing (layout: :mod:`dit_video.pipeline.weights`)."""

from __future__ import annotations

from pathlib import Path

from ..pipeline.weights import write_export
from . import checkpoint as ckpt


def export_checkpoint(path: str | Path, out: str | Path) -> Path:
    """Newest complete checkpoint under ``path`` (a tag, checkpoints or run directory) -> export directory ``out``."""
    tag_dir = ckpt.find_checkpoint(path)
    recipe_file = tag_dir / ckpt.CONFIG_FILE
    if not recipe_file.is_file():
        raise FileNotFoundError(f"{recipe_file} not found: not a dit-video training checkpoint")
    return write_export(ckpt.load_ema(tag_dir), recipe_file.read_text(), out,
                        source=f"EMA weights of {tag_dir.resolve()} (step {ckpt.step_of(tag_dir)})")
