"""Exponential moving average of the trainable weights, kept in fp32.

The shadow is a plain module (a copy of the trained one, never wrapped by DeepSpeed), so any
rank can sample from it on its own. Under ZeRO-3 the live parameters are shells outside
forward; :meth:`EMA.update` gathers them first.
"""

from __future__ import annotations

import copy
from contextlib import nullcontext

import torch
import torch.nn as nn


class EMA:
    """``shadow = decay * shadow + (1 - decay) * param`` after each optimizer step, in fp32."""

    def __init__(self, module: nn.Module, decay: float, warmup: bool = True):
        self.decay = decay
        self.warmup = warmup
        self.shadow = copy.deepcopy(module).float().eval().requires_grad_(False)

    def current_decay(self, step: int) -> float:
        if not self.warmup:
            return self.decay
        return min(self.decay, (1.0 + step) / (10.0 + step))

    @torch.no_grad()
    def update(self, module: nn.Module, step: int) -> None:
        d = self.current_decay(step)
        params = [p for _, p in module.named_parameters()]
        gather = nullcontext()
        if any(hasattr(p, "ds_id") for p in params):  # ZeRO-3: gather the partitioned weights
            import deepspeed

            gather = deepspeed.zero.GatheredParameters(params, modifier_rank=None)
        with gather:
            live, shadow = [], []
            for (name, p), (sname, s) in zip(module.named_parameters(), self.shadow.named_parameters()):
                if name != sname:
                    raise RuntimeError(f"EMA shadow out of sync with the model: {name} vs {sname}")
                live.append(p.detach().float())  # no copy when already fp32
                shadow.append(s)
            torch._foreach_lerp_(shadow, live, 1.0 - d)  # one call over every tensor (a loop cost 1.3 ms/step)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().float().contiguous() for k, v in self.shadow.state_dict().items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.shadow.load_state_dict(state, strict=True)
