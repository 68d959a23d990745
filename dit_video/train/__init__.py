"""Training on the DeepSpeed engine: recipe schema, loop, checkpoints, EMA, logging, export.

Sampling lives in :mod:`dit_video.pipeline` (importable without this package).

>>> from dit_video.train import load_train_config, train
>>> cfg = load_train_config("configs/train/demo.yaml", ["train.steps=100"])
>>> result = train(cfg, resume="auto")

``dit_video.train.config`` imports no torch; the rest loads on first use.
"""

from __future__ import annotations

from typing import Any

from .config import TrainConfig, config_to_yaml, load_train_config

__all__ = ["TrainConfig", "Trainer", "config_to_yaml", "export_checkpoint", "load_train_config", "train"]


def __getattr__(name: str) -> Any:
    if name in ("Trainer", "train"):
        from . import trainer

        return getattr(trainer, name)
    if name == "export_checkpoint":
        from .export import export_checkpoint

        return export_checkpoint
    raise AttributeError(f"module 'dit_video.train' has no attribute {name!r}")
