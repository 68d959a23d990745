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
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
import webdataset as wds
from torch.utils.data import IterableDataset, get_worker_info

from . import codec
from .config import DataConfig
from .sandbox import DecodeSandbox
from .stats import Counters

VIDEO_EXTS = ("mp4", "webm", "mkv", "mov", "avi")
CAPTION_EXTS = ("txt", "caption")


def _rng(*parts: Any) -> random.Random:
    return random.Random(":".join(str(p) for p in parts))  # str seeds hash with sha512: same in every process


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
    def _raw(self, worker: int, epoch: int, counters: Counters) -> Iterator[dict]:
        cfg = self.cfg

        def handler(exn: Exception) -> bool:  # webdataset stage handler: count, warn, go on
            counters.warn("skipped/tar_error", f"{type(exn).__name__}: {exn}")
            return True

        urls = shards_for(cfg, self.shards, epoch, self.rank, self.world_size, worker, self.num_workers)
        src = wds.tariterators.url_opener(({"url": u} for u in urls), handler=handler)
        files = wds.tariterators.tar_file_expander(src, handler=handler)
        samples = wds.tariterators.group_by_keys(files, handler=handler)
        if cfg.shuffle_buffer > 1:
            rng = _rng(cfg.seed, "buffer", epoch, self.rank, worker)
            samples = wds.filters._shuffle(samples, bufsize=cfg.shuffle_buffer, initial=cfg.shuffle_buffer, rng=rng)
        return samples

    def _positions(self, worker: int, epoch: int, skip: int, counters: Counters) -> Iterator[tuple[int, int, dict]]:
        """``(epoch, pos, raw sample)`` forever (or for cfg.epochs), starting after ``skip`` samples of ``epoch``."""
        cfg = self.cfg
        while cfg.epochs is None or epoch < cfg.epochs:
            counters.muted = skip > 0
            self._good = 0
            pos = 0
            for raw in self._raw(worker, epoch, counters):
                pos += 1
                if pos <= skip:  # replaying to resume: read, don't decode, don't count
                    if pos == skip:
                        counters.muted = False
                    continue
                yield epoch, pos, raw
            counters.muted = False
            if cfg.epochs is None and skip == 0 and self._good == 0:  # would loop forever yielding nothing
                mine = shards_for(cfg, self.shards, epoch, self.rank, self.world_size, worker, self.num_workers)
                raise RuntimeError(f"data worker {worker} of rank {self.rank} found no usable sample in a whole "
                                   f"epoch ({pos} samples read from {mine}); stats so far: {dict(counters)}")
            epoch, skip = epoch + 1, 0

    # -- decoding ------------------------------------------------------------------------------
    def _decode(self, raw: dict, epoch: int, pos: int, worker: int, counters: Counters,
                sandbox: DecodeSandbox | None):
        """``(frames uint8 [T, H, W, 3], caption, crop (u_y, u_x))`` or None when skipped (counted)."""
        cfg, key = self.cfg, raw.get("__key__", "?")
        ext = next((e for e in VIDEO_EXTS if e in raw), None)
        if ext is None:
            counters.warn("skipped/no_mp4", f"sample {key!r} in {raw.get('__url__')} has no video member "
                          f"(members: {sorted(k for k in raw if not k.startswith('__'))})")
            return None
        rng = _rng(cfg.seed, "sample", self.rank, worker, epoch, pos)
        u_start = rng.random() if cfg.random_start else 0.5
        crop = (rng.random(), rng.random()) if cfg.random_crop else (0.5, 0.5)
        plan = codec.ClipPlan(num_frames=cfg.num_frames, frame_stride=cfg.frame_stride, fps=cfg.fps,
                              u_start=u_start, pad_short=cfg.short_clips == "pad", threads=cfg.decode_threads)
        try:
            if sandbox is not None:
                frames, info = sandbox.decode(raw[ext], plan, copy=False)
            else:
                frames, info = codec.decode_clip(raw[ext], plan)
        except codec.DecodeFailure as e:
            counters.warn(f"skipped/{e.reason}", f"sample {key!r} in {raw.get('__url__')}: {e.message}")
            return None
        if info.get("padded"):
            counters.add("padded/too_short")
        if info.get("decoder") == "pyav" and info.get("decord_error"):
            counters.warn("decode/pyav_fallback", f"sample {key!r}: decord failed ({info['decord_error']}), "
                          "PyAV decoded it")
        return frames, self._caption(raw, key, counters), crop

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

    def _to_tensor(self, frames, crop: tuple[float, float], out: torch.Tensor) -> None:
        """Crop the largest centred/random square, resize it to ``size``, write ``[C, T, S, S]`` in [-1, 1]."""
        x = torch.from_numpy(frames)  # [T, H, W, 3] uint8
        _, h, w, _ = x.shape
        side = min(h, w)
        y0 = min(int(crop[0] * (h - side + 1)), h - side)
        x0 = min(int(crop[1] * (w - side + 1)), w - side)
        x = x[:, y0:y0 + side, x0:x0 + side]
        size = self.cfg.size
        if side == size:
            out.copy_(x.permute(3, 0, 1, 2))
        else:
            y = x.permute(0, 3, 1, 2).float()  # [T, 3, s, s]
            y = F.interpolate(y, size=(size, size), mode="bilinear", antialias=side > size, align_corners=False)
            out.copy_(y.permute(1, 0, 2, 3))
        out.mul_(1 / 127.5).sub_(1.0).clamp_(-1.0, 1.0)

    # -- batches -------------------------------------------------------------------------------
    def _batches(self, worker: int, start_epoch: int, start_pos: int, counters: Counters,
                 sandbox: DecodeSandbox | None) -> Iterator[dict]:
        cfg = self.cfg
        b = cfg.batch_size
        video = captions = keys = None
        n, epoch, pos = 0, start_epoch, start_pos
        for epoch, pos, raw in self._positions(worker, start_epoch, start_pos, counters):
            got = self._decode(raw, epoch, pos, worker, counters, sandbox)
            if got is None:
                continue
            frames, caption, crop = got
            if video is None:
                video = torch.empty(b, 3, cfg.num_frames, cfg.size, cfg.size)
                captions, keys, n = [], [], 0
            self._to_tensor(frames, crop, video[n])
            captions.append(caption)
            keys.append(raw.get("__key__", ""))
            n += 1
            counters.add("samples")
            self._good += 1
            if n == b:
                yield {"video": video, "caption": captions, "key": keys,
                       **self._marker(worker, epoch, pos, counters)}
                video = None
        end = self._marker(worker, epoch, pos, counters, end=True)
        if video is not None:  # the last, partial batch of a finite stream
            yield {"video": video[:n], "caption": captions, "key": keys, **self._marker(worker, epoch, pos, counters)}
        yield end
