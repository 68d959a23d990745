"""Helpers shared by the Triton kernels: where they may run, dtype rules, and stride bookkeeping.

The kernels read their operands through arbitrary strides with a fixed number of index dims
(attention: two outer batch dims; adaLN: two group dims and two row dims). :func:`collapse_dims`
folds a tensor's leading dims into that fixed number without copying, by merging neighbours whose
strides allow it in *every* tensor of the call; when they don't, the op's ``check`` refuses the
call and dispatch falls back to the next backend (never a silent copy).

Triton is imported lazily by the kernel modules only (this module needs torch only).
"""

from __future__ import annotations

import math
import os

import torch

SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)

# Tests set this (monkeypatch) so every output and scratch buffer a launcher allocates starts as
# NaN: an element a kernel fails to write then fails the comparison instead of passing by luck.
POISON = os.environ.get("DIT_VIDEO_POISON_OUTPUTS") == "1"


def poisoned(t: torch.Tensor) -> torch.Tensor:
    """``t`` filled with NaN when :data:`POISON` is on (floating tensors), else ``t`` untouched."""
    if POISON and t.is_floating_point() and t.device.type != "meta":
        t.fill_(float("nan"))
    return t


def interpreting() -> bool:
    """True when Triton runs kernels on the CPU with numpy (``TRITON_INTERPRET=1``, tests only)."""
    return os.environ.get("TRITON_INTERPRET") == "1"


def device_reason(*tensors: torch.Tensor | None) -> str | None:
    """Why these tensors cannot go to a Triton kernel here, or None.

    Triton runs CUDA tensors; CPU tensors only under the interpreter. All tensors must share one
    device.
    """
    ts = [t for t in tensors if t is not None]
    devs = {t.device for t in ts}
    if len(devs) > 1:
        return f"tensors on several devices {sorted(str(d) for d in devs)}"
    dev = ts[0].device
    if dev.type == "cuda":
        return None
    if dev.type == "cpu" and interpreting():
        return None
    if dev.type == "meta":  # fake/meta tensors while tracing: the real call decides
        return None
    return f"needs a CUDA tensor (got {dev.type}; CPU only with TRITON_INTERPRET=1)"


def arch_of(device: torch.device) -> str:
    """Which tuned config table a CUDA device uses: "sm_80" for Ampere/Ada, "sm_90a" from Hopper on."""
    major, _ = torch.cuda.get_device_capability(device)
    return "sm_80" if major < 9 else "sm_90a"


def dtype_reason(*tensors: torch.Tensor) -> str | None:
    """Why these dtypes are refused (not all one of fp32/fp16/bf16), or None."""
    dts = {t.dtype for t in tensors}
    if len(dts) != 1:
        return f"mixed dtypes {sorted(str(d) for d in dts)}"
    dt = next(iter(dts))
    if dt not in SUPPORTED_DTYPES:
        return f"dtype {dt} not in fp32/fp16/bf16"
    return None


def upcast_for(dtype: torch.dtype) -> bool:
    """Whether a kernel must compute on fp32 copies of its loads.

    The interpreter computes bf16/fp16 arithmetic (and ``tl.dot``) wrongly, so under it every load
    is upcast; on the GPU, ``tl.dot`` takes fp16/bf16 operands directly (tensor cores) and only
    the reductions run in fp32.
    """
    return interpreting() or dtype == torch.float32


def dot_precision(dtype: torch.dtype) -> str:
    """``tl.dot`` input precision: fp32 inputs use 3xTF32 (fp32-accurate on tensor cores)."""
    if interpreting():
        return "ieee"
    return "tf32x3" if dtype == torch.float32 else "tf32"


def next_pow2(n: int, minimum: int = 16) -> int:
    return max(minimum, 1 << max(0, math.ceil(math.log2(max(n, 1)))))


