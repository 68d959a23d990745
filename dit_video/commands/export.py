"""``dit-video export CKPT OUT``: EMA weights of a training checkpoint -> safetensors + config.json."""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="a run directory, its checkpoints/ directory or one step_NNNNNNNN/ tag "
                                      "(the newest complete checkpoint is used)")
    p.add_argument("out", help="output directory (loadable by VideoDiT.from_pretrained and dit-video sample)")


def run(args: argparse.Namespace) -> int:
    from ..train.export import export_checkpoint

    out = export_checkpoint(args.checkpoint, args.out)
    print(f"exported EMA weights to {out}")
    return 0
