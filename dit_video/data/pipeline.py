"""The per-worker sample stream: shards -> tar samples -> shuffle -> decode -> clips -> batches.

Each (rank, logical worker) pair owns a deterministic stream: for epoch ``e`` the shard list is
shuffled with ``(seed, e)``, split by node then by worker (webdataset's ``split_by_node`` /
``split_by_worker`` slicing, with explicit rank/worker instead of the ones webdataset reads from the
environment), or drawn with replacement with ``(seed, e, rank, worker)`` when ``resample``; tars
are read with webdataset's ``url_opener`` / ``tar_file_expander`` / ``group_by_keys``, samples go
through webdataset's shuffle buffer with a seeded RNG, and each sample's crop and start are drawn
from an RNG seeded by its position. So a stream can be replayed: to resume after ``pos`` samples of
epoch ``e``, the worker re-reads (without decoding) the first ``pos`` samples and continues.

Batches are assembled in the worker and carry the worker's id, position and counters, which
:class:`dit_video.data.loader.VideoLoader` turns into the stream state and the stats.
"""

from __future__ import annotations

import json
import math
import random
import re
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
import webdataset as wds
from PIL import Image
from torch.utils.data import IterableDataset, get_worker_info

from . import codec
from .config import DataConfig
from .sandbox import DecodeSandbox
from .stats import Counters

VIDEO_EXTS = ("mp4", "webm", "mkv", "mov", "avi")
CAPTION_EXTS = ("txt", "caption")


def _rng(*parts: Any) -> random.Random:
    return random.Random(":".join(str(p) for p in parts))  # str seeds hash with sha512: same in every process


def to_float(video: torch.Tensor) -> torch.Tensor:
    """uint8 video in [0, 255] (``output_dtype="uint8"``) -> float32 in [-1, 1], on the tensor's device."""
    return video.float().div_(127.5).sub_(1.0) if video.dtype == torch.uint8 else video


def shards_for(cfg: DataConfig, shards: list[str], epoch: int, rank: int, world_size: int,
               worker: int, num_workers: int) -> list[str]:
    """The shards that (rank, worker) reads in ``epoch``."""
    if cfg.resample:
        rng = _rng(cfg.seed, "resample", epoch, rank, worker)
        k = max(1, math.ceil(len(shards) / (world_size * num_workers)))
        return [rng.choice(shards) for _ in range(k)]
    order = list(shards)
    if cfg.shuffle_buffer > 1:
        _rng(cfg.seed, "shards", epoch).shuffle(order)
    return order[rank::world_size][worker::num_workers]


