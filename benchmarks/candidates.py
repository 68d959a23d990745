"""Inputs for a kernel case, and every implementation ("candidate") that can run it.

Candidates, per op:

- ``torch``: the public op forced to the reference backend (eager PyTorch) -- the baseline of ratios.
- ``auto``: the public op as the model calls it (``backend="auto"``): whichever implementation the dispatcher
  measured fastest for this layout here (``dit_video/kernels/autotune.py``); the row names it (``auto_chose``).
- ``compile``: ``torch.compile`` of the same reference function.
- ``sdpa`` (attention only): ``F.scaled_dot_product_attention`` the way a user writes it around
  token-layout tensors: ``permute(...).contiguous()`` of q, k, v to heads-first, SDPA, and o copied
  back to token layout (cross attention: text k/v repeated per frame, as diffusers does).
- ``flash-attn`` (attention only): the ``flash_attn`` package called directly
  (``flash_attn_func`` on ``[N, L, H, D]``, reshaped as a user would), independent of whether
  ``dit_video.kernels`` wires it as its ``flash`` backend. CUDA, fp16/bf16, no padding masks.
- ``triton``, ``cpu``, ``cuda``, ``flash``: the public op forced to that backend of
  ``dit_video.kernels``. Whether it exists is asked of the dispatcher (``available`` / ``resolve``);
  when it cannot serve the call the row says ``absent`` with the dispatcher's reason.

Inputs mirror the model: self-attention q, k, v are views of one fused ``[B, T, S, 3, H, D]``
projection (temporal: the ``transpose(1, 2)`` view, full: ``flatten(1, 2)``); cross attention reads
a text k/v ``[B, 1, L, 2, H, D]`` broadcast over frames with a key-padding mask.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from dit_video import kernels
from dit_video.kernels import reference
from dit_video.kernels.roofline import Work, attention_work, gated_residual_adaln_work, gelu_tanh_work, rope3d_work

from .shapes import Case

KERNEL_BACKENDS = ("triton", "cpu", "cuda", "flash")  # dit_video.kernels backends other than torch
CANDIDATES = ("torch", "auto", "compile", "sdpa", "flash-attn") + KERNEL_BACKENDS
ATTENTION_ONLY = ("sdpa", "flash-attn")
BASELINE = "torch"


@dataclass
class Inputs:
    """Leaf tensors of one case and a function building the op's (args, kwargs) from them."""

    leaves: list[torch.Tensor]
    build: Callable[[], tuple[tuple, dict]]
    aux: dict = field(default_factory=dict)


