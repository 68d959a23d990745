"""``make_loader``: the resumable, multi-worker batch stream the trainer iterates.

Workers produce deterministic streams (see :mod:`dit_video.data.pipeline`); this module delivers
their batches in a fixed round-robin order (buffering the odd batch the DataLoader hands over
early), tracks for each worker how far the *delivered* batches reach, and exposes that as
``state_dict()``. Restoring it restarts each worker at its position, so the next batches are the
ones an uninterrupted run would have produced: no sample repeated or skipped.

Video batches travel from the workers through a shared-memory ring (:mod:`dit_video.data.ring`):
only a slot number crosses the DataLoader's queue, and the batch tensor views the slot in place.
"""

from __future__ import annotations

import copy
import logging
import multiprocessing
import time
from collections import deque
from collections.abc import Iterator
from typing import Any

import numpy as np
from torch.utils.data import DataLoader

from . import buckets as bucketing
from .config import DataConfig
from .ring import BatchRing
from .shardlist import fingerprint, list_shards
from .stats import merge

log = logging.getLogger("dit_video.data")
STATE_VERSION = 2  # 2: per-worker "pending" (samples in unfinished bucket batches); 1 is read as pending=[]


class WorkerDiedError(RuntimeError):
    """A DataLoader worker process died (not a decoder: those are sandboxed and counted)."""


