"""The ``flash`` backend: attention through the flash-attn package (Dao et al.) on CUDA, when it is installed.

flash-attn takes ``flash_attn_func(q, k, v, dropout_p, softmax_scale, causal)`` with q ``[B, Lq, H, D]``,
k/v ``[B, Lk, H, D]`` (fp16 / bf16, unit stride in the head dim, D <= 256), and for padded keys
``flash_attn_varlen_func`` over packed sequences (``[total, H, D]`` + int32 ``cu_seqlens``). Our
contract (``reference.attention_ref``) is wider, so this adapter maps it:

    leading dims [..., L, H, D]   folded into one batch dim: a view when the strides allow (the spatial
                                  view of a fused qkv), else one packing copy (the temporal view)
    k/v broadcast (text keys)     expanded to q's batch (flash-attn has no stride-0 batch)
    key_padding_mask [..., Lk]    the valid keys of each sequence packed for the varlen kernel; a
                                  sequence with no valid key is left out and gets 0 (and no gradient)
    head dim not a multiple of 8  zero-padded to one (zero q/k columns do not change q k^T; padded v
                                  columns are sliced off); softmax_scale stays the unpadded D's

Gradients flow through flash-attn's own autograd and these torch ops. Imported only when the backend
is asked for; a missing package makes the backend unavailable with that reason. Tested on CPU against a
stand-in module with flash-attn's signatures and constraints (tests/kernels/test_flash_backend.py); the
real package needs a GPU this project's machines lack.
"""

from __future__ import annotations

import torch

from . import dispatch

try:
    import flash_attn as _flash_attn  # noqa: F401 - checked at import: dispatch lists the reason if missing
except ImportError as e:
    raise ModuleNotFoundError(f"flash-attn is not installed ({e}); pip install flash-attn on a CUDA machine",
                              name="flash_attn") from e

MAX_HEAD_DIM = 256
DTYPES = (torch.float16, torch.bfloat16)


def _flash():
    import flash_attn

    return flash_attn


def check(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_padding_mask: torch.Tensor | None = None,
          scale: float | None = None) -> str | None:
    if q.device.type != "cuda":
        return f"needs CUDA tensors (got {q.device.type})"
    return shape_reason(q, k, v, key_padding_mask)


def shape_reason(q, k, v, key_padding_mask) -> str | None:
    """Everything but the device: dtypes, head dims, masks."""
    if q.dtype not in DTYPES or k.dtype != q.dtype or v.dtype != q.dtype:
        return f"dtype {q.dtype} (flash-attn takes fp16/bf16, all alike)"
    if v.shape[-1] != q.shape[-1]:
        return f"value head dim {v.shape[-1]} != query head dim {q.shape[-1]}"
    if q.shape[-1] > MAX_HEAD_DIM:
        return f"head_dim {q.shape[-1]} > {MAX_HEAD_DIM}"
    if key_padding_mask is not None and key_padding_mask.dtype != torch.bool:
        return f"key_padding_mask dtype {key_padding_mask.dtype} (want bool)"
    return None


def _fold(t: torch.Tensor, batch: tuple[int, ...]) -> torch.Tensor:
    """[*b, L, H, D] (b broadcastable to batch) -> [prod(batch), L, H, D], a view when the strides allow."""
    t = t.expand(batch + tuple(t.shape[-3:]))
    t = t.reshape((-1,) + tuple(t.shape[-3:]))  # a view when the folded dims are contiguous, else a copy
    return t if t.stride(-1) == 1 and t.stride(0) != 0 else t.contiguous()  # no stride-0 batch for flash-attn


def _pad_d(t: torch.Tensor, d8: int) -> torch.Tensor:
    return t if t.shape[-1] == d8 else torch.nn.functional.pad(t, (0, d8 - t.shape[-1]))


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_padding_mask: torch.Tensor | None = None,
              scale: float | None = None) -> torch.Tensor:
    """flash-attn under our attention contract (see the module docstring)."""
    fa = _flash()
    lq, h, d = q.shape[-3:]
    lk = k.shape[-3]
    scale = d ** -0.5 if scale is None else float(scale)
    shapes = [q.shape[:-3], k.shape[:-3], v.shape[:-3]]
    if key_padding_mask is not None:
        shapes.append(key_padding_mask.shape[:-1])
    batch = tuple(torch.broadcast_shapes(*shapes))
    d8 = -(-d // 8) * 8
    qf, kf, vf = (_pad_d(_fold(t, batch), d8) for t in (q, k, v))
    n = qf.shape[0]
    if key_padding_mask is None:
        o = fa.flash_attn_func(qf, kf, vf, 0.0, softmax_scale=scale, causal=False)
        return o[..., :d].reshape(batch + (lq, h, d))
    m = key_padding_mask.expand(batch + (lk,)).reshape(n, lk)
    counts = m.sum(-1)
    live = counts > 0  # sequences with at least one valid key
    out = qf.mul(0.0)  # zeros that stay in the graph (q's gradient there is exactly 0)
    if bool(live.any()):
        idx = live.nonzero().squeeze(-1)
        ml = m[idx]
        kv_len = counts[idx].to(torch.int32)
        cu_k = torch.nn.functional.pad(kv_len.cumsum(0, dtype=torch.int32), (1, 0))
        cu_q = torch.arange(0, (len(idx) + 1) * lq, lq, dtype=torch.int32, device=q.device)
        kp, vp = kf[idx][ml], vf[idx][ml]  # [total_k, H, D8]: the valid keys, sequence after sequence
        qp = qf[idx].reshape(-1, h, d8)
        o = fa.flash_attn_varlen_func(qp, kp, vp, cu_q, cu_k, lq, int(kv_len.max()), 0.0, softmax_scale=scale,
                                      causal=False)
        out = out.index_copy(0, idx, o.reshape(len(idx), lq, h, d8))
    return out[..., :d].reshape(batch + (lq, h, d))


dispatch.register("attention", "flash", attention, check)
