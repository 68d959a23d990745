"""Steps whose loss or gradients are not finite: never applied, counted, and (policy ``stop``) fatal in a row.

How a bad step is kept out, on every rank together:

- every DeepSpeed optimizer path checks the global gradient norm before it updates anything and
  discards the step when it is not finite (ZeRO-1/2: fp32 always, bf16 with ``check_grad_overflow``,
  which the trainer turns on; ZeRO-3 and the bf16 optimizer: always). The norm is reduced over all
  ranks, so all ranks agree. Parameters, optimizer moments and the LR schedule stay untouched and the
  engine reports ``was_step_applied() == False``;
- plain fp32 without ZeRO uses :class:`SkippingAdamW`, which makes the same check itself (one
  all-reduce of a flag);
- a non-finite *loss* whose gradients happen to be finite (an ``inf`` constant) is caught too:
  :meth:`NonFiniteGuard.checked` multiplies it by NaN before backward, so its gradients carry the NaN
  into the same check.

The trainer then does not advance its step counter and does not update the EMA; the skip is
counted (``state_dict`` rides in every checkpoint) and logged with the clip keys of the batch.
"""

from __future__ import annotations

import logging
import statistics
from collections import deque

import torch

from ..errors import UserError

log = logging.getLogger(__name__)


class NonFiniteError(UserError, FloatingPointError):
    """``train.nonfinite=stop``: too many non-finite steps in a row."""


class SkippingAdamW(torch.optim.AdamW):
    """AdamW that declines a step when any gradient is not finite (on any rank), like DeepSpeed's optimizers.

    Only active with ``check = True`` (the trainer sets it when DeepSpeed runs the plain optimizer:
    fp32 without ZeRO). Sets ``overflow``, which the DeepSpeed engine reads to count a skipped step.
    """

    check = False
    overflow = False

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[override]
        if self.check:
            grads = [p.grad for g in self.param_groups for p in g["params"] if p.grad is not None]
            bad = torch.zeros(1)
            for g in grads:
                if not torch.isfinite(g).all():
                    bad.fill_(1.0)
                    break
            import torch.distributed as dist

            if dist.is_initialized() and dist.get_world_size() > 1:
                dist.all_reduce(bad, op=dist.ReduceOp.MAX)
            self.overflow = bool(bad.item() > 0)
            if self.overflow:
                self.zero_grad(set_to_none=True)
                return None
        return super().step(closure)


class NonFiniteGuard:
    """Applies ``train.nonfinite`` / ``max_skips_in_row`` and watches for loss spikes."""

    def __init__(self, engine, policy: str, max_in_row: int, spike_factor: float | None, window: int = 100):
        self.engine, self.policy, self.max_in_row, self.spike_factor = engine, policy, max_in_row, spike_factor
        opt = engine.optimizer
        if isinstance(opt, SkippingAdamW):
            opt.check = True
        elif not hasattr(opt, "overflow"):
            raise RuntimeError(f"DeepSpeed's optimizer {type(opt).__name__} reports no overflow flag: non-finite steps "
                               "could not be kept out (use the trainer's SkippingAdamW or a ZeRO stage >= 1)")
        self.skipped = 0
        self.in_row = 0
        self.spikes = 0
        self.recent: deque[float] = deque(maxlen=window)

    @staticmethod
    def checked(loss: torch.Tensor) -> torch.Tensor:
        """The loss to backpropagate: itself, or NaN-poisoned when it is not finite (see the module docstring)."""
        if torch.isfinite(loss).all():
            return loss
        return loss * float("nan")

    def after_step(self, step: int, finite_loss: bool, keys: list[str]) -> bool:
        """After ``engine.step()`` at the accumulation boundary: was the step applied? Counts and raises."""
        applied = bool(self.engine.was_step_applied())
        if applied and not finite_loss:
            raise RuntimeError("internal error: DeepSpeed applied a step whose loss was not finite")
        if applied:
            self.in_row = 0
            return True
        self.skipped += 1
        self.in_row += 1
        what = "loss" if not finite_loss else "gradients"
        shown = ", ".join(keys[:8]) + (f", ... ({len(keys)} clips)" if len(keys) > 8 else "")
        log.warning("non-finite %s after step %d: step skipped (%d in a row, %d in all); clips: %s",
                    what, step, self.in_row, self.skipped, shown or "?")
        if self.policy == "stop" and self.in_row >= self.max_in_row:
            raise NonFiniteError(
                f"{self.in_row} non-finite steps in a row after step {step} (train.nonfinite=stop, "
                f"train.max_skips_in_row={self.max_in_row}); last batch: {shown or '?'}. Lower optim.lr, check these "
                "clips, or set train.nonfinite=skip")
        return False

    def observe_loss(self, step: int, loss: float) -> None:
        """Log a loss above ``spike_factor`` x the running median of the last ``window`` losses."""
        if not (loss == loss) or self.spike_factor is None:  # NaN
            return
        if len(self.recent) >= 10:
            med = statistics.median(self.recent)
            if med > 0 and loss > self.spike_factor * med:
                self.spikes += 1
                log.warning("loss spike at step %d: %.4g is %.1fx the running median %.4g", step, loss, loss / med,
                            med)
        self.recent.append(loss)

    def state_dict(self) -> dict:
        return {"skipped": self.skipped, "in_row": self.in_row, "spikes": self.spikes}

    def load_state_dict(self, sd: dict | None) -> None:
        if sd:
            self.skipped, self.in_row, self.spikes = int(sd["skipped"]), int(sd["in_row"]), int(sd["spikes"])
