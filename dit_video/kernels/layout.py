"""Layout helpers shared by the fused backends."""

from __future__ import annotations

import torch


def empty_in_layout_of(ref: torch.Tensor, shape: tuple[int, ...] | None = None,
                       dtype: torch.dtype | None = None) -> torch.Tensor:
    """A dense, uninitialised tensor whose dims are laid out in the same order as ``ref``'s.

    ``ref`` may be a non-dense view (a slice of a fused QKV projection): the result keeps its
    dimension order (largest stride outermost) but is packed. For the temporal view
    ``q [B, S, T, H, D]`` of tokens ``[B, T, S, ...]`` this returns a ``[B, S, T, H, D]`` view of a
    contiguous ``[B, T, S, H, D]`` tensor: o written here is already in token layout, so the
    output projection reads it without a transpose copy. ``shape`` may change the last dim
    (e.g. a different value head dim); dims must otherwise match ``ref``.
    """
    shape = tuple(ref.shape) if shape is None else tuple(shape)
    order = sorted(range(ref.dim()), key=lambda i: (-ref.stride(i), -i))  # outermost first
    out = torch.empty([shape[i] for i in order], dtype=dtype or ref.dtype, device=ref.device)
    inverse = [order.index(i) for i in range(ref.dim())]
    return out.permute(inverse)
