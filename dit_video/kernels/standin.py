"""Stand-in tensors: what a backend's ``check`` sees while ``torch.compile`` traces a fused op.

Under Dynamo the op's arguments are fake tensors: they have shapes, strides and a device but no
storage, and Dynamo cannot trace a check that reads ``data_ptr()``. So dispatch, while compiling,
reads each argument's static facts in traced code (:func:`facts`: shape, strides, dtype, device,
requires_grad -- plain Python constants under static shapes, guarded by Dynamo like every other
tensor property), and decides outside the trace on a :class:`StandIn` rebuilt from them
(:func:`build`). A stand-in answers every metadata question (views such as ``expand`` run on a meta
twin); anything that needs values raises.

Alignment: Dynamo cannot read a storage offset, so a stand-in reports a 16-byte aligned
``data_ptr()``. That is what every allocation gives (torch's CPU allocator aligns to 64 bytes, the
CUDA caching allocator to 512, and Inductor copies a misaligned graph input), and what every view the
model makes keeps (q/k/v of the fused projection start at multiples of the width). A view that starts
mid-vector (``x[..., 1:]``) is still refused at run time: the CUDA kernels check their pointers
themselves (``check_cuda_aligned`` in csrc/bindings.cpp) and name the tensor.

This module imports torch only.
"""

from __future__ import annotations

from typing import Any

import torch

ALIGNED_BASE = 1 << 20  # the address a stand-in reports: 16-byte (indeed 1 MiB) aligned, never 0


class StandIn(torch.Tensor):
    """A storage-less tensor with the metadata of a traced argument; see the module docstring."""

    _meta: torch.Tensor
    __torch_function__ = torch._C._disabled_torch_function_impl

    @staticmethod
    def __new__(cls, meta: torch.Tensor, device: torch.device) -> StandIn:
        r = torch.Tensor._make_wrapper_subclass(cls, meta.shape, strides=meta.stride(), dtype=meta.dtype,
                                                device=device, requires_grad=meta.requires_grad)
        r._meta = meta
        return r

    def data_ptr(self) -> int:  # type: ignore[override]
        return ALIGNED_BASE

    def __repr__(self) -> str:  # type: ignore[override]
        return f"StandIn({tuple(self.shape)}, stride={self.stride()}, {self.dtype}, {self.device})"

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):
        device = next(a.device for a in torch.utils._pytree.tree_leaves(args) if isinstance(a, StandIn))

        def unwrap(x):
            return x._meta if isinstance(x, StandIn) else x

        def wrap(x):
            return StandIn(x, device) if isinstance(x, torch.Tensor) and x.device.type == "meta" else x

        try:
            out = func(*torch.utils._pytree.tree_map(unwrap, args),
                       **torch.utils._pytree.tree_map(unwrap, kwargs or {}))
        except (NotImplementedError, RuntimeError) as e:
            raise RuntimeError(f"a backend check called {func} on a stand-in while torch.compile traced the "
                               f"op; checks may read shapes, strides, dtypes and devices only ({e})") from e
        return torch.utils._pytree.tree_map(wrap, out)


def facts(a: Any) -> Any:
    """The static facts of one argument (a tensor's metadata, else the value itself), as Python constants."""
    if isinstance(a, torch.Tensor):
        return ("tensor", tuple(a.shape), tuple(a.stride()), a.dtype, a.device, a.requires_grad)
    return a


def build(f: Any) -> Any:
    """The argument :func:`facts` described: a :class:`StandIn` for a tensor, else the value."""
    if not (isinstance(f, tuple) and len(f) == 6 and f[0] == "tensor"):
        return f
    _, shape, stride, dtype, device, requires_grad = f
    extent = sum((n - 1) * s for n, s in zip(shape, stride, strict=True) if n > 0) + 1
    meta = torch.empty(extent, dtype=dtype, device="meta").as_strided(shape, stride)
    meta.requires_grad_(requires_grad and (dtype.is_floating_point or dtype.is_complex))
    return StandIn(meta, torch.device(device))
