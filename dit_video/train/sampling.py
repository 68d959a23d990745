"""Sampling from a trained model: captions (or labels) -> videos in pixel space, [B, C, T, H, W] in [-1, 1].

:class:`SamplingPipeline` ties the backbone (in a :class:`ConditionedDiT`), the diffusion process,
the VAE and the text encoder together. It is used for the trainer's periodic samples (with the
EMA weights), by ``dit-video sample`` (on an export directory) and by the demo.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..diffusion import DiffusionConfig, build_diffusion
from .conditioning import ConditionedDiT, build_text_encoder, build_vae
from .config import ConditionConfig, TrainConfig


class SamplingPipeline:
    """Generate clips; see :meth:`generate`."""

    def __init__(self, model: ConditionedDiT, diffusion_cfg: DiffusionConfig, condition: ConditionConfig,
                 vae: Any, frozen_text_encoder: Any = None, device: torch.device | str = "cpu",
                 recipe: TrainConfig | None = None):
        self.model = model.eval()
        self.recipe = recipe if recipe is not None else TrainConfig(model=model.config, diffusion=diffusion_cfg,
                                                                    condition=condition)
        self.diffusion = build_diffusion(diffusion_cfg)
        self.condition = condition
        self.vae = vae
        self.frozen_text_encoder = frozen_text_encoder
        self.device = torch.device(device)

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_pretrained(cls, directory: str | Path, device: torch.device | str = "cpu") -> SamplingPipeline:
        """An export directory (``dit-video export``): config.json + model.safetensors (+ text encoder, recipe)."""
        from .export import load_export

        model, cfg = load_export(directory, device)
        return cls.from_model(model, cfg, device)

    @classmethod
    def from_model(cls, model: ConditionedDiT, cfg: TrainConfig, device: torch.device | str = "cpu"
                   ) -> SamplingPipeline:
        frozen = None
        if cfg.condition.text_encoder == "hf":
            frozen = build_text_encoder(cfg.condition, device)
        return cls(model, cfg.diffusion, cfg.condition, build_vae(cfg.vae, device), frozen, device, cfg)

    # ------------------------------------------------------------------ conditions
    def check_conditions(self, prompts: list[str] | None, labels: list[int] | None) -> int:
        """Validate prompts/labels against the model's conditioning; returns the batch size."""
        mc = self.model.config
        if mc.conditioning == "text":
            if labels:
                raise ValueError("this model is text-conditioned: pass prompts, not labels")
            if not prompts:
                raise ValueError("this model is text-conditioned: give at least one prompt (--prompt)")
            return len(prompts)
        if mc.conditioning == "class":
            if prompts:
                names = self.condition.class_names
                hint = f" (classes: {names[:8]}{'...' if len(names) > 8 else ''})" if names else ""
                raise ValueError(f"this model is class-conditioned ({mc.num_classes} classes), it takes no prompt: "
                                 f"pass --label with a class id in [0, {mc.num_classes}){hint}")
            if not labels:
                raise ValueError(f"this model is class-conditioned: give --label (0..{mc.num_classes - 1})")
            bad = [x for x in labels if not 0 <= x < mc.num_classes]
            if bad:
                raise ValueError(f"labels {bad} out of range [0, {mc.num_classes})")
            return len(labels)
        if prompts or labels:
            raise ValueError("this model is unconditional: it takes no prompt and no label")
        return 1

    def _condition_kwargs(self, prompts: list[str] | None, labels: list[int] | None, b: int
                          ) -> tuple[dict[str, Any], dict[str, Any] | None]:
        mc = self.model.config
        if mc.conditioning == "text":
            with torch.no_grad():
                enc = self.model.text_encoder if self.model.text_encoder is not None else self.frozen_text_encoder
                text, mask = enc.encode(list(prompts))
            text, mask = text.to(self.device), mask.to(self.device)
            return {"text": text, "text_mask": mask}, {"text": text, "text_mask": torch.zeros_like(mask)}
        if mc.conditioning == "class":
            y = torch.tensor(labels, dtype=torch.long, device=self.device)
            return {"labels": y}, {"labels": torch.full_like(y, mc.num_classes)}
        return {}, None

    # ------------------------------------------------------------------ sampling
    @torch.no_grad()
    def generate(self, prompts: list[str] | None = None, labels: list[int] | None = None, *,
                 num_frames: int | None = None, steps: int = 20, sampler: str | None = None,
                 guidance_scale: float = 1.0, seed: int = 0, cond_video: torch.Tensor | None = None,
                 cond_frames: int = 0, progress: bool = False) -> torch.Tensor:
        """Pixel-space clips [B, C, T, H, W] in [-1, 1], one per prompt/label (one for an unconditional model).

        ``cond_video`` [1 or B, C, k, H, W] in pixel space: continuation, its first ``cond_frames``
        frames are kept (exactly, in latent space).
        """
        b = self.check_conditions(prompts, labels)
        mc = self.model.config
        cond, uncond = self._condition_kwargs(prompts, labels, b)
        if guidance_scale != 1.0 and uncond is None:
            raise ValueError("classifier-free guidance (--cfg != 1) needs a conditional model")
        t = num_frames or mc.num_frames
        shape = (b, mc.in_channels, t, *mc.sample_size)
        dtype = next(self.model.parameters()).dtype

        def model_fn(x, tt, cond_mask=None, kw=cond):
            return self.model(x.to(dtype), tt, cond_mask=cond_mask, **kw).float()

        uncond_fn = None if uncond is None else (lambda x, tt, cond_mask=None: model_fn(x, tt, cond_mask, uncond))
        latents_cond = None
        if cond_video is not None:
            latents_cond = self.vae.encode(cond_video.to(self.device, torch.float32))
        g = torch.Generator(device=self.device).manual_seed(seed)
        x = self.diffusion.sample(model_fn, shape, sampler=sampler, steps=steps, generator=g,
                                  cond_video=latents_cond, cond_frames=cond_frames, guidance_scale=guidance_scale,
                                  uncond_model_fn=uncond_fn if guidance_scale != 1.0 else None, progress=progress,
                                  device=self.device)
        return self.vae.decode(x).clamp(-1, 1)
