"""The public fused ops. Each validates its arguments, then dispatches to a backend.

Shapes (any strides everywhere):
  attention(q, k, v)            q ``[..., Lq, H, D]``, k/v ``[..., Lk, H, D]`` (leading dims
                                broadcast, so a text key ``[B, 1, L, H, D]`` serves every frame),
                                key_padding_mask ``[..., Lk]`` bool, True = attend.
  adaln_modulate(x, shift, scale)   x ``[B, ..., D]``; shift/scale ``[B, D]`` (per sample) or
                                ``[B, T, D]`` (per sample and frame), broadcast over tokens.
  gated_residual_adaln(x, y, gate, shift, scale)  -> (r, adaln_modulate(r, shift, scale)),
                                r = x + gate * y.
  rope3d(x, cos, sin)           x ``[B, T, S, H, D]``; cos/sin ``[T, S, D/2]`` fp32.
  gelu_tanh(x)                  GELU, tanh approximation (the MLPs' activation), any shape.

Memory-lean block ops (composites: one implementation on top of the ops above, every backend):
  gated_linear(x, o, w, b, gate)              x + gate * Linear(o); saves o only.
  adaln_linear(x, shift, scale, w, b)         Linear(adaln_modulate(x, shift, scale)); saves x (+ row stats).
  adaln_mlp(x, shift, scale, gate, w1, b1, w2, b2)   x + gate * fc2(gelu_tanh(fc1(adaln_modulate(x, ...))));
                                              saves x (+ row stats), recomputes fc1 and GELU in backward.
"""

from __future__ import annotations

import torch

from .dispatch import dispatch


def _check_mod(name: str, m: torch.Tensor, x: torch.Tensor) -> None:
    if m.dim() < 2 or m.dim() > x.dim() - 1 or m.shape[-1] != x.shape[-1] or \
            tuple(m.shape[:-1]) != tuple(x.shape[: m.dim() - 1]):
        raise ValueError(
            f"{name} must be [B, D] or [B, T, D] matching x's leading dims and width: "
            f"x is {tuple(x.shape)}, {name} is {tuple(m.shape)}")


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *,
              key_padding_mask: torch.Tensor | None = None, scale: float | None = None,
              backend: str = "auto") -> torch.Tensor:
    """Multi-head attention over ``[..., L, H, D]`` tensors read through their strides."""
    if q.dim() < 3 or k.dim() < 3 or v.dim() < 3:
        raise ValueError(f"attention expects [..., L, H, D] tensors, got q{tuple(q.shape)} "
                         f"k{tuple(k.shape)} v{tuple(v.shape)}")
    if k.shape[-3] != v.shape[-3] or k.shape[-2] != v.shape[-2]:
        raise ValueError(f"k and v must share [Lk, H]: k{tuple(k.shape)} v{tuple(v.shape)}")
    if q.shape[-2] != k.shape[-2] or q.shape[-1] != k.shape[-1]:
        raise ValueError(f"q and k must share heads and head_dim: q{tuple(q.shape)} k{tuple(k.shape)}")
    try:
        batch = torch.broadcast_shapes(q.shape[:-3], k.shape[:-3], v.shape[:-3])
    except RuntimeError as e:
        raise ValueError(f"leading dims of q{tuple(q.shape)}, k{tuple(k.shape)}, v{tuple(v.shape)} "
                         "do not broadcast") from e
    if key_padding_mask is not None:
        if key_padding_mask.dtype != torch.bool:
            raise ValueError(f"key_padding_mask must be bool (True = attend), got {key_padding_mask.dtype}")
        if key_padding_mask.shape[-1] != k.shape[-3]:
            raise ValueError(f"key_padding_mask's last dim must be Lk={k.shape[-3]}, "
                             f"got {tuple(key_padding_mask.shape)}")
        try:
            torch.broadcast_shapes(key_padding_mask.shape[:-1], batch)
        except RuntimeError as e:
            raise ValueError(f"key_padding_mask{tuple(key_padding_mask.shape)} does not broadcast "
                             f"to the batch dims {tuple(batch)}") from e
    return dispatch("attention", backend, q, k, v, key_padding_mask=key_padding_mask, scale=scale)


def adaln_modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor, *, eps: float = 1e-6,
                   backend: str = "auto") -> torch.Tensor:
    """LayerNorm without affine, then ``* (1 + scale) + shift``."""
    _check_mod("shift", shift, x)
    _check_mod("scale", scale, x)
    return dispatch("adaln_modulate", backend, x, shift, scale, eps=eps)