class VideoStream(IterableDataset):
    """IterableDataset over one rank's share of the shards; yields ready batches (``batch_size=None``).

    ``resume[w] = {"epoch", "pos", "done", "counters"}`` is where logical worker ``w`` starts.
    """

    def __init__(self, cfg: DataConfig, shards: list[str], rank: int, world_size: int, num_workers: int,
                 resume: list[dict]) -> None:
        self.cfg, self.shards, self.rank, self.world_size = cfg, shards, rank, world_size
        self.num_workers, self.resume = num_workers, resume

    def __iter__(self) -> Iterator[dict]:
        info = get_worker_info()
        worker = 0 if info is None else info.id
        state = self.resume[worker]
        counters = Counters(state["counters"])
        if state.get("done"):
            yield self._marker(worker, state["epoch"], state["pos"], counters, end=True)
            return
        sandbox = DecodeSandbox(self.cfg.decode_timeout_s) if self._use_sandbox() else None
        try:
            yield from self._batches(worker, state["epoch"], state["pos"], counters, sandbox)
        finally:
            if sandbox is not None:
                sandbox.close()

    def _use_sandbox(self) -> bool:
        return self.cfg.decode_timeout_s > 0 and DecodeSandbox.available()

    @staticmethod
    def _marker(worker: int, epoch: int, pos: int, counters: Counters, end: bool = False) -> dict:
        return {"__worker__": worker, "__epoch__": epoch, "__pos__": pos, "__counters__": dict(counters),
                "__end__": end}

    # -- raw samples ---------------------------------------------------------------------------
    def _raw(self, worker: int, epoch: int) -> Iterator[dict]:
        cfg = self.cfg

        seen: set[tuple[str, str]] = set()

        def handler(exn: Exception) -> bool:  # webdataset stage handler: note the error (counted in order), go on
            # webdataset reports a truncated tar twice (member iterator, then shard expander): count it once
            shard = next((a for a in exn.args if isinstance(a, str) and a in urls), None)
            if shard is None:
                m = re.search(r"name='([^']+)'", str(exn.args[0]) if exn.args else "")
                shard = m.group(1) if m else "?"
            if (shard, type(exn).__name__) not in seen:
                seen.add((shard, type(exn).__name__))
                self._tar_errors.append(f"{shard}: {type(exn).__name__}: {exn.args[0] if exn.args else exn}")
            return True

        urls = shards_for(cfg, self.shards, epoch, self.rank, self.world_size, worker, self.num_workers)
        src = wds.tariterators.url_opener(({"url": u} for u in urls), handler=handler)
        files = wds.tariterators.tar_file_expander(src, handler=handler)
        samples = wds.tariterators.group_by_keys(files, handler=handler)
        if cfg.shuffle_buffer > 1:
            rng = _rng(cfg.seed, "buffer", epoch, self.rank, worker)
            samples = wds.filters._shuffle(samples, bufsize=cfg.shuffle_buffer, initial=cfg.shuffle_buffer, rng=rng)
        return samples

    def _positions(self, worker: int, epoch: int, skip: int) -> Iterator[tuple[int, int, dict, list[str]]]:
        """``(epoch, pos, raw sample, tar errors met since the previous sample)`` forever (or for
        cfg.epochs), starting after ``skip`` samples of ``epoch``. Tar errors travel with the next sample
        so that they are counted in stream order (and once, across a resume)."""
        cfg = self.cfg
        self._tar_errors = []
        while cfg.epochs is None or epoch < cfg.epochs:
            pos = 0
            for raw in self._raw(worker, epoch):
                pos += 1
                errors, self._tar_errors = self._tar_errors, []
                if pos <= skip:  # replaying to resume: read, don't decode, don't count (counted before)
                    continue
                yield epoch, pos, raw, errors
            if pos == 0 and cfg.epochs is None:  # would loop forever yielding nothing
                mine = shards_for(cfg, self.shards, epoch, self.rank, self.world_size, worker, self.num_workers)
                raise RuntimeError(f"data worker {worker} of rank {self.rank} read no sample in epoch {epoch} "
                                   f"from {mine}; errors: {self._tar_errors[:3]}")
            epoch, skip = epoch + 1, 0

    # -- decoding ------------------------------------------------------------------------------
    def _job(self, worker: int, epoch: int, pos: int, raw: dict, tar_errors: list[str]) -> dict:
        """What to decode for one sample and how to cut it (deterministic in its position); counts nothing."""
        cfg = self.cfg
        rng = _rng(cfg.seed, "sample", self.rank, worker, epoch, pos)
        u_start = rng.random() if cfg.random_start else 0.5
        crop = (rng.random(), rng.random()) if cfg.random_crop else (0.5, 0.5)
        plan = codec.ClipPlan(num_frames=cfg.num_frames, frame_stride=cfg.frame_stride, fps=cfg.fps,
                              u_start=u_start, pad_short=cfg.short_clips == "pad", threads=cfg.decode_threads)
        return {"epoch": epoch, "pos": pos, "raw": raw, "key": raw.get("__key__", "?"), "tar_errors": tar_errors,
                "ext": next((e for e in VIDEO_EXTS if e in raw), None), "plan": plan, "crop": crop}

    @staticmethod
    def _submit(job: dict, sandbox: DecodeSandbox | None) -> None:
        if job["ext"] is not None and sandbox is not None:
            sandbox.submit(job["raw"][job["ext"]], job["plan"])

    @staticmethod
    def _collect(job: dict, sandbox: DecodeSandbox | None) -> tuple:
        """``("ok", frames, info)`` or ``("skip", reason, message)``."""
        raw = job["raw"]
        if job["ext"] is None:
            return ("skip", "no_mp4", f"no video member (members: {sorted(k for k in raw if not k.startswith('__'))})")
        try:
            if sandbox is not None:
                return ("ok", *sandbox.collect(copy=False))
            return ("ok", *codec.decode_clip(raw[job["ext"]], job["plan"]))
        except codec.DecodeFailure as e:
            return ("skip", e.reason, e.message)

    @staticmethod
    def _caption(raw: dict, key: str, counters: Counters) -> str:
        for ext in CAPTION_EXTS:
            if ext in raw:
                return raw[ext].decode("utf-8", errors="replace").strip()
        if "json" in raw:
            try:
                meta = json.loads(raw["json"])
                if isinstance(meta, dict) and isinstance(meta.get("caption"), str):
                    return meta["caption"].strip()
            except ValueError:
                pass
        counters.warn("missing_caption", f"sample {key!r} has no caption (.txt/.caption/json 'caption'); using ''")
        return ""

    def _to_tensor(self, frames: np.ndarray, crop: tuple[float, float], out: torch.Tensor) -> None:
        """Crop the largest centred/random square, resize it to ``size``, write it to ``out`` ``[T, S, S, C]``
        in [-1, 1] (or uint8).

        numpy and PIL, single-threaded on purpose: torch's intra-op threads make these small per-sample
        ops up to 100x slower in a busy process (measured: 47 ms vs 0.13 ms for one 64x64 clip).
        """
        _, h, w, _ = frames.shape
        side = min(h, w)
        y0 = min(int(crop[0] * (h - side + 1)), h - side)
        x0 = min(int(crop[1] * (w - side + 1)), w - side)
        x = frames[:, y0:y0 + side, x0:x0 + side]
        size = self.cfg.size
        if side != size:  # PIL's bilinear resize is antialiased when it shrinks
            x = np.stack([np.asarray(Image.fromarray(f).resize((size, size), Image.BILINEAR)) for f in x])
        o = out.numpy()  # [T, S, S, 3]: the batch is channels-last in memory, so no transposing copy
        if o.dtype == np.uint8:  # output_dtype="uint8": normalize later, on the GPU (see to_float)
            o[...] = x
            return
        np.divide(x, np.float32(127.5), out=o, dtype=np.float32)
        np.subtract(o, np.float32(1.0), out=o)

    # -- batches -------------------------------------------------------------------------------
    def _batches(self, worker: int, start_epoch: int, start_pos: int, counters: Counters,
                 sandbox: DecodeSandbox | None) -> Iterator[dict]:
        """Decode one sample ahead (in the sandbox) while converting the current one; count in order."""
        cfg = self.cfg
        b = cfg.batch_size
        batch: dict[str, Any] = {}
        last_good = start_epoch if start_pos > 0 else start_epoch - 1
        epoch, pos = start_epoch, start_pos
        in_worker = get_worker_info() is not None

        def finish(job: dict, result: tuple) -> Iterator[dict]:
            nonlocal batch, last_good
            for err in job["tar_errors"]:
                counters.warn("skipped/tar_error", err)
            key, url = job["key"], job["raw"].get("__url__")
            if result[0] == "skip":
                counters.warn(f"skipped/{result[1]}", f"sample {key!r} in {url}: {result[2]}")
                if cfg.epochs is None and job["epoch"] >= last_good + 2:
                    raise RuntimeError(
                        f"data worker {worker} of rank {self.rank} found no usable sample in a whole epoch "
                        f"({job['epoch'] - 1}); stats so far: {dict(counters)}")
                return
            _, frames, info = result
            if info.get("padded"):
                counters.add("padded/too_short")
            if info.get("decoder") == "pyav" and info.get("decord_error"):
                counters.warn("decode/pyav_fallback", f"sample {key!r}: decord failed ({info['decord_error']}), "
                              "PyAV decoded it")
            if not batch:
                dtype = torch.uint8 if cfg.output_dtype == "uint8" else torch.float32
                # [B, T, H, W, C] in memory, handed out as a [B, C, T, H, W] view: torch.channels_last_3d
                store = torch.empty(b, cfg.num_frames, cfg.size, cfg.size, 3, dtype=dtype)
                if in_worker:  # in shared memory from the start: the DataLoader then passes it without a copy
                    store.share_memory_()
                batch = {"video": store.permute(0, 4, 1, 2, 3), "caption": [], "key": [], "store": store}
            self._to_tensor(frames, job["crop"], batch["store"][len(batch["key"])])
            batch["caption"].append(self._caption(job["raw"], key, counters))
            batch["key"].append(key)
            counters.add("samples")
            last_good = job["epoch"]
            if len(batch["key"]) == b:
                yield {"video": batch["video"], "caption": batch["caption"], "key": batch["key"],
                       **self._marker(worker, job["epoch"], job["pos"], counters)}
                batch = {}

        prev = None
        for epoch, pos, raw, errors in self._positions(worker, start_epoch, start_pos):
            job = self._job(worker, epoch, pos, raw, errors)
            prev_result = self._collect(prev, sandbox) if prev is not None else None
            self._submit(job, sandbox)  # the child decodes this one while we convert the previous one
            if prev is not None:
                yield from finish(prev, prev_result)
            prev = job
        if prev is not None:
            yield from finish(prev, self._collect(prev, sandbox))
        for err in self._tar_errors:
            counters.warn("skipped/tar_error", err)
        if batch:  # the last, partial batch of a finite stream
            n = len(batch["key"])
            yield {"video": batch["video"][:n], "caption": batch["caption"], "key": batch["key"],
                   **self._marker(worker, epoch, pos, counters)}
        yield self._marker(worker, epoch, pos, counters, end=True)
