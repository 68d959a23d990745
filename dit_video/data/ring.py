"""Shared-memory batch slots that DataLoader workers fill and the loader's process reads in place.

Handing a fresh shared tensor per batch through the DataLoader costs more than decoding it: a 25 MB
uint8 batch (8 x 16 x 256 x 256 x 3) took 43 ms to create with ``share_memory_()`` and 26 ms with a
new shared storage plus first-touch page faults, against 1.2 ms to refill memory already mapped
(measured here). So the loader maps one anonymous ``MAP_SHARED`` region before its workers fork;
each worker owns ``slots`` slots of it, writes a batch into a free slot, and sends only the slot's
number through the DataLoader. The loader's process wraps the slot in a tensor (``torch.from_numpy``
over a numpy view) and watches that view with ``weakref.finalize``: when the last tensor or view of
the batch is gone, the slot is marked free again and its worker reuses it. Nothing is copied and
no batch memory is reused while anything still refers to it; a worker that finds no free slot
(the consumer keeps many batches) falls back to a fresh shared tensor.

One flag byte per slot (0 free, 1 taken) lives at the start of the region: a worker sets it when it
takes a slot, the loader's process clears it; no slot has two writers at once.
"""

from __future__ import annotations

import mmap
import weakref

import numpy as np


class BatchRing:
    """``workers x slots`` slots of ``slot_bytes`` each, in one shared anonymous mapping."""

    def __init__(self, workers: int, slots: int, slot_bytes: int) -> None:
        self.workers, self.slots = workers, slots
        self.slot_bytes = (int(slot_bytes) + 4095) // 4096 * 4096  # page-aligned slots
        self.header = (workers * slots + 4095) // 4096 * 4096
        self.buf = mmap.mmap(-1, self.header + workers * slots * self.slot_bytes, flags=mmap.MAP_SHARED)
        self.flags = np.frombuffer(self.buf, dtype=np.uint8, count=workers * slots)

    def _offset(self, worker: int, slot: int) -> int:
        return self.header + (worker * self.slots + slot) * self.slot_bytes

    def acquire(self, worker: int, nbytes: int) -> int | None:
        """A free slot of ``worker`` (now taken), or None if all are taken or ``nbytes`` does not fit one."""
        if nbytes > self.slot_bytes:
            return None
        base = worker * self.slots
        for s in range(self.slots):
            if self.flags[base + s] == 0:
                self.flags[base + s] = 1
                return s
        return None

    def array(self, worker: int, slot: int, shape: tuple, dtype) -> np.ndarray:
        """A numpy view of a slot (the worker writes into it)."""
        dtype = np.dtype(dtype)
        count = int(np.prod(shape))
        return np.frombuffer(self.buf, dtype=dtype, count=count, offset=self._offset(worker, slot)).reshape(shape)

    def release(self, worker: int, slot: int) -> None:
        self.flags[worker * self.slots + slot] = 0

    def tensor(self, worker: int, slot: int, shape: tuple, dtype):
        """A tensor over a slot (the loader's process); the slot is freed once nothing refers to its memory."""
        import torch

        arr = self.array(worker, slot, shape, dtype)
        weakref.finalize(arr, self.release, worker, slot)
        return torch.from_numpy(arr)  # holds `arr` until the tensor's storage dies


_NP_DTYPES = {"uint8": np.uint8, "float32": np.float32}


def numpy_dtype(name: str):
    return _NP_DTYPES[name]
