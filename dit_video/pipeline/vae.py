"""The VAE a recipe names: pixel space (identity) or a local diffusers autoencoder."""

from __future__ import annotations

from typing import Any

import torch

from ..config import VideoDiTConfig
from .config import VAEConfig


def build_vae(vae: VAEConfig, device: torch.device | str = "cpu") -> Any:
    from ..encoders import DiffusersVAE, IdentityVAE

    if vae.kind == "identity":
        return IdentityVAE()
    kw = {} if vae.scaling_factor is None else {"scaling_factor": vae.scaling_factor}
    return DiffusersVAE.from_local(vae.path, device=device, **kw)


def pixel_size(vae: Any, model: VideoDiTConfig) -> tuple[int, int]:
    """(H, W) of the videos a model's latents decode to."""
    sd = int(getattr(vae, "spatial_downsample", 1))
    return model.sample_size[0] * sd, model.sample_size[1] * sd
