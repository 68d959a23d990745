"""adaLN forward with its row statistics, and the backward that takes them: the parts the memory-lean ops
(:mod:`.lean_adaln_linear`, :mod:`.lean_adaln_mlp`) keep instead of the modulated output.

``h = LayerNorm(x) * (1 + scale) + shift`` is one elementwise pass over ``x``; a GEMM that reads ``h``
would normally save it (one width-vector per token). The lean ops save ``x`` (which the LayerNorm
backward needs anyway) plus the fp32 mean and rstd per row, and recompute ``h`` in backward.

Which kernels do the work follows dispatch: :func:`family` asks which backend would serve
``adaln_modulate`` for these tensors (``cpu``/``cuda``: the compiled extension's ``csrc_adaln_modulate``
and its backward; ``triton``: the Triton ``adaln_modulate`` and ``adaln_backward`` ops; ``torch``:
the plain formulas below). The statistics are whatever that family's forward returns, handed back to
the same family's backward.
"""

from __future__ import annotations

import torch

from . import dispatch
from .reference import broadcast_mod

FAMILIES = ("torch", "cpu", "cuda", "triton")


def family(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor, eps: float) -> str:
    """The kernel family that serves adaLN for these arguments under the current backend."""
    b = dispatch.resolve("adaln_modulate", "auto", x, shift, scale, eps=eps).backend
    return b if b in FAMILIES else "torch"


def _token_dims(m: torch.Tensor, x: torch.Tensor) -> tuple[int, ...]:
    """The dims of ``x`` a modulation tensor ``m`` ([B, D] or [B, T, D]) is broadcast over."""
    return tuple(range(m.dim() - 1, x.dim() - 1))


def forward(fam: str, x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor, eps: float
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(h, mean, rstd)``: the modulated LayerNorm of ``x`` and the statistics its backward takes."""
    if fam in ("cpu", "cuda"):
        return torch.ops.dit_video.csrc_adaln_modulate(x, shift, scale, float(eps))
    if fam == "triton":
        return torch.ops.dit_video.adaln_modulate(x, shift, scale, float(eps))
    xf = x.float()
    var, mean = torch.var_mean(xf, dim=-1, correction=0)
    rstd = torch.rsqrt(var + eps)
    n = (xf - mean[..., None]) * rstd[..., None]
    h = torch.addcmul(broadcast_mod(shift, x).float(), n, 1 + broadcast_mod(scale, x).float())
    return h.to(x.dtype), mean, rstd


def backward(fam: str, dh: torch.Tensor, x: torch.Tensor, scale: torch.Tensor, mean: torch.Tensor,
             rstd: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(dx, dshift, dscale)`` from the gradient of ``h`` and the statistics :func:`forward` returned."""
    dh = dh.to(x.dtype)
    if fam in ("cpu", "cuda"):
        return torch.ops.dit_video.csrc_adaln_modulate_backward(dh.contiguous(), x, scale, mean, rstd)
    if fam == "triton":
        dx, _, _, dshift, dscale = torch.ops.dit_video.adaln_backward(dh, None, x, None, None, scale, mean, rstd)
        return dx, dshift, dscale
    dims = _token_dims(scale, x)
    dhf = dh.float()
    n = (x.float() - mean[..., None]) * rstd[..., None]
    dscale = (dhf * n).sum(dims) if dims else dhf * n
    dshift = dhf.sum(dims) if dims else dhf
    dn = dhf * (1 + broadcast_mod(scale, x).float())
    dx = rstd[..., None] * (dn - dn.mean(-1, keepdim=True) - n * (dn * n).mean(-1, keepdim=True))
    return dx.to(x.dtype), dshift.to(scale.dtype), dscale.to(scale.dtype)