def gated_residual_adaln(x: torch.Tensor, y: torch.Tensor, gate: torch.Tensor, shift: torch.Tensor,
                         scale: torch.Tensor, *, eps: float = 1e-6,
                         backend: str = "auto") -> tuple[torch.Tensor, torch.Tensor]:
    """``r = x + gate * y``; returns ``(r, adaln_modulate(r, shift, scale))`` in one pass."""
    if x.shape != y.shape:
        raise ValueError(f"x and y must have one shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    for name, m in (("gate", gate), ("shift", shift), ("scale", scale)):
        _check_mod(name, m, x)
    return dispatch("gated_residual_adaln", backend, x, y, gate, shift, scale, eps=eps)


def rope3d(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, *, backend: str = "auto") -> torch.Tensor:
    """3D rotary embedding of ``x [B, T, S, H, D]`` with tables ``[T, S, D/2]``."""
    if x.dim() != 5 or x.shape[-1] % 2:
        raise ValueError(f"rope3d expects x [B, T, S, H, D] with even D, got {tuple(x.shape)}")
    want = (x.shape[1], x.shape[2], x.shape[-1] // 2)
    if tuple(cos.shape) != want or tuple(sin.shape) != want:
        raise ValueError(f"rope3d tables must be [T, S, D/2] = {want}, got cos{tuple(cos.shape)} "
                         f"sin{tuple(sin.shape)}")
    return dispatch("rope3d", backend, x, cos, sin)


def gelu_tanh(x: torch.Tensor, *, backend: str = "auto") -> torch.Tensor:
    """``0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))``: ``F.gelu(x, approximate="tanh")``, through a fused
    kernel where one is faster (on CPU, ATen's bf16 tanh-GELU is slow)."""
    if not x.is_floating_point():
        raise ValueError(f"gelu_tanh expects a floating-point tensor, got {x.dtype}")
    return dispatch("gelu_tanh", backend, x)


def _check_linear(name: str, w: torch.Tensor, b: torch.Tensor | None, d_in: int) -> None:
    if w.dim() != 2 or w.shape[1] != d_in or (b is not None and tuple(b.shape) != (w.shape[0],)):
        raise ValueError(f"{name}: weight must be [out, {d_in}] and bias [out], got weight {tuple(w.shape)}, "
                         f"bias {None if b is None else tuple(b.shape)}")


def gated_linear(x: torch.Tensor, o: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                 gate: torch.Tensor, *, backend: str = "auto") -> torch.Tensor:
    """``x + gate * Linear(o)`` (gate ``[B, D]`` / ``[B, T, D]``), saving only ``o`` for backward."""
    _check_linear("gated_linear", weight, bias, o.shape[-1])
    if tuple(o.shape[:-1]) != tuple(x.shape[:-1]) or x.shape[-1] != weight.shape[0]:
        raise ValueError(f"gated_linear: o {tuple(o.shape)} and x {tuple(x.shape)} must share their token dims "
                         f"and x's width must be the weight's {weight.shape[0]} outputs")
    _check_mod("gate", gate, x)
    return dispatch("gated_linear", backend, x, o, weight, bias, gate)


def adaln_linear(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor, weight: torch.Tensor,
                 bias: torch.Tensor | None, *, eps: float = 1e-6, backend: str = "auto") -> torch.Tensor:
    """``Linear(adaln_modulate(x, shift, scale))``, saving ``x`` and its row statistics (not the modulated x)."""
    _check_mod("shift", shift, x)
    _check_mod("scale", scale, x)
    _check_linear("adaln_linear", weight, bias, x.shape[-1])
    return dispatch("adaln_linear", backend, x, shift, scale, weight, bias, eps=eps)


def adaln_mlp(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor, gate: torch.Tensor, w1: torch.Tensor,
              b1: torch.Tensor | None, w2: torch.Tensor, b2: torch.Tensor | None, *, eps: float = 1e-6,
              backend: str = "auto") -> torch.Tensor:
    """``x + gate * fc2(gelu_tanh(fc1(adaln_modulate(x, shift, scale))))``, saving ``x`` and its row statistics:
    fc1 and GELU are recomputed in backward."""
    for name, m in (("shift", shift), ("scale", scale), ("gate", gate)):
        _check_mod(name, m, x)
    _check_linear("adaln_mlp fc1", w1, b1, x.shape[-1])
    _check_linear("adaln_mlp fc2", w2, b2, w1.shape[0])
    if w2.shape[0] != x.shape[-1]:
        raise ValueError(f"adaln_mlp: fc2 must map back to the width {x.shape[-1]}, got {tuple(w2.shape)}")
    return dispatch("adaln_mlp", backend, x, shift, scale, gate, w1, b1, w2, b2, eps=eps)