class VideoLoader:
    """Iterable of ``{"video": uint8 [B, C, T, H, W] in [0, 255], "caption": [str], "key": [str]}``
    (:func:`dit_video.data.to_float` makes it float32 in [-1, 1] on its device; ``output_dtype="float32"``
    has the workers do it), or with
    ``kind="latents"`` of ``{"latents", "text", "text_mask", "caption", "key"}`` (see
    :mod:`dit_video.data.latents`). ``video`` is ``torch.channels_last_3d`` in memory (channels
    fastest), which saves a transposing copy per clip; ``.to(device)`` keeps that layout and Conv3d
    takes it. Call ``.contiguous()`` where plain NCTHW memory is needed. With ``data.buckets`` each
    batch is one bucket's shape and batch size.

    Iterating again continues the stream where the last iteration stopped. ``timing()`` says how long
    the caller waited for batches.
    """

    def __init__(self, cfg: DataConfig, rank: int = 0, world_size: int = 1) -> None:
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, world_size={world_size})")
        self.cfg, self.rank, self.world_size = cfg, rank, world_size
        self.shards = list_shards(cfg.shards, allow_pipe=cfg.allow_pipe)
        self.num_streams = max(1, cfg.num_workers)  # logical workers; 0 and 1 worker give the same stream
        if not cfg.resample and len(self.shards) < world_size * self.num_streams:
            raise ValueError(
                f"{len(self.shards)} shard(s) in {cfg.shards!r} cannot feed {world_size} rank(s) x "
                f"{self.num_streams} worker(s): each reader needs at least one shard. Write more, smaller shards "
                f"(--samples-per-shard), lower data.num_workers, or set data.resample=true")
        self.buckets = bucketing.resolve_buckets(cfg)
        self.manifest = None  # latent shards: what made them (dit_video.data.latents)
        if cfg.kind == "latents":
            from .latents import shard_manifest

            self.manifest = shard_manifest(self.shards)
        self._state = self._initial_state()
        self.ring: BatchRing | None = None
        self.wait_s = 0.0  # time spent waiting for the next batch, summed
        self.batches = 0

    # -- state ---------------------------------------------------------------------------------
    def _initial_state(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION, "seed": self.cfg.seed, "rank": self.rank, "world_size": self.world_size,
            "num_workers": self.num_streams, "shards": fingerprint(self.shards), "num_shards": len(self.shards),
            "next_worker": 0,
            "workers": [{"epoch": 0, "pos": 0, "done": False, "counters": {}, "pending": []}
                        for _ in range(self.num_streams)],
        }

    def state_dict(self) -> dict[str, Any]:
        """Where the delivered batches end, per worker; plain Python types (JSON-able)."""
        sd = copy.deepcopy(self._state)
        sd["epoch"] = min(w["epoch"] for w in sd["workers"])
        return sd

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        """Resume from ``state_dict()``; the seed, world size, rank, worker count and shards must match."""
        mine = self._initial_state()
        if sd.get("version") not in (1, STATE_VERSION):
            raise ValueError(f"data loader state has version {sd.get('version')}, expected {STATE_VERSION}")
        checks = [("world_size", "world size"), ("num_workers", "data.num_workers (logical workers; 0 counts as 1)"),
                  ("rank", "rank"), ("seed", "data.seed"), ("shards", "shard list")]
        for key, what in checks:
            if sd.get(key) != mine[key]:
                raise ValueError(
                    f"cannot resume the data stream: the checkpoint was written with {what} = {sd.get(key)!r}, "
                    f"this run has {mine[key]!r}. Resuming exactly needs the same seed, world size, worker count "
                    f"and shards; restart the data stream (drop the loader state) or use the original settings")
        if len(sd["workers"]) != self.num_streams:
            raise ValueError(f"loader state holds {len(sd['workers'])} worker streams, expected {self.num_streams}")
        state = copy.deepcopy({k: v for k, v in sd.items() if k != "epoch"})
        for w in state["workers"]:
            w.setdefault("pending", [])
        state["version"] = STATE_VERSION
        self._state = state

    def stats(self) -> dict[str, int]:
        """Counters by reason over all workers (``samples``, ``skipped/<reason>``, ``padded/too_short``,
        ``bucket/<FxHxW>``, ...)."""
        return merge([w["counters"] for w in self._state["workers"]])

    def timing(self) -> dict[str, float]:
        """``{"wait_s": seconds the caller waited for batches, "batches": delivered}`` since creation."""
        return {"wait_s": self.wait_s, "batches": float(self.batches)}

    # -- iteration -----------------------------------------------------------------------------
    def _next_worker(self) -> int | None:
        workers = self._state["workers"]
        for i in range(self.num_streams):
            w = (self._state["next_worker"] + i) % self.num_streams
            if not workers[w]["done"]:
                return w
        return None

    def _dataset(self, ring: BatchRing | None):
        from .pipeline import VideoStream

        if self.cfg.kind == "latents":
            from .latents import LatentStream

            cls = LatentStream
        else:
            cls = VideoStream
        return cls(self.cfg, self.shards, self.rank, self.world_size, self.num_streams,
                   copy.deepcopy(self._state["workers"]), ring=ring)

    def _ring(self) -> BatchRing | None:
        """Reusable batch slots (video): shared with forked workers, or this process's own with no workers."""
        cfg = self.cfg
        if cfg.kind != "video" or (cfg.num_workers > 0 and multiprocessing.get_start_method() != "fork"):
            return None
        shapes = ([(b.batch_size, b.frames, b.height, b.width) for b in self.buckets]
                  or [(cfg.batch_size, cfg.num_frames, cfg.size, cfg.size)])
        itemsize = 1 if cfg.output_dtype == "uint8" else 4
        slot_bytes = max(int(np.prod(s)) * 3 * itemsize for s in shapes)
        # slots a worker may hold at once: one open batch per bucket, the DataLoader's prefetch, two in hand
        return BatchRing(max(1, cfg.num_workers), len(shapes) + cfg.prefetch_factor + 2, slot_bytes)

    def _dataloader(self):
        ring = self.ring = self._ring()  # the current iteration's batch slots (None for latents)
        dataset = self._dataset(ring)
        if self.cfg.num_workers == 0:
            return iter(dataset), ring
        dl = DataLoader(dataset, batch_size=None, num_workers=self.cfg.num_workers,
                        prefetch_factor=self.cfg.prefetch_factor, pin_memory=False, persistent_workers=False)
        return iter(dl), ring

    def _batch(self, got: dict, ring: BatchRing | None) -> dict[str, Any]:
        if self.cfg.kind == "latents":
            batch = {k: got[k] for k in ("latents", "text", "text_mask", "caption", "key")}
            tensors = ("latents", "text", "text_mask")
        else:
            if "slot" in got:
                worker, slot, shape, dtype, n = got["slot"]
                video = ring.tensor(worker, slot, tuple(shape), dtype)[:n].permute(0, 4, 1, 2, 3)
            else:
                video = got["video"]
            batch = {"video": video, "caption": got["caption"], "key": got["key"]}
            tensors = ("video",)
        if self.cfg.pin_memory:
            import torch

            if torch.cuda.is_available():
                for k in tensors:
                    batch[k] = batch[k].pin_memory()
        return batch

    def __iter__(self) -> Iterator[dict[str, Any]]:
        if self._next_worker() is None:
            return
        it, ring = self._dataloader()
        pending: dict[int, deque] = {w: deque() for w in range(self.num_streams)}
        workers = self._state["workers"]
        try:
            while True:
                t0 = time.perf_counter()
                try:
                    item = next(it)
                except StopIteration:
                    break
                except RuntimeError as e:
                    if "DataLoader worker" in str(e) and ("exited unexpectedly" in str(e) or "killed" in str(e)):
                        raise WorkerDiedError(
                            f"a data loader worker process died: {e}. Decoder hangs and crashes are contained per "
                            f"sample (counted as skipped/decode_timeout, skipped/decode_crash), so the worker itself "
                            f"failed; the usual cause is the out-of-memory killer (check `dmesg`): lower "
                            f"data.num_workers, data.batch_size or data.shuffle_buffer. Resume from the last "
                            f"checkpoint's loader state.") from e
                    raise
                finally:
                    self.wait_s += time.perf_counter() - t0
                pending[item["__worker__"]].append(item)
                while (w := self._next_worker()) is not None and pending[w]:
                    got = pending[w].popleft()
                    st = workers[w]
                    st["epoch"], st["pos"], st["counters"] = got["__epoch__"], got["__pos__"], got["__counters__"]
                    st["pending"] = got["__pending__"]
                    if got["__end__"]:
                        st["done"] = True
                        continue
                    self._state["next_worker"] = (w + 1) % self.num_streams
                    self.batches += 1
                    yield self._batch(got, ring)
                if self._next_worker() is None:
                    break
        finally:
            del it  # shuts the DataLoader's workers down


def make_loader(cfg: DataConfig, rank: int = 0, world_size: int = 1) -> VideoLoader:
    """The training stream for ``rank`` of ``world_size``; see :class:`VideoLoader`."""
    if not isinstance(cfg, DataConfig):  # an omegaconf DictConfig built from the dataclass
        from omegaconf import OmegaConf

        cfg = DataConfig(**(cfg if isinstance(cfg, dict) else OmegaConf.to_container(cfg, resolve=True)))
    return VideoLoader(cfg, rank=rank, world_size=world_size)
