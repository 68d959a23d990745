"""Export directories: the weights and recipe a trained model is shared and sampled with.

    OUT/config.json               VideoDiTConfig (``VideoDiT.from_pretrained(OUT)`` loads the backbone)
    OUT/model.safetensors         backbone weights (the EMA of a training run)
    OUT/text_encoder.safetensors  learned text encoder weights (``condition.text_encoder=tiny`` only)
    OUT/text_encoder.json         its constructor arguments (vocabulary included)
    OUT/train_config.yaml         the resolved recipe: diffusion, VAE, conditioning, sampling defaults

:func:`write_export` writes one (``dit-video export`` calls it with a checkpoint's EMA);
:func:`load_export` reads one back as a :class:`ConditionedDiT` plus its :class:`PipelineConfig`.
Everything read is safetensors or JSON/YAML (never pickle); a damaged file is a one-line error.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..config import VideoDiTConfig
from ..models import VideoDiT
from .conditioner import ConditionedDiT, Conditioner
from .config import PipelineConfig, recipe_from_yaml

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


def write_export(state: dict[str, torch.Tensor], recipe_yaml: str, out: str | Path, source: str = "") -> Path:
    """A ConditionedDiT state dict + the resolved recipe YAML -> export directory ``out``."""
    from safetensors.torch import save_file

    recipe = recipe_from_yaml(recipe_yaml, "the recipe to export")
    dit, text = split_state(state)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(recipe.model.to_dict(), indent=2))
    save_file({k: v.contiguous() for k, v in dit.items()}, str(out / "model.safetensors"))
    if text:
        enc = Conditioner(recipe.model, recipe.condition).new_learned_encoder()
        if enc is None:
            raise ValueError("the state holds text encoder weights but the recipe's encoder is not learned")
        save_file({k: v.contiguous() for k, v in text.items()}, str(out / TEXT_ENCODER_FILE))
        (out / TEXT_ENCODER_CONFIG).write_text(json.dumps(enc.config_dict(), indent=2))
    (out / RECIPE_FILE).write_text(recipe_yaml)
    if source:
        (out / "source.txt").write_text(source + "\n")
    return out


def _read_json(path: Path) -> dict:
    try:
        d = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise ValueError(f"{path} is not readable JSON ({type(e).__name__}: {e})") from e
    if not isinstance(d, dict):
        raise ValueError(f"{path} must hold a JSON object, got {type(d).__name__}")
    return d


def load_export(directory: str | Path, device: torch.device | str = "cpu") -> tuple[ConditionedDiT, PipelineConfig]:
    """An export directory -> (:class:`ConditionedDiT` in eval mode, the recipe :class:`PipelineConfig`)."""
    d = Path(directory)
    if not d.is_dir():
        raise FileNotFoundError(f"weights directory {d} not found (make one with `dit-video export CKPT OUT`)")
    dit = VideoDiT.from_pretrained(d)
    recipe_path = d / RECIPE_FILE
    if recipe_path.is_file():
        try:
            text = recipe_path.read_text()
        except (OSError, UnicodeDecodeError) as e:
            raise ValueError(f"{recipe_path} is not readable ({type(e).__name__})") from e
        cfg = recipe_from_yaml(text, str(recipe_path))
        cfg.model = dit.config
    else:  # plain VideoDiT.save_pretrained weights: default diffusion, pixel space, no text encoder
        cfg = PipelineConfig(model=VideoDiTConfig.from_dict(dit.config.to_dict()))
        if dit.config.conditioning == "text":
            raise FileNotFoundError(f"{recipe_path} not found: a text-conditioned model needs its recipe to rebuild "
                                    "the text encoder (use a directory written by `dit-video export`)")
    cfg.validate()
    text_encoder = None
    if cfg.model.conditioning == "text" and cfg.condition.text_encoder == "tiny":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        f = d / TEXT_ENCODER_FILE
        if not f.is_file():
            raise FileNotFoundError(f"{f} not found: the model was trained with a learned text encoder")
        if (d / TEXT_ENCODER_CONFIG).is_file():
            from ..encoders import TinyTextEncoder

            tc = _read_json(d / TEXT_ENCODER_CONFIG)
            try:
                text_encoder = TinyTextEncoder.from_config(tc)
            except TypeError as e:
                raise ValueError(f"{d / TEXT_ENCODER_CONFIG}: {e}") from e
        else:
            text_encoder = Conditioner(cfg.model, cfg.condition).new_learned_encoder()
        try:
            state = load_file(str(f))
        except (SafetensorError, OSError) as e:
            raise ValueError(f"{f} is damaged or truncated ({type(e).__name__}: {e})") from e
        try:
            text_encoder.load_state_dict(state, strict=True)
        except RuntimeError as e:
            raise ValueError(f"{f} does not match {TEXT_ENCODER_CONFIG}: {str(e).splitlines()[0]}") from e
    model = ConditionedDiT(dit, text_encoder).to(device).eval().requires_grad_(False)
    return model, cfg
