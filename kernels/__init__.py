"""Fused ops for video DiTs, with pluggable backends (torch, triton, cuda, cpu, flash).

Public API::

    from dit_video.kernels import attention, adaln_modulate, gated_residual_adaln, rope3d
    from dit_video.kernels import gated_linear, adaln_linear, adaln_mlp   # memory-lean block ops
    from dit_video.kernels import use_backend, available

See ``dispatch.py`` for how backends register and are chosen. This package imports nothing
from the rest of ``dit_video``.
"""

from .dispatch import BACKENDS, BackendUnavailable, available, current_backend, register, resolve, use_backend
from .ops import adaln_linear, adaln_mlp, adaln_modulate, attention, gated_linear, gated_residual_adaln, rope3d

__all__ = [
    "BACKENDS",
    "BackendUnavailable",
    "adaln_linear",
    "adaln_mlp",
    "adaln_modulate",
    "attention",
    "available",
    "current_backend",
    "gated_linear",
    "gated_residual_adaln",
    "register",
    "resolve",
    "rope3d",
    "use_backend",
]
