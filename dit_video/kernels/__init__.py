"""Fused ops for video DiTs, with pluggable backends (torch, triton, cuda, cpu, flash).

Public API::

    from dit_video.kernels import attention, adaln_modulate, gated_residual_adaln, rope3d, gelu_tanh
    from dit_video.kernels import gated_linear, adaln_linear, adaln_mlp   # memory-lean block ops
    from dit_video.kernels import use_backend, available, auto_decisions

See ``dispatch.py`` for how backends register and are chosen. This package imports nothing
from the rest of ``dit_video``. ``auto`` times the implementations that can serve a call once per
layout and keeps the fastest (``autotune.py``); ``auto_decisions()`` lists what it chose and why.
"""

from .autotune import decisions as auto_decisions
from .dispatch import BACKENDS, BackendUnavailable, available, current_backend, register, resolve, use_backend
from .ops import (
    adaln_linear,
    adaln_mlp,
    adaln_modulate,
    attention,
    gated_linear,
    gated_residual_adaln,
    gelu_tanh,
    rope3d,
)

__all__ = [
    "BACKENDS",
    "BackendUnavailable",
    "adaln_linear",
    "adaln_mlp",
    "auto_decisions",
    "adaln_modulate",
    "attention",
    "available",
    "current_backend",
    "gated_linear",
    "gated_residual_adaln",
    "gelu_tanh",
    "register",
    "resolve",
    "rope3d",
    "use_backend",
]
