"""Collectives with autograd for sequence parallelism (``torch.distributed``; NCCL on GPUs, gloo on CPUs).

    all_to_all(x, group, scatter_dim, gather_dim)
        x split into N chunks along scatter_dim; chunk j goes to rank j; what rank i sends lands at
        position i along gather_dim:   [.., A/N (gather), .., B (scatter), ..] -> [.., A, .., B/N, ..]
        backward: the same exchange with the two dims swapped.
    gather(x, group, dim)      all ranks' x concatenated along dim (rank order); backward: this rank's slice
                               of the gradient (every rank of the group computes the same loss from it).

One copy into a contiguous send buffer, one out of the receive buffer; gloo has no bf16 all-to-all,
so on gloo bf16 travels as fp32 (exact both ways).
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def _wire_dtype(t: torch.Tensor, group) -> torch.dtype:
    if t.dtype in (torch.bfloat16, torch.float16) and dist.get_backend(group) == "gloo":
        return torch.float32
    return t.dtype


def _all_to_all(x: torch.Tensor, group, scatter_dim: int, gather_dim: int) -> torch.Tensor:
    n = dist.get_world_size(group)
    if n == 1:
        return x
    scatter_dim %= x.dim()
    gather_dim %= x.dim()
    if x.shape[scatter_dim] % n:
        raise ValueError(f"all_to_all: dim {scatter_dim} of {tuple(x.shape)} is not divisible by the group size {n}")
    wire = _wire_dtype(x, group)
    # [.., N, B/N, ..] with the rank axis first: chunk j is what rank j receives
    send = x.unflatten(scatter_dim, (n, -1)).movedim(scatter_dim, 0).to(wire).contiguous()
    recv = torch.empty_like(send)
    dist.all_to_all_single(recv, send, group=group)
    # recv[i] came from rank i (x's dims, scatter dim shrunk): put the rank axis just before gather_dim, merge
    out = recv.movedim(0, gather_dim).flatten(gather_dim, gather_dim + 1)
    return out.to(x.dtype)


class _AllToAll(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, group, scatter_dim, gather_dim):
        ctx.group, ctx.dims = group, (scatter_dim, gather_dim)
        return _all_to_all(x, group, scatter_dim, gather_dim)

    @staticmethod
    def backward(ctx, grad):
        s, g = ctx.dims
        return _all_to_all(grad.contiguous(), ctx.group, g, s), None, None, None


def all_to_all(x: torch.Tensor, group, scatter_dim: int, gather_dim: int) -> torch.Tensor:
    """See the module docstring."""
    return _AllToAll.apply(x, group, scatter_dim, gather_dim)


def _gather(x: torch.Tensor, group, dim: int) -> torch.Tensor:
    n = dist.get_world_size(group)
    if n == 1:
        return x
    wire = _wire_dtype(x, group)
    parts = [torch.empty_like(x, dtype=wire) for _ in range(n)]
    dist.all_gather(parts, x.to(wire).contiguous(), group=group)
    return torch.cat(parts, dim=dim).to(x.dtype)


class _Gather(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, group, dim):
        ctx.group, ctx.dim, ctx.size = group, dim, x.shape[dim]
        return _gather(x, group, dim)

    @staticmethod
    def backward(ctx, grad):
        r = dist.get_rank(ctx.group)
        return grad.narrow(ctx.dim, r * ctx.size, ctx.size).contiguous(), None, None


def gather(x: torch.Tensor, group, dim: int) -> torch.Tensor:
    """See the module docstring."""
    return _Gather.apply(x, group, dim)


def bytes_all_to_all(x: torch.Tensor, group_size: int) -> int:
    """Bytes one rank sends (= receives) in :func:`all_to_all` of ``x``: all chunks but its own."""
    return x.numel() * x.element_size() * (group_size - 1) // group_size
