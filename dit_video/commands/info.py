"""``dit-video info --preset NAME [key=value ...] [--yaml]``: architecture and parameter count, or the
preset (with the overrides) as a recipe's ``model:`` section."""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ..config import PRESETS

    p.add_argument("--preset", default="S/2", help=f"one of {', '.join(PRESETS)} (default S/2)")
    p.add_argument("overrides", nargs="*", help="config overrides, e.g. depth=4 positions=rope3d")
    p.add_argument("--yaml", action="store_true", help="print the config as a recipe's model: section instead")


def describe(model) -> str:
    cfg = model.config
    groups: dict[str, int] = {}
    for name, p in model.named_parameters():
        key = name.split(".")[0]
        groups[key] = groups.get(key, 0) + p.numel()
    kinds = [b.kind for b in model.blocks]
    lines = [
        f"VideoDiT: {cfg.depth} blocks ({kinds.count('spatial')} spatial, {kinds.count('temporal')} temporal, "
        f"{kinds.count('full')} full), width {cfg.hidden_size}, {cfg.num_heads} heads x {cfg.head_dim}",
        f"  patch {tuple(cfg.patch_size)}, input [B, {cfg.in_channels}, {cfg.num_frames}, "
        f"{cfg.sample_size[0]}, {cfg.sample_size[1]}] -> output channels {cfg.out_dim}",
        f"  positions {cfg.positions}, modulation {cfg.modulation}, conditioning {cfg.conditioning}"
        + (f" ({cfg.num_classes} classes + null)" if cfg.conditioning == "class" else "")
        + (f" (caption_channels {cfg.caption_channels})" if cfg.conditioning == "text" else ""),
        f"  qk_norm {cfg.qk_norm}, learn_sigma {cfg.learn_sigma}, gradient_checkpointing "
        f"{cfg.gradient_checkpointing}, kernel backend {cfg.kernel_backend}",
        "  parameters:",
    ]
    for k, n in groups.items():
        lines.append(f"    {k:<24}{n:>14,}")
    total = model.num_parameters()
    lines.append(f"    {'total':<24}{total:>14,}  ({total / 1e6:.1f}M)")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    import torch

    from ..config import VideoDiTConfig
    from ..models import VideoDiT
    from ..pipeline.safe_yaml import load_dotlist

    overrides = load_dotlist(args.overrides) if args.overrides else {}
    cfg = VideoDiTConfig.from_preset(args.preset, **overrides)
    if args.yaml:
        from omegaconf import OmegaConf

        print(OmegaConf.to_yaml({"model": cfg.to_dict()}), end="")
        return 0
    with torch.device("meta"):
        model = VideoDiT(cfg)
    print(describe(model))
    return 0