def collapse_dims(sizes: tuple[int, ...], strides: list[tuple[int, ...]], ndim: int
                  ) -> tuple[list[int], list[list[int]]] | None:
    """Fold dims ``sizes`` (with one stride tuple per tensor) into exactly ``ndim`` dims, no copies.

    Size-1 dims are dropped; neighbours i, i+1 merge when ``stride[i] == stride[i+1] * size[i+1]``
    holds for every tensor (stride-0 broadcast dims merge with each other). The result is padded
    in front with size-1 dims. Returns ``None`` when more than ``ndim`` dims would remain.
    """
    keep = [i for i, s in enumerate(sizes) if s != 1]
    sz = [int(sizes[i]) for i in keep]
    st = [[int(s[i]) for i in keep] for s in strides]
    i = len(sz) - 2
    while i >= 0:
        if all(s[i] == s[i + 1] * sz[i + 1] for s in st):
            sz[i + 1] *= sz[i]
            del sz[i]
            for s in st:
                del s[i]
        i -= 1
    if len(sz) > ndim:
        return None
    pad = ndim - len(sz)
    return [1] * pad + sz, [[0] * pad + s for s in st]


def expanded_strides(t: torch.Tensor, shape: tuple[int, ...]) -> tuple[int, ...]:
    """Strides of ``t`` broadcast to ``shape`` (0 on broadcast dims), without materializing."""
    return tuple(t.expand(shape).stride())


# ---------------------------------------------------------------------------- attention plumbing
class AttnPlan:
    """How an attention call maps onto a kernel's ``(b0, b1, l, h, d)`` index space.

    ``batch`` is the broadcast of every operand's leading dims, folded into two dims ``(n0, n1)``;
    ``strides[name]`` are ``(s_b0, s_b1, s_l, s_h, s_d)`` for q/k/v/o (0 on broadcast dims) and
    ``(s_b0, s_b1, s_l)`` for the mask. Built from shapes and strides only: no tensor is touched.
    """

    def __init__(self, batch: tuple[int, ...], n0: int, n1: int, strides: dict[str, tuple[int, ...]]):
        self.batch, self.n0, self.n1, self.strides = batch, n0, n1, strides


def attention_out_shape(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                        mask: torch.Tensor | None) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(batch dims, output shape) of an attention call."""
    shapes = [q.shape[:-3], k.shape[:-3], v.shape[:-3]]
    if mask is not None:
        shapes.append(mask.shape[:-1])
    batch = tuple(torch.broadcast_shapes(*shapes))
    return batch, batch + tuple(q.shape[-3:])


def empty_attention_out(q: torch.Tensor, out_shape: tuple[int, ...]) -> torch.Tensor:
    """o allocated in q's dim order (token layout for the temporal view), see layout.empty_in_layout_of."""
    from .layout import empty_in_layout_of

    if tuple(q.shape) == tuple(out_shape):
        return poisoned(empty_in_layout_of(q))
    return poisoned(q.new_empty(out_shape))


def _out_strides(q: torch.Tensor, out_shape: tuple[int, ...]) -> tuple[int, ...]:
    """The strides :func:`empty_attention_out` would give, computed without allocating."""
    if tuple(q.shape) != tuple(out_shape):
        order = list(range(len(out_shape)))
    else:  # same rule as layout.empty_in_layout_of
        order = sorted(range(q.dim()), key=lambda i: (-q.stride(i), -i))
    strides = [0] * len(out_shape)
    acc = 1
    for i in reversed(order):
        strides[i] = acc
        acc *= int(out_shape[i])
    return tuple(strides)


def attention_plan(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, o_strides: tuple[int, ...] | None,
                   mask: torch.Tensor | None, extra: dict[str, torch.Tensor] | None = None) -> AttnPlan | str:
    """An :class:`AttnPlan`, or the reason the leading dims cannot be read as two batch dims.

    ``extra`` names further tensors of the full ``batch + (L, H, D)`` shape (the backward's dO
    and gradient buffers) whose strides take part in the folding.
    """
    batch, out_shape = attention_out_shape(q, k, v, mask)
    nb = len(batch)
    full = {"q": expanded_strides(q, batch + tuple(q.shape[-3:])),
            "k": expanded_strides(k, batch + tuple(k.shape[-3:])),
            "v": expanded_strides(v, batch + tuple(v.shape[-3:]))}
    if o_strides is None:
        o_strides = _out_strides(q, out_shape)
    full["o"] = tuple(o_strides)
    if mask is not None:
        full["mask"] = expanded_strides(mask, batch + (mask.shape[-1],))
    for name, t in (extra or {}).items():
        full[name] = tuple(t.stride())
    names = list(full)
    folded = collapse_dims(batch, [full[n][:nb] for n in names], 2)
    if folded is None:
        return f"leading dims {tuple(batch)} cannot be read as two strided batch dims without a copy"
    (n0, n1), bstrides = folded
    strides = {}
    for n, bs in zip(names, bstrides, strict=True):
        strides[n] = tuple(bs) + tuple(full[n][nb:])
    return AttnPlan(batch, n0, n1, strides)


