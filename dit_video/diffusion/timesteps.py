"""Training-time randomness: timesteps (per clip or per frame), noise, conditioning-frame masks."""

from __future__ import annotations

import torch


def randn(shape, generator: torch.Generator | None, device, dtype=torch.float32) -> torch.Tensor:
    """``torch.randn`` drawn on the generator's device (CPU generators with CUDA tensors work)."""
    gdev = generator.device if generator is not None else device
    return torch.randn(shape, generator=generator, device=gdev, dtype=dtype).to(device)


def rand(shape, generator: torch.Generator | None, device, dtype=torch.float32) -> torch.Tensor:
    gdev = generator.device if generator is not None else device
    return torch.rand(shape, generator=generator, device=gdev, dtype=dtype).to(device)


def mode_warp(x: torch.Tensor, scale: float) -> torch.Tensor:
    """SD3's mode sampling (Esser et al. 2024, eq. 20): ``1 - x - scale (cos^2(pi x / 2) - 1 + x)`` for
    uniform ``x``; ``scale = 0`` is uniform, ``scale > 0`` puts more weight in the middle, ``scale < 0`` at the ends.
    Monotone (a density) for ``-1 <= scale <= 2 / (pi - 2)``."""
    return 1 - x - scale * (torch.cos(torch.pi / 2 * x) ** 2 - 1 + x)


def sample_unit_time(shape, kind: str, mean: float, std: float, generator: torch.Generator | None,
                     device, mode_scale: float = 0.0, uniform_share: float = 0.0) -> torch.Tensor:
    """``u`` in the open interval (0, 1): ``uniform``, ``logit_normal`` (``sigmoid(N(mean, std^2))``) or
    ``mode`` (:func:`mode_warp` of a uniform draw with ``mode_scale``); with ``uniform_share`` > 0 that
    share of the draws (each one with that probability) is uniform instead, a floor under every noise level."""
    if kind == "uniform":
        u = rand(shape, generator, device)
    elif kind == "logit_normal":
        u = torch.sigmoid(mean + std * randn(shape, generator, device))
    elif kind == "mode":
        u = mode_warp(rand(shape, generator, device), mode_scale)
    else:
        raise ValueError(f"unknown timestep_sampling {kind!r}; choose logit_normal, uniform or mode")
    if uniform_share > 0:
        pick = rand(shape, generator, device) < uniform_share
        u = torch.where(pick, rand(shape, generator, device), u)
    return u.clamp(1e-5, 1 - 1e-5)


def conditioning_mask(batch: int, frames: int, cond_frames: int, cond_prob: float,
                      generator: torch.Generator | None, device) -> torch.Tensor:
    """bool ``[B, T]``: row b has its first ``cond_frames`` frames True with probability ``cond_prob``."""
    if cond_frames >= frames:
        raise ValueError(f"cond_frames={cond_frames} must be smaller than the clip's {frames} frames "
                         "(at least one frame has to be generated)")
    rows = rand((batch,), generator, device) < cond_prob
    first = torch.arange(frames, device=device) < cond_frames
    return rows[:, None] & first[None, :]
