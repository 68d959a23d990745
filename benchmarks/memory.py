"""Memory measurements that do not depend on the allocator of the device.

- :func:`saved_bytes`: bytes saved for backward by a forward, counted with
  ``torch.autograd.graph.saved_tensors_hooks`` (docs/kernels.md §5), one count per storage, parameters
  excluded. Works eagerly and under torch.compile (the compiled graph saves through the same hooks).
  It does not see what non-reentrant activation checkpointing keeps alive (the block inputs held
  by its recompute closure): use :func:`held_bytes` for that.
- :func:`held_bytes`: bytes of tensors created by a forward that are still alive when it returns
  (everything kept for backward, whatever keeps it), and the peak of live bytes through forward and
  backward, tracked with a ``TorchDispatchMode``. Eager only (compiled code allocates outside the
  dispatcher).
- :func:`peak_rss_delta`: CPU, peak resident-set growth while a function runs, sampled from
  ``/proc/self/statm`` every millisecond (allocator caching makes it an upper-bound-ish estimate).
- :func:`cuda_peak`: ``torch.cuda.max_memory_allocated`` growth over a call.
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from collections.abc import Callable, Iterable

import torch
from torch.autograd.graph import saved_tensors_hooks
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves


def _storage_key(t: torch.Tensor) -> tuple[str, int]:
    s = t.untyped_storage()
    return (str(t.device), s.data_ptr())


def saved_bytes(fn: Callable[[], object], exclude: Iterable[torch.Tensor] = ()) -> tuple[int, object]:
    """Run ``fn`` (a forward); return (bytes saved for backward, fn's result).

    Storages of ``exclude`` (parameters, usually) are not counted; each storage counts once.
    """
    skip = {_storage_key(t) for t in exclude}
    seen: dict[tuple[str, int], int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        if t.device.type != "meta":
            key = _storage_key(t)
            if key not in skip:
                seen[key] = t.untyped_storage().nbytes()
        return t

    with saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return sum(seen.values()), out


class _LiveTracker(TorchDispatchMode):
    """Tracks the bytes of storages created under it that are still alive; keeps the peak."""

    def __init__(self) -> None:
        super().__init__()
        self.live: dict[int, int] = {}
        self.current = 0
        self.peak = 0
        self._refs: dict[int, weakref.ref] = {}

    def _freed(self, key: int) -> None:
        self.current -= self.live.pop(key, 0)
        self._refs.pop(key, None)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor) and t.device.type != "meta":
                s = t.untyped_storage()
                key = id(s)
                if key in self.live or s.nbytes() == 0:
                    continue
                try:
                    self._refs[key] = weakref.ref(s, lambda _r, k=key: self._freed(k))
                except TypeError:  # storage not weak-referenceable: skip rather than leak counts
                    continue
                self.live[key] = s.nbytes()
                self.current += s.nbytes()
                self.peak = max(self.peak, self.current)
        return out


def held_bytes(forward: Callable[[], torch.Tensor], backward: Callable[[torch.Tensor], None]) -> dict[str, int]:
    """``{"held_bytes": live bytes after forward, "peak_live_bytes": peak through fwd+bwd}``.

    ``forward`` returns the loss; ``backward(loss)`` runs the backward pass. Bytes are counted from
    tensors created under the tracker only (parameters and inputs made before are excluded).
    """
    tracker = _LiveTracker()
    with tracker:
        loss = forward()
        held = tracker.current
        backward(loss)
    return {"held_bytes": int(held), "peak_live_bytes": int(tracker.peak)}


def _rss_bytes() -> int:
    with open("/proc/self/statm", "rb") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss_delta(fn: Callable[[], object], interval_s: float = 0.001) -> int | None:
    """Peak RSS minus RSS before ``fn``, sampled by a thread (Linux); ``None`` where unsupported."""
    try:
        base = _rss_bytes()
    except (OSError, ValueError):
        return None
    peak = base
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, _rss_bytes())
            time.sleep(interval_s)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    try:
        fn()
    finally:
        done.set()
        th.join()
    peak = max(peak, _rss_bytes())
    return max(0, peak - base)


def cuda_peak(fn: Callable[[], object]) -> int:
    """Growth of ``torch.cuda.max_memory_allocated`` over one call of ``fn``."""
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    fn()
    torch.cuda.synchronize()
    return int(torch.cuda.max_memory_allocated() - base)