LOG2E = 1.4426950408889634  # the kernels run softmax in base 2: exp(x) = exp2(x * log2(e))


def mask_arg(mask: torch.Tensor | None, q: torch.Tensor) -> torch.Tensor:
    """The key-padding mask as the kernels read it (uint8 view of the bool), or any tensor as a dummy."""
    return q if mask is None else mask.view(torch.uint8)


def grad_buffer(t: torch.Tensor, full_shape: tuple[int, ...]) -> torch.Tensor:
    """Where a kernel writes a gradient: t's shape if t is not broadcast, else fp32 at the full shape
    (summed back to t's shape by :func:`reduce_grad`)."""
    if tuple(t.shape) == tuple(full_shape):
        return poisoned(torch.empty(full_shape, device=t.device, dtype=t.dtype))
    return poisoned(torch.empty(full_shape, device=t.device, dtype=torch.float32))


def reduce_grad(g: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """A gradient written by :func:`grad_buffer` back in ``t``'s (broadcast) shape and dtype."""
    if tuple(g.shape) == tuple(t.shape):
        return g
    return g.sum_to_size(t.shape).to(t.dtype).contiguous()


def attention_reason(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None,
                     max_head_dim: int) -> str | None:
    """Checks shared by the Triton attention kernels (device, dtype, head dims, batch folding)."""
    why = device_reason(q, k, v, mask) or dtype_reason(q, k, v)
    if why:
        return why
    d = q.shape[-1]
    if v.shape[-1] != d:
        why = f"value head dim {v.shape[-1]} != query head dim {d}"
    elif d > max_head_dim:
        why = f"head_dim {d} > {max_head_dim}"
    elif q.shape[-3] == 0 or k.shape[-3] == 0 or d == 0:
        why = "empty sequence or head dim"
    elif mask is not None and mask.dtype != torch.bool:
        why = f"key_padding_mask dtype {mask.dtype} (want bool)"
    if why:
        return why
    plan = attention_plan(q, k, v, None, mask)
    return plan if isinstance(plan, str) else None


def define_attention_op(name: str, launch_fwd, launch_bwd):
    """Register ``dit_video::<name>`` (+ ``<name>_backward``) as torch custom ops with fakes and autograd.

    ``launch_fwd(q, k, v, mask, scale) -> (o, lse)`` and ``launch_bwd(do, q, k, v, o, lse, mask, scale) ->
    (dq, dk, dv)`` are a kernel's launchers. Autograd saves the inputs, o and the base-2 log-sum-exp only.
    Returns the forward op (``op(q, k, v, mask, scale) -> (o, lse)``).
    """

    @torch.library.custom_op(f"dit_video::{name}", mutates_args=())
    def fwd(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_padding_mask: torch.Tensor | None,
            scale: float) -> tuple[torch.Tensor, torch.Tensor]:
        return launch_fwd(q, k, v, key_padding_mask, scale)

    @fwd.register_fake
    def _(q, k, v, key_padding_mask, scale):
        batch, out_shape = attention_out_shape(q, k, v, key_padding_mask)
        n = math.prod(batch)
        return empty_attention_out(q, out_shape), q.new_empty((n * q.shape[-2], q.shape[-3]), dtype=torch.float32)

    @torch.library.custom_op(f"dit_video::{name}_backward", mutates_args=())
    def bwd(do: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, o: torch.Tensor,
            lse: torch.Tensor, key_padding_mask: torch.Tensor | None,
            scale: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return launch_bwd(do, q, k, v, o, lse, key_padding_mask, scale)

    @bwd.register_fake
    def _(do, q, k, v, o, lse, key_padding_mask, scale):
        return q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape)

    def setup_context(ctx, inputs, output):
        q, k, v, mask, scale = inputs
        ctx.save_for_backward(q, k, v, *output, mask)
        ctx.scale = scale

    def backward(ctx, do, dlse):
        q, k, v, o, lse, mask = ctx.saved_tensors
        return (*bwd(do, q, k, v, o, lse, mask, ctx.scale), None, None)

    fwd.register_autograd(backward, setup_context=setup_context)
    fwd.backward_op = bwd
    return fwd
