"""Sampling from a trained model: captions (or labels) -> videos in pixel space, [B, C, T, H, W] in [-1, 1].

:class:`SamplingPipeline` ties the backbone (in a :class:`ConditionedDiT`), the diffusion process,
the VAE and the :class:`Conditioner` together. It is used for the trainer's periodic samples (with
the EMA weights), by ``dit-video sample`` (on an export directory) and by the demo. It imports
nothing from ``dit_video.train``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from ..diffusion import build_diffusion
from .conditioner import ConditionedDiT, Conditioner
from .config import PipelineConfig
from .vae import build_vae

log = logging.getLogger(__name__)


class SamplingPipeline:
    """Generate clips; see :meth:`generate`."""

    def __init__(self, model: ConditionedDiT, recipe: PipelineConfig, vae: Any = None,
                 conditioner: Conditioner | None = None, device: torch.device | str = "cpu"):
        self.model = model.eval()
        self.recipe = recipe
        self.device = torch.device(device)
        self.diffusion = build_diffusion(recipe.diffusion)
        self.vae = vae if vae is not None else build_vae(recipe.vae, self.device)
        self.conditioner = conditioner if conditioner is not None else Conditioner(
            model.config, recipe.condition, device=self.device)

    @classmethod
    def from_pretrained(cls, directory: str | Path, device: torch.device | str = "cpu") -> SamplingPipeline:
        """An export directory (``dit-video export``): config.json + model.safetensors (+ text encoder, recipe)."""
        from .weights import load_export

        model, recipe = load_export(directory, device)
        return cls(model, recipe, device=device)

    def check_conditions(self, prompts: list[str] | None, labels: list[int] | None) -> int:
        """Validate prompts/labels against the model's conditioning; returns the batch size."""
        return self.conditioner.check(prompts, labels)

    @property
    def pixel_size(self) -> tuple[int, int]:
        from .vae import pixel_size

        return pixel_size(self.vae, self.model.config)

    @torch.no_grad()
    def generate(self, prompts: list[str] | None = None, labels: list[int] | None = None, *,
                 num_frames: int | None = None, steps: int = 20, sampler: str | None = None,
                 guidance_scale: float = 1.0, seed: int = 0, cond_video: torch.Tensor | None = None,
                 cond_frames: int = 0, progress: bool = False,
                 guidance_interval: tuple[float, float] | None = None, window: int | None = None) -> torch.Tensor:
        """Pixel-space clips [B, C, T, H, W] in [-1, 1], one per prompt/label (one for an unconditional model).

        ``cond_video`` [1 or B, C, k, H, W] in pixel space: continuation, its first ``cond_frames``
        frames are kept (exactly, in latent space). ``guidance_interval`` (lo, hi): guide only at noise levels in
        it (:func:`dit_video.diffusion.sampling.sample`; recipes: ``sample.guidance_interval``).

        Longer than trained: ``num_frames`` beyond the model's ``num_frames`` from a model trained for video
        prediction (the recipe's ``diffusion.cond_frames`` k > 0) is generated ``window`` frames at a time
        (default: the trained length), each window continuing the last k frames of the one before
        (:func:`~dit_video.diffusion.sampling.sample_long`); from any other model, in one pass at a length
        its temporal positions never saw (logged).
        """
        if steps < 1:
            raise ValueError(f"sampling steps must be >= 1, got {steps}")
        b = self.check_conditions(prompts, labels)
        mc = self.model.config
        cond, uncond = self.conditioner.sampling_kwargs(self.model, prompts, labels)
        if guidance_scale != 1.0 and uncond is None:
            raise ValueError("classifier-free guidance (--guidance != 1) needs a conditional model")
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
        kw = dict(sampler=sampler, steps=steps, generator=g, cond_video=latents_cond, cond_frames=cond_frames,
                  guidance_scale=guidance_scale, uncond_model_fn=uncond_fn if guidance_scale != 1.0 else None,
                  progress=progress, device=self.device, guidance_interval=guidance_interval)
        plan = self.windows(t, window)
        if plan is None:
            x = self.diffusion.sample(model_fn, shape, **kw)
        else:
            x = self.diffusion.sample_long(model_fn, shape, window=plan[0], overlap=plan[1], **kw)
        return self.vae.decode(x).clamp(-1, 1)

    def windows(self, num_frames: int, window: int | None = None) -> tuple[int, int] | None:
        """(window, overlap) in which :meth:`generate` makes ``num_frames`` latent frames, None for one pass."""
        trained, k = self.model.config.num_frames, self.recipe.diffusion.cond_frames
        if window is not None and not 0 < k < window:
            raise ValueError(f"window={window} needs a model trained for video prediction with diffusion.cond_frames "
                             f"in [1, window), this one has cond_frames={k}")
        if num_frames <= (window or trained):
            return None
        if k == 0:
            log.warning("generating %d frames in one pass from a model trained on %d (its recipe has "
                        "diffusion.cond_frames=0, so it cannot continue windows: train with diffusion.cond_frames "
                        "and diffusion.cond_prob to slide)", num_frames, trained)
            return None
        return window or trained, k

    def x0_at_noise(self, prompts: list[str] | None = None, labels: list[int] | None = None, *,
                    num_frames: int | None = None, draws: int = 8, seed: int = 0) -> torch.Tensor:
        """The model's clean-clip prediction at pure noise, averaged over ``draws`` noises, decoded to pixels
        [B, C, T, H, W] in [-1, 1]: what the model decided about each clip's layout (where the object is in
        every frame, i.e. its motion) before the sampler takes a step. The optimum is the data's conditional
        mean ``E[x0 | condition]`` (:meth:`dit_video.diffusion.Diffusion.x0_at_pure_noise`)."""
        b = self.check_conditions(prompts, labels)
        mc = self.model.config
        cond, _ = self.conditioner.sampling_kwargs(self.model, prompts, labels)
        dtype = next(self.model.parameters()).dtype
        shape = (b, mc.in_channels, num_frames or mc.num_frames, *mc.sample_size)
        g = torch.Generator(device=self.device).manual_seed(seed)
        with torch.no_grad():
            x0 = self.diffusion.x0_at_pure_noise(lambda x, t: self.model(x.to(dtype), t, **cond).float(), shape,
                                                 draws, g, self.device)
            return self.vae.decode(x0).clamp(-1, 1)
