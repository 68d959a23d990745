"""``TrainConfig``: the schema of a training recipe (``configs/train/*.yaml``). No torch here.

A recipe is YAML merged onto these dataclasses with omegaconf, then CLI dotlist overrides
(``train.steps=100 optim.lr=3e-4``) on top. An unknown key or a value of the wrong type fails
with omegaconf's error, which names the key and the expected type. There are no ``eval``
resolvers and nothing is instantiated from YAML: the recipe holds names and numbers only.

The model section accepts one extra key, ``model.preset`` (``tiny``, ``S/2``, ...): the preset's
values are applied first and the section's other keys override them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

from ..config import PRESETS, VideoDiTConfig
from ..data.config import DataConfig
from ..diffusion.config import DiffusionConfig

VAE_KINDS = ("identity", "diffusers")
TEXT_KINDS = ("none", "tiny", "hf")
PRECISIONS = ("fp32", "bf16")
CONFIG_ROOT = Path(__file__).resolve().parents[2] / "configs"


@dataclass
class VAEConfig:
    """Where latents come from: ``identity`` (pixel space) or a diffusers ``AutoencoderKL`` at a local path."""

    kind: str = "identity"
    path: str | None = None
    scaling_factor: float | None = None  # None: the VAE's own


@dataclass
class ConditionConfig:
    """How captions become conditions.

    ``text_encoder``: ``none`` (unconditional or class-conditioned model), ``tiny`` (a small
    learned encoder trained jointly with the model and saved with it) or ``hf`` (a frozen Hugging
    Face encoder from ``text_path``). For ``model.conditioning=class`` the caption of a clip must
    be one of ``class_names``; its index is the label.
    """

    text_encoder: str = "none"
    text_path: str | None = None
    max_length: int = 16
    tiny_dim: int = 64  # width of the tiny encoder's token states (= model.caption_channels)
    tiny_vocab: list[str] = field(default_factory=list)  # words it knows; empty: the synthetic clips' words
    tiny_layers: int = 1
    tiny_heads: int = 4
    embedding_cache: str | None = None  # hf encoder: on-disk cache directory
    class_names: list[str] = field(default_factory=list)


@dataclass
class OptimConfig:
    """AdamW with linear warmup then cosine decay to ``min_lr_ratio * lr``."""

    lr: float = 1e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    weight_decay: float = 0.0
    warmup_steps: int = 100
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0  # 0: no clipping


@dataclass
class SampleConfig:
    """Periodic sample videos during training (and the defaults of ``dit-video sample``)."""

    every: int = 0  # steps between sample videos; 0: only at the end if prompts are given
    prompts: list[str] = field(default_factory=list)
    sampler: str | None = None  # None: the objective's default (euler for flow, ddim for eps/v)
    steps: int = 20
    guidance_scale: float = 1.0
    seed: int = 0
    fps: int = 8


@dataclass
class RunConfig:
    """The loop: length, batching, precision, DeepSpeed, checkpoints, EMA, logging."""

    out_dir: str = "runs/train"
    steps: int = 1000
    grad_accum: int = 1
    seed: int = 0
    deterministic: bool = False  # torch.use_deterministic_algorithms + fixed threads: bitwise resume
    deepspeed: str = "zero2_fp32"  # a name in configs/deepspeed/ or a path to a DeepSpeed JSON
    zero_stage: int | None = None  # overrides the JSON's zero_optimization.stage
    precision: str | None = None  # "fp32" | "bf16"; overrides the JSON's bf16.enabled
    ckpt_every: int = 500
    keep_last: int = 3  # complete checkpoints kept (0: all)
    ema_decay: float = 0.999
    ema_warmup: bool = True  # decay min(ema_decay, (1 + step) / (10 + step)) early on
    log_every: int = 10
    progress: bool = True  # tqdm bar on rank 0
    max_minutes: float | None = None  # stop (with a checkpoint) after this much wall time
    threads: int | None = None  # torch CPU threads; None: torch's default; 0: auto (1 on a busy machine)


@dataclass
class TrainConfig:
    """A full training recipe. See the module docstring for how YAML maps onto it."""

    model: VideoDiTConfig = field(default_factory=lambda: VideoDiTConfig.from_preset("tiny"))
    data: DataConfig = field(default_factory=DataConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    vae: VAEConfig = field(default_factory=VAEConfig)
    condition: ConditionConfig = field(default_factory=ConditionConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: RunConfig = field(default_factory=RunConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)

    def validate(self) -> TrainConfig:
        """Cross-section checks omegaconf cannot do; raises ``ValueError`` naming the keys."""
        c, m, t = self.condition, self.model, self.train
        if self.vae.kind not in VAE_KINDS:
            raise ValueError(f"vae.kind must be one of {VAE_KINDS}, got {self.vae.kind!r}")
        if self.vae.kind == "diffusers" and not self.vae.path:
            raise ValueError("vae.kind=diffusers needs vae.path (a local diffusers AutoencoderKL directory)")
        if c.text_encoder not in TEXT_KINDS:
            raise ValueError(f"condition.text_encoder must be one of {TEXT_KINDS}, got {c.text_encoder!r}")
        if m.conditioning == "text" and c.text_encoder == "none":
            raise ValueError("model.conditioning=text needs condition.text_encoder=tiny or hf")
        if m.conditioning != "text" and c.text_encoder != "none":
            raise ValueError(f"condition.text_encoder={c.text_encoder!r} needs model.conditioning=text "
                             f"(got {m.conditioning!r})")
        if c.text_encoder == "tiny" and m.caption_channels != c.tiny_dim:
            raise ValueError(f"model.caption_channels ({m.caption_channels}) must equal condition.tiny_dim "
                             f"({c.tiny_dim}), the tiny text encoder's width")
        if c.text_encoder == "hf" and not c.text_path:
            raise ValueError("condition.text_encoder=hf needs condition.text_path (a local model directory)")
        if m.conditioning == "class" and len(c.class_names) != m.num_classes:
            raise ValueError(f"model.conditioning=class needs condition.class_names with model.num_classes="
                             f"{m.num_classes} entries (captions are matched to them), got {len(c.class_names)}")
        if t.precision is not None and t.precision not in PRECISIONS:
            raise ValueError(f"train.precision must be one of {PRECISIONS} or null, got {t.precision!r}")
        if t.zero_stage is not None and t.zero_stage not in (0, 1, 2, 3):
            raise ValueError(f"train.zero_stage must be 0, 1, 2 or 3, got {t.zero_stage}")
        for key in ("steps", "grad_accum", "ckpt_every", "log_every"):
            if getattr(t, key) < 1:
                raise ValueError(f"train.{key} must be >= 1, got {getattr(t, key)}")
        if not 0.0 <= t.ema_decay < 1.0:
            raise ValueError(f"train.ema_decay must be in [0, 1), got {t.ema_decay}")
        if self.data.num_frames != m.num_frames:
            raise ValueError(f"data.num_frames ({self.data.num_frames}) must equal model.num_frames "
                             f"({m.num_frames})")
        if self.vae.kind == "identity":
            if m.in_channels != 3:
                raise ValueError(f"pixel space (vae.kind=identity) needs model.in_channels=3, got {m.in_channels}")
            if list(m.sample_size) != [self.data.size, self.data.size]:
                raise ValueError(f"pixel space (vae.kind=identity) needs model.sample_size=[{self.data.size}, "
                                 f"{self.data.size}] (data.size), got {list(m.sample_size)}")
        if self.optim.warmup_steps < 0 or not 0.0 <= self.optim.min_lr_ratio <= 1.0:
            raise ValueError("optim.warmup_steps must be >= 0 and optim.min_lr_ratio in [0, 1]")
        return self


def _as_container(cfg: DictConfig | dict | None) -> dict[str, Any]:
    if cfg is None:
        return {}
    if isinstance(cfg, DictConfig):
        return OmegaConf.to_container(cfg, resolve=False)  # type: ignore[return-value]
    return dict(cfg)


def _pop_preset(d: dict[str, Any]) -> str | None:
    model = d.get("model")
    if isinstance(model, dict) and "preset" in model:
        return model.pop("preset")
    return None


def load_train_config(path: str | os.PathLike | None = None, overrides: list[str] | None = None,
                      base: dict[str, Any] | None = None) -> TrainConfig:
    """YAML recipe (optional) + ``base`` dict (optional) + dotlist ``overrides`` -> validated ``TrainConfig``.

    Raises ``FileNotFoundError`` for a missing recipe, omegaconf's ``ConfigKeyError`` /
    ``ValidationError`` for an unknown key or a wrong type, ``ValueError`` for an inconsistent recipe.
    """
    layers: list[dict[str, Any]] = []
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"training config {p} not found (recipes live in configs/train/)")
        loaded = OmegaConf.load(p)
        if not isinstance(loaded, DictConfig):
            raise ValueError(f"{p} must hold a mapping of sections (model, data, train, ...)")
        layers.append(_as_container(loaded))
    if base:
        layers.append(_as_container(OmegaConf.create(base)))
    if overrides:
        bad = [o for o in overrides if "=" not in o]
        if bad:
            raise ValueError(f"overrides must be key=value (e.g. train.steps=100), got {bad}")
        layers.append(_as_container(OmegaConf.from_dotlist(list(overrides))))
    preset = None
    for layer in layers:
        preset = _pop_preset(layer) or preset
    schema = OmegaConf.structured(TrainConfig)
    if preset is not None:
        if preset not in PRESETS:
            raise ValueError(f"model.preset: unknown preset {preset!r}; available: {sorted(PRESETS)}")
        schema = OmegaConf.merge(schema, {"model": VideoDiTConfig.from_preset(preset).to_dict()})
    try:
        merged = OmegaConf.merge(schema, *layers) if layers else schema
        cfg: TrainConfig = OmegaConf.to_object(merged)  # type: ignore[assignment]
    except OmegaConfBaseException as e:  # unknown key / wrong type: one line naming the key
        raise ConfigError(e) from e
    return cfg.validate()


class ConfigError(ValueError):
    """omegaconf's error on a recipe, as one line: ``model.foo: Key 'foo' not in 'VideoDiTConfig'``."""

    def __init__(self, e: OmegaConfBaseException):
        key = getattr(e, "full_key", None)
        msg = str(getattr(e, "msg", None) or e).strip().splitlines()[0]
        kind = "unknown key" if isinstance(e, (ConfigKeyError, ConfigAttributeError)) else "bad value"
        super().__init__(f"config {kind} {key}: {msg}" if key else f"config error: {msg}")
        self.key = key


def config_to_yaml(cfg: TrainConfig) -> str:
    """The resolved recipe as YAML (saved next to every checkpoint and export)."""
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


def resolve_deepspeed_json(name: str, recipe_dir: Path | None = None) -> Path:
    """``zero2_fp32`` -> ``configs/deepspeed/zero2_fp32.json``; a path is used as given (or relative to the recipe)."""
    candidates = [Path(name)]
    if recipe_dir is not None:
        candidates.append(recipe_dir / name)
    stem = name if name.endswith(".json") else f"{name}.json"
    candidates.append(CONFIG_ROOT / "deepspeed" / stem)
    for c in candidates:
        if c.is_file():
            return c
    known = sorted(p.stem for p in (CONFIG_ROOT / "deepspeed").glob("*.json"))
    raise FileNotFoundError(f"DeepSpeed config {name!r} not found (train.deepspeed: a path or one of {known})")
