"""Export a training checkpoint's EMA weights for sampling and sharing.

``OUT/config.json`` + ``OUT/model.safetensors`` are the backbone (``VideoDiT.from_pretrained(OUT)``
loads them); a learned text encoder goes to ``OUT/text_encoder.safetensors``; ``OUT/train_config.yaml``
is the recipe (diffusion process, VAE, text encoder settings) that ``dit-video sample`` needs.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from omegaconf import OmegaConf

from . import checkpoint as ckpt
from .config import TrainConfig, config_to_yaml

TEXT_ENCODER_FILE = "text_encoder.safetensors"
TEXT_ENCODER_CONFIG = "text_encoder.json"
RECIPE_FILE = "train_config.yaml"


def split_state(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """A :class:`ConditionedDiT` state dict -> (backbone, text encoder) state dicts."""
    dit = {k[len("dit."):]: v for k, v in state.items() if k.startswith("dit.")}
    text = {k[len("text_encoder."):]: v for k, v in state.items() if k.startswith("text_encoder.")}
    other = sorted(k for k in state if not k.startswith(("dit.", "text_encoder.")))
    if other or not dit:
        raise ValueError(f"unexpected EMA state: {len(dit)} backbone tensors, unknown keys {other[:5]}")
    return dit, text


def recipe_from_yaml(text: str) -> TrainConfig:
    """A saved recipe (already resolved) back into a ``TrainConfig``."""
    merged = OmegaConf.merge(OmegaConf.structured(TrainConfig), OmegaConf.create(text))
    return OmegaConf.to_object(merged)  # type: ignore[return-value]


def export_checkpoint(path: str | Path, out: str | Path) -> Path:
    """Newest complete checkpoint under ``path`` (a tag, checkpoints or run directory) -> export directory ``out``."""
    from safetensors.torch import save_file

    tag_dir = ckpt.find_checkpoint(path)
    recipe_file = tag_dir / ckpt.CONFIG_FILE
    if not recipe_file.is_file():
        raise FileNotFoundError(f"{recipe_file} not found: not a dit-video training checkpoint")
    cfg = recipe_from_yaml(recipe_file.read_text())
    dit, text = split_state(ckpt.load_ema(tag_dir))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(cfg.model.to_dict(), indent=2))
    save_file({k: v.contiguous() for k, v in dit.items()}, str(out / "model.safetensors"))
    if text:
        from .conditioning import build_text_encoder

        save_file({k: v.contiguous() for k, v in text.items()}, str(out / TEXT_ENCODER_FILE))
        config_dict = build_text_encoder(cfg.condition, "cpu").config_dict()
        (out / TEXT_ENCODER_CONFIG).write_text(json.dumps(config_dict, indent=2))
    (out / RECIPE_FILE).write_text(config_to_yaml(cfg))
    (out / "source.txt").write_text(f"EMA weights of {tag_dir.resolve()} (step {ckpt.step_of(tag_dir)})\n")
    return out


def load_export(directory: str | Path, device: torch.device | str = "cpu"):
    """An export directory -> (:class:`ConditionedDiT` in eval mode, the recipe ``TrainConfig``)."""
    from safetensors.torch import load_file

    from ..config import VideoDiTConfig
    from ..models import VideoDiT
    from .conditioning import ConditionedDiT, build_text_encoder

    d = Path(directory)
    if not d.is_dir():
        raise FileNotFoundError(f"weights directory {d} not found (make one with `dit-video export CKPT OUT`)")
    dit = VideoDiT.from_pretrained(d)
    recipe = d / RECIPE_FILE
    if recipe.is_file():
        cfg = recipe_from_yaml(recipe.read_text())
        cfg.model = dit.config
    else:  # plain VideoDiT.save_pretrained weights: default diffusion, pixel space, no text encoder
        cfg = TrainConfig(model=VideoDiTConfig.from_dict(dit.config.to_dict()))
        if dit.config.conditioning == "text":
            raise FileNotFoundError(f"{recipe} not found: a text-conditioned model needs its recipe to rebuild the "
                                    "text encoder (use a directory written by `dit-video export`)")
    text_encoder = None
    if cfg.condition.text_encoder == "tiny":
        f = d / TEXT_ENCODER_FILE
        if not f.is_file():
            raise FileNotFoundError(f"{f} not found: the model was trained with a learned text encoder")
        if (d / TEXT_ENCODER_CONFIG).is_file():
            from ..encoders import TinyTextEncoder

            text_encoder = TinyTextEncoder.from_config(json.loads((d / TEXT_ENCODER_CONFIG).read_text()))
        else:
            text_encoder = build_text_encoder(cfg.condition, "cpu")
        text_encoder.load_state_dict(load_file(str(f)), strict=True)
    model = ConditionedDiT(dit, text_encoder).to(device).eval().requires_grad_(False)
    return model, cfg
