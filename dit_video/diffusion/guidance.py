"""Classifier-free guidance at sampling time (the condition dropout in training is the trainer's)."""

from __future__ import annotations

from collections.abc import Callable

import torch


def cfg_combine(cond: torch.Tensor, uncond: torch.Tensor, scale: float) -> torch.Tensor:
    """``uncond + scale (cond - uncond)`` (Ho & Salimans 2022); exactly ``cond`` at scale 1."""
    if scale == 1.0:
        return cond
    return uncond + scale * (cond - uncond)


def guided(model_fn: Callable[..., torch.Tensor], uncond_model_fn: Callable[..., torch.Tensor] | None,
           scale: float) -> Callable[..., torch.Tensor]:
    """A ``model_fn`` whose prediction is guided; at scale 1 it is ``model_fn`` itself (one call)."""
    if scale == 1.0:
        return model_fn
    if uncond_model_fn is None:
        raise ValueError(f"guidance_scale={scale} needs an unconditional model_fn")

    def fn(x: torch.Tensor, t: torch.Tensor, cond_mask: torch.Tensor | None = None) -> torch.Tensor:
        return cfg_combine(model_fn(x, t, cond_mask=cond_mask), uncond_model_fn(x, t, cond_mask=cond_mask), scale)

    return fn


def cfg_drop_mask(batch: int, p: float, generator: torch.Generator | None = None,
                  device: torch.device | str = "cpu") -> torch.Tensor:
    """bool ``[B]``: which clips get their condition dropped (replaced by the null text/label) in training,
    each with probability ``p`` (``DiffusionConfig.cfg_dropout``)."""
    from .timesteps import rand

    return rand((batch,), generator, device) < p
