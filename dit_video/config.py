"""Configuration schemas: dataclasses usable as omegaconf structured configs.

No model code here. ``VideoDiTConfig`` describes the backbone; presets mirror Latte's sizes
(S/2, B/2, L/2, XL/2) plus ``tiny`` for the CPU demo. :data:`PRESETS` is the one place they live
(a recipe names one as ``model.preset``; ``dit-video info --preset NAME --yaml`` prints it as YAML).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

_CHOICES = {
    "attention": ("factorized", "full"),
    "positions": ("sincos", "rope3d"),
    "temporal_position": ("first_temporal", "input"),
    "modulation": ("adaln_zero", "adaln_single"),
    "conditioning": ("none", "text", "class"),
    "kernel_backend": ("auto", "torch", "triton", "cuda", "cpu", "flash"),
    "recompute": ("none", "mlp", "norms", "block"),
}


@dataclass
class VideoDiTConfig:
    """Architecture of a spatiotemporal, patchified video DiT.

    ``depth`` counts all blocks. With ``attention="factorized"`` they alternate spatial
    (within a frame) and temporal (across frames at one position), starting with spatial, so
    depth must be even; with ``"full"`` every block attends over all T'*S tokens.
    """

    in_channels: int = 4
    out_channels: int | None = None  # default: in_channels (x2 with learn_sigma)
    num_frames: int = 16  # frames the temporal position table is built for
    sample_size: list[int] = field(default_factory=lambda: [32, 32])  # [H, W] of the input
    patch_size: list[int] = field(default_factory=lambda: [1, 2, 2])  # (pt, ph, pw)
    hidden_size: int = 384
    depth: int = 12
    num_heads: int = 6
    mlp_ratio: float = 4.0
    attention: str = "factorized"
    positions: str = "sincos"
    # sincos frame index: added with the spatial table at the input (default), so every block (spatial
    # attention, text cross-attention, every MLP) knows the frame, or once before the first temporal block
    # (Latte's layout; its presets and converted weights use it). Measured: from pure noise the model can
    # only place an object frame by frame (its motion) if it knows the frame: a class model trained at u = 1
    # only (16x16x4, depth 4, 1500 steps) predicts the data's +3.8 px shift as +3.2 / +2.5 px with
    # "input" and +0.0 / +0.1 px with "first_temporal" (README "The demo")
    temporal_position: str = "input"
    modulation: str = "adaln_zero"
    conditioning: str = "none"
    num_classes: int = 0  # class conditioning; index num_classes is the null (CFG) class
    caption_channels: int = 0  # text conditioning: width of the text encoder's token states
    # text conditioning: also add the caption's pooled state (masked mean of its projected tokens, through a
    # linear) to the timestep embedding, so every block's adaLN sees the caption, not only the cross-attention
    # (SD3 / Flux add a pooled text vector the same way). Measured on the CPU demo's task (32 captions, 3000
    # steps): with 2 cross-attentions only, the model ignores the shape word (its effect on the x0 prediction
    # of held-out clips at u 0.5-0.8: +0.06 of 1) and draws the same blob for "square" and "circle"; pooled:
    # +0.10 (velocity), +0.27 / +0.31 (x0 prediction, 2 seeds). Off by default: converted weights lack it
    pooled_text: bool = False
    learn_sigma: bool = False
    qk_norm: bool = False
    gradient_checkpointing: bool = False
    # activation memory (training): "none" saves what autograd saves; "mlp" recomputes each block's MLP
    # (adaLN, fc1, GELU) in backward from its input; "norms" also recomputes the attention's adaLN and
    # gates its output projection without saving it (dit_video.kernels lean ops) and recomputes the text
    # cross-attention (q, o, log-sum-exp) from its input; "block" checkpoints
    # whole blocks (= gradient_checkpointing). Measured: README "## Benchmarks", activation memory
    recompute: str = "none"
    norm_eps: float = 1e-6
    frequency_embedding_size: int = 256
    rope_theta: float = 10000.0
    # sincos position tables, diffusers PatchEmbed semantics: grid / (grid / base) / interp
    pos_base_size: int | None = None  # default: sample_size[0] // ph
    pos_interpolation_scale: float = 1.0
    kernel_backend: str = "auto"

    def __post_init__(self) -> None:
        _check_types(self)
        self.sample_size = list(self.sample_size)
        self.patch_size = list(self.patch_size)
        for key in ("in_channels", "num_frames", "hidden_size", "depth", "num_heads", "frequency_embedding_size"):
            if getattr(self, key) < 1:
                raise ValueError(f"VideoDiTConfig.{key} must be >= 1, got {getattr(self, key)}")
        if self.out_channels is not None and self.out_channels < 1:
            raise ValueError(f"VideoDiTConfig.out_channels must be >= 1 (or null), got {self.out_channels}")
        if min(self.sample_size) < 1 or self.num_classes < 0 or self.caption_channels < 0:
            raise ValueError("VideoDiTConfig.sample_size must be positive, num_classes and caption_channels >= 0")
        if self.mlp_ratio <= 0 or self.norm_eps <= 0 or self.rope_theta <= 0 or self.pos_interpolation_scale <= 0:
            raise ValueError("VideoDiTConfig.mlp_ratio, norm_eps, rope_theta and pos_interpolation_scale must be > 0")
        if self.frequency_embedding_size % 2:
            raise ValueError(f"VideoDiTConfig.frequency_embedding_size must be even, got "
                             f"{self.frequency_embedding_size}")
        for key, allowed in _CHOICES.items():
            if getattr(self, key) not in allowed:
                raise ValueError(f"VideoDiTConfig.{key} must be one of {allowed}, got {getattr(self, key)!r}")
        if len(self.patch_size) != 3 or min(self.patch_size) < 1:
            raise ValueError(f"patch_size must be three positive ints (pt, ph, pw), got {self.patch_size}")
        if len(self.sample_size) != 2:
            raise ValueError(f"sample_size must be [H, W], got {self.sample_size}")
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}")
        if self.attention == "factorized" and self.depth % 2:
            raise ValueError(f"factorized attention alternates spatial/temporal blocks: depth must be even, "
                             f"got {self.depth}")
        if self.conditioning == "class" and self.num_classes < 1:
            raise ValueError("conditioning='class' needs num_classes >= 1")
        if self.pooled_text and self.conditioning != "text":
            raise ValueError(f"VideoDiTConfig.pooled_text needs conditioning='text', got {self.conditioning!r}")
        if self.conditioning == "text" and self.caption_channels < 1:
            raise ValueError("conditioning='text' needs caption_channels >= 1 (the text encoder's width)")
        if self.positions == "rope3d" and self.head_dim % 2:
            raise ValueError(f"positions='rope3d' needs an even head_dim, got {self.head_dim}")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def token_grid(self) -> tuple[int, int, int]:
        """(T', h, w): latent frames and rows x columns of patches at ``num_frames`` x ``sample_size``."""
        pt, ph, pw = self.patch_size
        return self.num_frames // pt, self.sample_size[0] // ph, self.sample_size[1] // pw

    @property
    def out_dim(self) -> int:
        if self.out_channels is not None:
            return self.out_channels
        return self.in_channels * (2 if self.learn_sigma else 1)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> VideoDiTConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown VideoDiTConfig keys {unknown}; known keys: {sorted(known)}")
        return cls(**d)

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> VideoDiTConfig:
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; available: {sorted(PRESETS)}")
        d = dict(PRESETS[name])
        d.update(overrides)
        return cls.from_dict(d)


def _check_types(cfg: VideoDiTConfig) -> None:
    """Each field has the type its annotation names (a config.json typed by hand: ``"depth": "12"``)."""
    for f in dataclasses.fields(cfg):
        v, ann = getattr(cfg, f.name), str(f.type)
        optional = ann.endswith("| None")
        base = ann.replace(" | None", "")
        if v is None and optional:
            continue

        def is_int(x) -> bool:
            return isinstance(x, int) and not isinstance(x, bool)

        ok = {"int": is_int(v), "float": is_int(v) or isinstance(v, float), "bool": isinstance(v, bool),
              "str": isinstance(v, str),
              "list[int]": isinstance(v, (list, tuple)) and all(is_int(x) for x in v)}.get(base, True)
        if not ok:
            raise ValueError(f"VideoDiTConfig.{f.name} must be {ann}, got {v!r} ({type(v).__name__})")


# Latte's sizes (Ma et al. 2024, Table: S/B/L/XL with 2x2 patches, 16 frames of 32x32 latents),
# class-conditional on UCF-101 with learned sigma, as in the original repository.
_LATTE = dict(in_channels=4, num_frames=16, sample_size=[32, 32], patch_size=[1, 2, 2],
              conditioning="class", num_classes=101, learn_sigma=True, modulation="adaln_zero",
              temporal_position="first_temporal")
PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(in_channels=3, num_frames=8, sample_size=[32, 32], patch_size=[1, 4, 4],
                 hidden_size=128, depth=6, num_heads=4, conditioning="none"),
    "S/2": dict(_LATTE, hidden_size=384, depth=12, num_heads=6),
    "B/2": dict(_LATTE, hidden_size=768, depth=12, num_heads=12),
    "L/2": dict(_LATTE, hidden_size=1024, depth=24, num_heads=16),
    "XL/2": dict(_LATTE, hidden_size=1152, depth=28, num_heads=16),
}
