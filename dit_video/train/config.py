"""``TrainConfig``: the schema of a training recipe (``configs/train/*.yaml``). No torch here.

A recipe is YAML merged onto these dataclasses with omegaconf, then CLI dotlist overrides
(``train.steps=100 optim.lr=3e-4``) on top. An unknown key or a value of the wrong type fails
with omegaconf's error, which names the key and the expected type. No resolver runs (``${oc.env:..}``
and the like are refused, see :mod:`dit_video.pipeline.safe_yaml`) and nothing is instantiated from
YAML: the recipe holds names and numbers only. The inference sections (``vae``, ``condition``,
``sample``) are defined in :mod:`dit_video.pipeline.config`.

The model section accepts one extra key, ``model.preset`` (``tiny``, ``S/2``, ...): the preset's
values are applied first and the section's other keys override them.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ..config import PRESETS, VideoDiTConfig
from ..data.config import DataConfig
from ..diffusion.config import DiffusionConfig
from ..pipeline.config import ConditionConfig, ConfigError, PipelineConfig, SampleConfig, VAEConfig
from ..pipeline.safe_yaml import check_no_resolvers, load_dotlist, load_yaml_mapping

__all__ = ["CONFIG_ROOT", "ConditionConfig", "ConfigError", "OptimConfig", "RunConfig", "SampleConfig", "TrainConfig",
           "VAEConfig", "config_to_yaml", "load_train_config", "resolve_deepspeed_json"]

PRECISIONS = ("fp32", "bf16", "auto")
NONFINITE_POLICIES = ("skip", "stop")
CONFIG_ROOT = Path(__file__).resolve().parents[2] / "configs"


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
class RunConfig:
    """The loop: length, batching, precision, DeepSpeed, checkpoints, EMA, logging."""

    out_dir: str = "runs/train"
    steps: int = 1000
    grad_accum: int = 1
    seed: int = 0
    deterministic: bool = False  # torch.use_deterministic_algorithms + fixed threads: bitwise resume
    deepspeed: str = "zero2_fp32"  # a name in configs/deepspeed/ or a path to a DeepSpeed JSON
    zero_stage: int | None = None  # overrides the JSON's zero_optimization.stage
    # "fp32" | "bf16" | "auto" (bf16 where its GEMM is measured faster here: train/precision.py); overrides
    # the JSON's bf16.enabled
    precision: str | None = None
    ckpt_every: int = 500
    keep_last: int = 3  # complete checkpoints kept (0: all)
    ema_decay: float = 0.999
    ema_warmup: bool = True  # decay min(ema_decay, (1 + step) / (10 + step)) early on
    log_every: int = 10
    progress: bool = True  # tqdm bar on rank 0
    max_minutes: float | None = None  # stop (with a checkpoint) after this much wall time
    threads: int | None = None  # torch CPU threads; None: torch's default; 0: auto (1 on a busy machine)
    # a step whose loss or gradients are not finite is never applied (parameters, optimizer and EMA stay
    # bitwise unchanged; counted and logged). "stop": raise once max_skips_in_row such steps come in a row,
    # naming the step and the clip keys; "skip": go on skipping however many come.
    nonfinite: str = "stop"
    max_skips_in_row: int = 5
    spike_factor: float | None = 10.0  # log a loss > spike_factor x the running median (null: off)
    comm_timeout_minutes: float = 30.0  # a collective waiting this long for a missing rank fails the job


@dataclass
class ParallelConfig:
    """How ranks share work beyond data parallelism (see :mod:`dit_video.parallel`)."""

    sequence_parallel: int = 1  # ranks that share one clip (DSP for factorized attention, Ulysses for full)


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
    parallel: ParallelConfig = field(default_factory=ParallelConfig)

    def pipeline_config(self) -> PipelineConfig:
        """The sections sampling reads (shared objects, not copies)."""
        return PipelineConfig(model=self.model, diffusion=self.diffusion, vae=self.vae, condition=self.condition,
                              sample=self.sample)

    def validate(self) -> TrainConfig:
        """Cross-section checks omegaconf cannot do; raises ``ValueError`` naming the keys."""
        m, t = self.model, self.train
        self.pipeline_config().validate(training=True)
        if t.precision is not None and t.precision not in PRECISIONS:
            raise ValueError(f"train.precision must be one of {PRECISIONS} or null, got {t.precision!r}")
        if t.zero_stage is not None and t.zero_stage not in (0, 1, 2, 3):
            raise ValueError(f"train.zero_stage must be 0, 1, 2 or 3, got {t.zero_stage}")
        for key in ("steps", "grad_accum", "ckpt_every", "log_every", "max_skips_in_row"):
            if getattr(t, key) < 1:
                raise ValueError(f"train.{key} must be >= 1, got {getattr(t, key)}")
        if t.keep_last < 0:
            raise ValueError(f"train.keep_last must be >= 0 (0 keeps all), got {t.keep_last}")
        if t.nonfinite not in NONFINITE_POLICIES:
            raise ValueError(f"train.nonfinite must be one of {NONFINITE_POLICIES}, got {t.nonfinite!r}")
        if t.spike_factor is not None and t.spike_factor <= 1:
            raise ValueError(f"train.spike_factor must be > 1 (or null), got {t.spike_factor}")
        if not 0.0 <= t.ema_decay < 1.0:
            raise ValueError(f"train.ema_decay must be in [0, 1), got {t.ema_decay}")
        if t.comm_timeout_minutes <= 0:
            raise ValueError(f"train.comm_timeout_minutes must be > 0, got {t.comm_timeout_minutes}")
        if t.max_minutes is not None and t.max_minutes <= 0:
            raise ValueError(f"train.max_minutes must be > 0 (or null), got {t.max_minutes}")
        if self.data.num_frames != m.num_frames:
            raise ValueError(f"data.num_frames ({self.data.num_frames}) must equal model.num_frames "
                             f"({m.num_frames}) (leave data.num_frames unset to take the model's)")
        if self.vae.kind == "identity" and list(m.sample_size) != [self.data.size, self.data.size]:
            raise ValueError(f"pixel space (vae.kind=identity) needs model.sample_size=[{self.data.size}, "
                             f"{self.data.size}] (data.size), got {list(m.sample_size)} (leave data.size unset to "
                             "take the model's)")
        if self.optim.warmup_steps < 0 or not 0.0 <= self.optim.min_lr_ratio <= 1.0:
            raise ValueError("optim.warmup_steps must be >= 0 and optim.min_lr_ratio in [0, 1]")
        d = self.diffusion
        if (d.cond_frames > 0) != (d.cond_prob > 0):  # either alone trains no clip with given frames
            raise ValueError(f"diffusion.cond_frames={d.cond_frames} with diffusion.cond_prob={d.cond_prob} trains no "
                             "clip with given frames: set both (e.g. diffusion.cond_frames=4 diffusion.cond_prob=0.25)"
                             " or neither")
        if d.cond_frames >= m.num_frames:
            raise ValueError(f"clips of model.num_frames={m.num_frames} frames leave none to generate after "
                             f"diffusion.cond_frames={d.cond_frames} given ones: raise model.num_frames (the demo's "
                             "--frames) or lower diffusion.cond_frames (0 with diffusion.cond_prob=0: none given)")
        if self.parallel.sequence_parallel < 1:
            raise ValueError(f"parallel.sequence_parallel must be >= 1, got {self.parallel.sequence_parallel}")
        return self


def _pop_preset(d: dict[str, Any]) -> str | None:
    model = d.get("model")
    if isinstance(model, dict) and "preset" in model:
        return model.pop("preset")
    return None


def _is_set(layers: list[dict[str, Any]], section: str, key: str) -> bool:
    return any(isinstance(layer.get(section), dict) and key in layer[section] for layer in layers)


def load_train_config(path: str | os.PathLike | None = None, overrides: list[str] | None = None,
                      base: dict[str, Any] | None = None) -> TrainConfig:
    """YAML recipe (optional) + ``base`` dict (optional) + dotlist ``overrides`` -> validated ``TrainConfig``.

    Values that follow from the model are derived unless given: ``data.num_frames`` from
    ``model.num_frames``; in pixel space ``data.size`` from ``model.sample_size`` (square);
    ``condition.tiny_dim`` from ``model.caption_channels``. Given explicitly, they must agree.

    Raises ``FileNotFoundError`` for a missing recipe, :class:`ConfigError` (one line naming the key) for
    an unknown key or a wrong type, ``ValueError`` for an inconsistent recipe, invalid YAML or a resolver.
    """
    layers: list[dict[str, Any]] = []
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"training config {p} not found (recipes live in configs/train/)")
        layers.append(load_yaml_mapping(p))
    if base:
        layers.append(copy.deepcopy(dict(base)))
    if overrides:
        layers.append(load_dotlist(list(overrides)))
    for layer in layers:
        check_no_resolvers(layer, "recipe")
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
        derived: dict[str, Any] = {}
        if not _is_set(layers, "data", "num_frames"):
            derived["num_frames"] = merged.model.num_frames
        if not _is_set(layers, "data", "size") and merged.vae.kind == "identity":
            h, w = merged.model.sample_size
            if h != w:
                raise ValueError(f"pixel space needs a square model.sample_size (data crops squares), got [{h}, {w}]")
            derived["size"] = h
        if derived:
            merged = OmegaConf.merge(merged, {"data": derived})
        cfg: TrainConfig = OmegaConf.to_object(merged)  # type: ignore[assignment]
    except OmegaConfBaseException as e:  # unknown key / wrong type: one line naming the key
        raise ConfigError(e) from e
    return cfg.validate()


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
