"""What inference needs from a recipe: VAE, text/class conditioning and sampling defaults (no torch here).

These sections are shared by the training recipe (``dit_video.train.config.TrainConfig`` composes
them with ``data``, ``optim`` and ``train``) and by an export directory, whose saved
``train_config.yaml`` is read back by :func:`recipe_from_yaml` into a :class:`PipelineConfig`: the
training-only sections are ignored, any other unknown key is an error naming it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

from ..config import VideoDiTConfig
from ..diffusion.config import DiffusionConfig

VAE_KINDS = ("identity", "diffusers")
TEXT_KINDS = ("none", "tiny", "hf")
# sections of a saved training recipe that inference does not read
TRAINING_SECTIONS = ("data", "optim", "train", "parallel")


@dataclass
class VAEConfig:
    """Where latents come from: ``identity`` (pixel space) or a diffusers ``AutoencoderKL`` at a local path."""

    kind: str = "identity"
    path: str | None = None
    scaling_factor: float | None = None  # None: the VAE's own


@dataclass
class ConditionConfig:
    """How captions become conditions (see :class:`dit_video.pipeline.Conditioner`).

    ``text_encoder``: ``none`` (unconditional or class-conditioned model), ``tiny`` (a small
    learned encoder trained jointly with the model and saved with it) or ``hf`` (a frozen Hugging
    Face encoder from ``text_path``). For ``model.conditioning=class`` the caption of a clip must
    be one of ``class_names``; its index is the label.
    """

    text_encoder: str = "none"
    text_path: str | None = None
    max_length: int = 16
    tiny_dim: int | None = None  # width of the tiny encoder's token states; None: model.caption_channels
    tiny_vocab: list[str] = field(default_factory=list)  # words it knows; empty: the synthetic clips' words
    tiny_layers: int = 1
    tiny_heads: int = 4
    embedding_cache: str | None = None  # hf encoder: on-disk cache directory
    class_names: list[str] = field(default_factory=list)


@dataclass
class SampleConfig:
    """Periodic sample videos during training (and the defaults of ``dit-video sample``)."""

    every: int = 0  # steps between sample videos; 0: only at the end if prompts are given
    prompts: list[str] = field(default_factory=list)
    sampler: str | None = None  # None: the objective's default (euler for flow, ddim for eps/v)
    steps: int = 20
    guidance_scale: float = 1.0
    # the noise levels (flow u; DDPM t / num_train_timesteps) where guidance applies; elsewhere one conditional
    # call. [0, 1]: everywhere. The CPU demo guides u >= 0.3 only (see configs/train/demo.yaml)
    guidance_interval: list[float] = field(default_factory=lambda: [0.0, 1.0])
    seed: int = 0
    fps: int = 8
    eval: bool = False  # score the periodic samples with dit_video.eval and log the figures


@dataclass
class PipelineConfig:
    """The sections of a recipe that sampling reads."""

    model: VideoDiTConfig = field(default_factory=lambda: VideoDiTConfig.from_preset("tiny"))
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    vae: VAEConfig = field(default_factory=VAEConfig)
    condition: ConditionConfig = field(default_factory=ConditionConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)

    def validate(self, training: bool = False) -> PipelineConfig:
        """Cross-section checks; raises ``ValueError`` naming the keys (``training``: the stricter checks
        a training recipe needs, e.g. class names to map captions to labels)."""
        if self.vae.kind not in VAE_KINDS:
            raise ValueError(f"vae.kind must be one of {VAE_KINDS}, got {self.vae.kind!r}")
        if self.vae.kind == "diffusers" and not self.vae.path:
            raise ValueError("vae.kind=diffusers needs vae.path (a local diffusers AutoencoderKL directory)")
        if self.vae.kind == "identity" and self.model.in_channels != 3:
            raise ValueError(f"pixel space (vae.kind=identity) needs model.in_channels=3, got {self.model.in_channels}")
        check_conditioning(self.model, self.condition, training)
        s = self.sample
        if s.steps < 1:
            raise ValueError(f"sample.steps must be >= 1, got {s.steps}")
        if s.every < 0 or s.fps < 1:
            raise ValueError(f"sample.every must be >= 0 and sample.fps >= 1, got {s.every} and {s.fps}")
        gi = list(s.guidance_interval)
        if len(gi) != 2 or not 0.0 <= gi[0] <= gi[1] <= 1.0:
            raise ValueError(f"sample.guidance_interval must be [lo, hi] with 0 <= lo <= hi <= 1, got {gi}")
        return self


def tiny_dim(model: VideoDiTConfig, condition: ConditionConfig) -> int:
    """The tiny encoder's width: ``condition.tiny_dim`` if set, else ``model.caption_channels``."""
    return model.caption_channels if condition.tiny_dim is None else condition.tiny_dim


