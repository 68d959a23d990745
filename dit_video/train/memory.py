"""What one rank holds for training, read from the DeepSpeed engine (what ZeRO partitions).

    params     the module's parameter storage on this rank (ZeRO-3: this rank's partition, ``ds_tensor``)
    grads      gradient storage: ``p.grad`` plus ZeRO's reduced partitions (``averaged_gradients``,
               ``grads_in_partition``); read it between backward and step, when it is alive
    optimizer  fp32 master partitions (ZeRO) + the optimizer's state tensors (Adam's two moments)

ZeRO-1 divides ``optimizer`` by the number of ranks, ZeRO-2 ``grads`` too, ZeRO-3 ``params`` too.
"""

from __future__ import annotations

import torch


def _bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors if isinstance(t, torch.Tensor))


def zero_bytes(engine) -> dict[str, int]:
    """Per-rank bytes of parameters, gradients and optimizer state (see the module docstring)."""
    o = engine.optimizer
    params = _bytes(p.ds_tensor if hasattr(p, "ds_tensor") else p for p in engine.module.parameters())
    grads = _bytes(p.grad for p in engine.module.parameters() if p.grad is not None)
    avg = getattr(o, "averaged_gradients", None)
    if isinstance(avg, dict):
        grads += _bytes(t for group in avg.values() if group is not None for t in group)
    grads += _bytes([getattr(o, "grads_in_partition", None)])  # ZeRO-2's accumulated partition
    master = 0
    for name in ("single_partition_of_fp32_groups", "fp32_partitioned_groups_flat"):
        master += _bytes(getattr(o, name, None) or [])
    inner = getattr(o, "optimizer", o)
    moments = _bytes(t for state in getattr(inner, "state", {}).values() for t in state.values() if t.dim() > 0)
    return {"params": params, "grads": grads, "optimizer": master + moments}
