"""Diffusion processes, objectives and samplers for video DiTs.

>>> from dit_video.diffusion import DiffusionConfig, build_diffusion, SAMPLERS
>>> d = build_diffusion(DiffusionConfig(objective="flow"))
>>> loss, logs = d.training_loss(model_fn, x0)           # model_fn(x_t, t, cond_mask=None)
>>> video = d.sample(model_fn, (1, 3, 8, 32, 32), steps=30)
"""

from .config import DiffusionConfig
from .guidance import cfg_combine, cfg_drop_mask
from .objectives import Diffusion, EpsDiffusion, FlowMatching, GaussianDiffusion, VDiffusion, build_diffusion
from .samplers import DEFAULT_SAMPLER, SAMPLERS, Sampler, check_sampler
from .sampling import sample, sample_long

__all__ = [
    "DEFAULT_SAMPLER",
    "Diffusion",
    "DiffusionConfig",
    "EpsDiffusion",
    "FlowMatching",
    "GaussianDiffusion",
    "VDiffusion",
    "SAMPLERS",
    "Sampler",
    "build_diffusion",
    "cfg_combine",
    "cfg_drop_mask",
    "check_sampler",
    "sample",
    "sample_long",
]