def check_conditioning(model: VideoDiTConfig, c: ConditionConfig, training: bool = False) -> None:
    """Do a model section and a condition section agree? ``ValueError`` naming the keys.

    ``training``: captions must map to labels, so a class model needs all its class names (for
    sampling by class id they may be absent).

    The one place that decides which (model.conditioning, condition.text_encoder) pairs exist;
    :class:`dit_video.pipeline.Conditioner` implements them.
    """
    if c.text_encoder not in TEXT_KINDS:
        raise ValueError(f"condition.text_encoder must be one of {TEXT_KINDS}, got {c.text_encoder!r}")
    if model.conditioning == "text" and c.text_encoder == "none":
        raise ValueError("model.conditioning=text needs condition.text_encoder=tiny or hf")
    if model.conditioning != "text" and c.text_encoder != "none":
        raise ValueError(f"condition.text_encoder={c.text_encoder!r} needs model.conditioning=text "
                         f"(got {model.conditioning!r})")
    if c.text_encoder == "tiny" and c.tiny_dim is not None and model.caption_channels != c.tiny_dim:
        raise ValueError(f"model.caption_channels ({model.caption_channels}) must equal condition.tiny_dim "
                         f"({c.tiny_dim}), the tiny text encoder's width (or leave condition.tiny_dim unset)")
    if c.text_encoder == "hf" and not c.text_path:
        raise ValueError("condition.text_encoder=hf needs condition.text_path (a local model directory)")
    if model.conditioning == "class" and (training or c.class_names) and len(c.class_names) != model.num_classes:
        raise ValueError(f"model.conditioning=class needs condition.class_names with model.num_classes="
                         f"{model.num_classes} entries (captions are matched to them), got {len(c.class_names)}")
    if c.max_length < 1:
        raise ValueError(f"condition.max_length must be >= 1, got {c.max_length}")


class ConfigError(ValueError):
    """omegaconf's error on a recipe, as one line: ``model.foo: Key 'foo' not in 'VideoDiTConfig'``."""

    def __init__(self, e: OmegaConfBaseException, where: str = "config"):
        key = getattr(e, "full_key", None)
        msg = str(getattr(e, "msg", None) or e).strip().splitlines()[0]
        kind = "unknown key" if isinstance(e, (ConfigKeyError, ConfigAttributeError)) else "bad value"
        super().__init__(f"{where} {kind} {key}: {msg}" if key else f"{where} error: {msg}")
        self.key = key


def as_container(cfg: DictConfig | dict | None) -> dict[str, Any]:
    """A plain dict of a DictConfig, without resolving interpolations."""
    if cfg is None:
        return {}
    if isinstance(cfg, DictConfig):
        return OmegaConf.to_container(cfg, resolve=False)  # type: ignore[return-value]
    return dict(cfg)


def recipe_from_yaml(text: str, where: str = "recipe") -> PipelineConfig:
    """A saved (resolved) training recipe -> :class:`PipelineConfig`; one-line errors naming the key."""
    from .safe_yaml import load_yaml_mapping

    d = load_yaml_mapping(text, where)
    sections = PipelineConfig.__dataclass_fields__
    unknown = sorted(k for k in d if k not in sections and k not in TRAINING_SECTIONS)
    if unknown:
        raise ValueError(f"{where}: unknown section(s) {unknown}; expected {sorted(sections)} (and the training "
                         f"sections {list(TRAINING_SECTIONS)})")
    d = {k: v for k, v in d.items() if k in sections}
    try:
        merged = OmegaConf.merge(OmegaConf.structured(PipelineConfig), d)
        cfg: PipelineConfig = OmegaConf.to_object(merged)  # type: ignore[assignment]
    except OmegaConfBaseException as e:
        raise ConfigError(e, where) from e
    except ValueError as e:  # a dataclass __post_init__ check (VideoDiTConfig, DiffusionConfig)
        raise ValueError(f"{where}: {e}") from e
    return cfg.validate()
