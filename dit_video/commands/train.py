"""``dit-video train CONFIG [key=value ...] [--resume auto|PATH]``: train on the DeepSpeed engine.

Works as a plain single process (CPU or one GPU) and under ``deepspeed``/``torchrun`` launchers.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="training recipe (YAML), e.g. configs/train/demo.yaml")
    p.add_argument("overrides", nargs="*", help="dotlist overrides, e.g. train.steps=100 optim.lr=3e-4")
    p.add_argument("--resume", default=None, metavar="auto|PATH",
                   help="'auto': continue from the newest complete checkpoint in train.out_dir (if any); "
                        "PATH: a checkpoint, checkpoints or run directory")
    p.add_argument("--local_rank", type=int, default=None, help=argparse.SUPPRESS)  # set by the deepspeed launcher


def run(args: argparse.Namespace) -> int:
    from ..train.config import load_train_config
    from ..train.trainer import train

    cfg = load_train_config(args.config, args.overrides)
    result = train(cfg, recipe_dir=Path(args.config).parent, resume=args.resume)
    last = result.losses.get(result.step)
    print(f"trained steps {result.start_step} -> {result.step} in {result.seconds:.1f}s"
          + (f", last loss {last:.4f}" if last is not None else "")
          + f"; checkpoint {result.checkpoint}; outputs in {result.out_dir}")
    return 0