def make_inputs(case: Case, device: str, dtype: torch.dtype) -> Inputs:
    """Fresh random inputs (leaves require grad) for ``case``."""
    g = dict(device=device, dtype=dtype)
    b, t, s, h, d = case.batch, case.frames, case.spf, case.heads, case.head_dim
    if case.op == "attention" and case.kind == "cross":
        q = torch.randn(b, t, s, h, d, **g).requires_grad_()
        kv = torch.randn(b, 1, case.text_len, 2, h, d, **g).requires_grad_()
        mask = torch.ones(b, 1, case.text_len, dtype=torch.bool, device=device)
        mask[..., max(1, (3 * case.text_len) // 4):] = False  # a quarter of the text is padding

        def build_cross() -> tuple[tuple, dict]:
            k, v = kv.unbind(3)
            return (q, k, v), {"key_padding_mask": mask}

        return Inputs([q, kv], build_cross)
    if case.op == "attention":
        qkv = torch.randn(b, t, s, 3, h, d, **g).requires_grad_()

        def build_self() -> tuple[tuple, dict]:
            q, k, v = qkv.unbind(3)
            if case.kind == "temporal":
                q, k, v = (x.transpose(1, 2) for x in (q, k, v))
            elif case.kind == "full":
                q, k, v = (x.flatten(1, 2) for x in (q, k, v))
            return (q, k, v), {}

        return Inputs([qkv], build_self)
    if case.op == "gated_residual_adaln":
        x = torch.randn(b, t, s, case.width, **g).requires_grad_()
        y = torch.randn(b, t, s, case.width, **g).requires_grad_()
        mods = [(0.1 * torch.randn(b, case.width, **g)).requires_grad_() for _ in range(3)]
        return Inputs([x, y, *mods], lambda: ((x, y, *mods), {}))
    if case.op == "gelu_tanh":  # the MLP's hidden activation (mlp_ratio 4)
        z = torch.randn(b, t, s, 4 * case.width, **g).requires_grad_()
        return Inputs([z], lambda: ((z,), {}))
    if case.op == "rope3d":
        from dit_video.models.embeddings import rope3d_tables

        hw = int(round(s ** 0.5))
        grid = (t, hw, s // hw) if hw * (s // hw) == s else (t, 1, s)
        cos, sin = rope3d_tables(grid, d, device=device)
        x = torch.randn(b, t, s, h, d, **g).requires_grad_()
        return Inputs([x], lambda: ((x, cos, sin), {}), aux={"table_numel": cos.numel()})
    raise ValueError(f"unknown op {case.op!r}")


def work(case: Case, inputs: Inputs, dtype: torch.dtype, mode: str) -> Work:
    """FLOPs and minimum bytes of ``case`` in ``mode`` ('fwd' or 'fwd+bwd')."""
    es = torch.empty((), dtype=dtype).element_size()
    b, t, s, h, d = case.batch, case.frames, case.spf, case.heads, case.head_dim
    if case.op == "attention":
        if case.kind == "spatial":
            return attention_work(b * t, h, s, s, d, es, mode=mode)
        if case.kind == "temporal":
            return attention_work(b * s, h, t, t, d, es, mode=mode)
        if case.kind == "full":
            return attention_work(b, h, t * s, t * s, d, es, mode=mode)
        return attention_work(b * t, h, s, case.text_len, d, es, kv_n=b, mode=mode)
    if case.op == "gated_residual_adaln":
        return gated_residual_adaln_work(case.tokens, case.width, b, es, mode=mode)
    if case.op == "gelu_tanh":
        return gelu_tanh_work(case.tokens * 4 * case.width, es, mode=mode)
    return rope3d_work(case.tokens * h * d, inputs.aux["table_numel"], es, mode=mode)


# ----------------------------------------------------------------------------------- candidates
def _sdpa_user(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
               key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Attention as written around SDPA by hand: heads-first contiguous copies in, a copy back out."""
    batch = torch.broadcast_shapes(q.shape[:-3], k.shape[:-3], v.shape[:-3])
    lq, h, d = q.shape[-3:]
    lk = k.shape[-3]

    def heads_first(x: torch.Tensor, length: int) -> torch.Tensor:
        x = x.expand(batch + x.shape[-3:]).reshape(-1, length, h, x.shape[-1])
        return x.permute(0, 2, 1, 3).contiguous()  # [N, H, L, D]

    mask = None
    if key_padding_mask is not None:
        mask = key_padding_mask.expand(batch + (lk,)).reshape(-1, 1, 1, lk)
    o = F.scaled_dot_product_attention(heads_first(q, lq), heads_first(k, lk), heads_first(v, lk), attn_mask=mask)
    return o.permute(0, 2, 1, 3).contiguous().reshape(batch + (lq, h, v.shape[-1]))


_REFERENCE = {
    "attention": reference.attention_ref,
    "gated_residual_adaln": reference.gated_residual_adaln_ref,
    "rope3d": reference.rope3d_ref,
    "gelu_tanh": reference.gelu_tanh_ref,
}
_PUBLIC = {
    "attention": kernels.attention,
    "gated_residual_adaln": kernels.gated_residual_adaln,
    "rope3d": kernels.rope3d,
    "gelu_tanh": kernels.gelu_tanh,
}


def applicable(op: str) -> tuple[str, ...]:
    """Candidates that mean something for ``op`` (SDPA is an attention baseline only)."""
    return CANDIDATES if op == "attention" else tuple(c for c in CANDIDATES if c not in ATTENTION_ONLY)


def _flash_attn_user(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``flash_attn_func`` around token-layout tensors: batch dims flattened (a copy for strided views)."""
    from flash_attn import flash_attn_func

    batch = torch.broadcast_shapes(q.shape[:-3], k.shape[:-3], v.shape[:-3])

    def flat(x: torch.Tensor) -> torch.Tensor:
        return x.expand(batch + x.shape[-3:]).reshape(-1, *x.shape[-3:])

    o = flash_attn_func(flat(q), flat(k), flat(v))
    return o.reshape(batch + o.shape[-3:])


def _flash_attn_why_not(case: Case, device: str, dtype: torch.dtype) -> str | None:
    try:
        import flash_attn  # noqa: F401
    except Exception as e:  # noqa: BLE001 - any import failure means absent
        return f"flash_attn does not import ({type(e).__name__}: {e}); it needs a CUDA build (pip install flash-attn)"
    if device != "cuda":
        return "flash_attn runs on CUDA tensors only"
    if dtype not in (torch.float16, torch.bfloat16):
        return f"flash_attn needs fp16/bf16, not {dtype}"
    if case.kind == "cross":
        return "key-padding masks need flash_attn_varlen_func (packed sequences); not wired here"
    if case.head_dim > 256:
        return f"head_dim {case.head_dim} > 256"
    return None


def why_not(candidate: str, case: Case, inputs: Inputs, device: str, quick: bool) -> tuple[str, str] | None:
    """``None`` if ``candidate`` can run ``case`` here, else ``(status, reason)``.

    status is ``absent`` (the backend is not there or cannot serve this call; reason from the
    dispatcher) or ``skipped`` (it is there but this run does not time it, e.g. under --quick).
    """
    if candidate in ("torch", "auto", "sdpa"):
        return None
    if candidate == "flash-attn":
        reason = _flash_attn_why_not(case, device, inputs.leaves[0].dtype)
        return None if reason is None else ("absent", reason)
    if candidate == "compile":
        return ("skipped", "--quick does not time torch.compile (compilation takes seconds to minutes)") \
            if quick else None
    reason = kernels.available(case.op).get(candidate)
    if reason is not None:
        return ("absent", reason)
    if candidate == "triton" and device == "cpu" and os.environ.get("TRITON_INTERPRET") == "1":
        return ("skipped", "TRITON_INTERPRET=1: the Triton interpreter checks numerics on CPU, it is not a "
                           "performance path (time triton on a CUDA device)")
    args, kwargs = inputs.build()
    try:
        kernels.resolve(case.op, candidate, *args, **kwargs)
    except kernels.BackendUnavailable as e:
        return ("absent", str(e))
    return None


def make_fn(candidate: str, case: Case, inputs: Inputs) -> Callable[[], object]:
    """A zero-argument forward of ``case`` by ``candidate`` (outputs as the public op returns them)."""
    op = case.op
    if candidate == "compile":
        torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 64)
        compiled = torch.compile(_REFERENCE[op])

        def run_compiled() -> object:
            args, kwargs = inputs.build()
            return compiled(*args, **kwargs)

        return run_compiled
    if candidate in ATTENTION_ONLY:
        user_fn = _sdpa_user if candidate == "sdpa" else _flash_attn_user

        def run_user() -> object:
            args, kwargs = inputs.build()
            return user_fn(*args, **kwargs)

        return run_user
    public = _PUBLIC[op]

    def run_public() -> object:
        args, kwargs = inputs.build()
        return public(*args, **kwargs, backend=candidate)

    return run_public
