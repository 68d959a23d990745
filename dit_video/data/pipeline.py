"""The per-worker sample stream: shards -> tar samples -> shuffle -> decode -> clips -> batches.

Each (rank, logical worker) pair owns a deterministic stream: for epoch ``e`` the shard list is
shuffled with ``(seed, e)``, split by node then by worker (webdataset's ``split_by_node`` /
``split_by_worker`` slicing, with explicit rank/worker instead of the ones webdataset reads from the
environment), or drawn with replacement with ``(seed, e, rank, worker)`` when ``resample``; tars
are read by :mod:`dit_video.data.tarreader` (time limits, member size cap, checked names), samples
go through webdataset's shuffle buffer with a seeded RNG, and each sample's crop, start and bucket
draws come from an RNG seeded by its position. So a stream can be replayed: to resume after ``pos``
samples of epoch ``e``, the worker re-reads (without decoding) the first ``pos`` samples and continues.

Batches are assembled in the worker, one per bucket at a time (:mod:`dit_video.data.buckets`; without
buckets there is one), and carry the worker's id, position, counters and the positions of the
samples waiting in other buckets' unfinished batches (``__pending__``). A resumed worker decodes
those again while replaying, so its batches are the ones an uninterrupted run would have made.
:class:`dit_video.data.loader.VideoLoader` turns these markers into the stream state and the stats.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
import webdataset as wds
from PIL import Image
from torch.utils.data import IterableDataset, get_worker_info

from . import buckets as bucketing
from . import codec, tarreader
from .config import DataConfig
from .ring import numpy_dtype
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


def caption_of(raw: dict, key: str, counters: Counters) -> str:
    """The sample's caption (``.txt``, ``.caption`` or json ``caption``); '' counted as missing_caption."""
    for ext in CAPTION_EXTS:
        if ext in raw:
            return raw[ext].decode("utf-8", errors="replace").strip()
    meta = json_of(raw)
    if isinstance(meta.get("caption"), str):
        return meta["caption"].strip()
    counters.warn("missing_caption", f"sample {key!r} has no caption (.txt/.caption/json 'caption'); using ''")
    return ""


def json_of(raw: dict) -> dict:
    """The sample's ``.json`` member as a dict ({} when absent or not a JSON object)."""
    if "json" not in raw:
        return {}
    try:
        meta = json.loads(raw["json"])
    except ValueError:
        return {}
    return meta if isinstance(meta, dict) else {}


class SampleStream(IterableDataset):
    """IterableDataset over one rank's share of the shards; yields ready batches (``batch_size=None``).

    ``resume[w] = {"epoch", "pos", "done", "counters", "pending"}`` is where logical worker ``w``
    starts. Subclasses say how a sample is decoded and how a batch is stored.
    """

    def __init__(self, cfg: DataConfig, shards: list[str], rank: int, world_size: int, num_workers: int,
                 resume: list[dict], ring=None) -> None:
        self.cfg, self.shards, self.rank, self.world_size = cfg, shards, rank, world_size
        self.num_workers, self.resume, self.ring = num_workers, resume, ring
        self.buckets = bucketing.resolve_buckets(cfg)

    # -- hooks -----------------------------------------------------------------------------------
    def _open_decoder(self) -> Any:
        return None

    def _close_decoder(self, decoder: Any) -> None:
        pass

    def _job(self, worker: int, epoch: int, pos: int, raw: dict) -> dict:
        raise NotImplementedError

    def _submit(self, job: dict, decoder: Any) -> None:
        pass

    def _collect(self, job: dict, decoder: Any) -> tuple:
        """``("ok", bucket key, sample, info)`` or ``("skip", reason, message)``."""
        raise NotImplementedError

    def _new_batch(self, key: Any, worker: int) -> dict:
        raise NotImplementedError

    def _put(self, batch: dict, sample: Any, job: dict) -> None:
        raise NotImplementedError

    def _batch_size(self, key: Any) -> int:
        raise NotImplementedError

    def _emit(self, batch: dict) -> dict:
        """The batch's payload (tensors or a ring slot) for the DataLoader."""
        raise NotImplementedError

    def _on_sample(self, info: dict, key: str, counters: Counters) -> None:
        pass

    # -- the stream ------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[dict]:
        info = get_worker_info()
        worker = 0 if info is None else info.id
        state = self.resume[worker]
        counters = Counters(state["counters"])
        if state.get("done"):
            yield self._marker(worker, state["epoch"], state["pos"], counters, [], end=True)
            return
        decoder = self._open_decoder()
        try:
            yield from self._batches(worker, state, counters, decoder)
        finally:
            self._close_decoder(decoder)

    @staticmethod
    def _marker(worker: int, epoch: int, pos: int, counters: Counters, pending: list, end: bool = False) -> dict:
        return {"__worker__": worker, "__epoch__": epoch, "__pos__": pos, "__counters__": dict(counters),
                "__pending__": pending, "__end__": end}

    def _raw(self, worker: int, epoch: int) -> Iterator[dict]:
        cfg = self.cfg

        def on_skip(reason: str, message: str) -> None:
            self._tar_errors.append((reason, message))

        def samples() -> Iterator[dict]:
            for url in shards_for(cfg, self.shards, epoch, self.rank, self.world_size, worker, self.num_workers):
                yield from tarreader.iter_samples(url, allow_pipe=cfg.allow_pipe, timeout_s=cfg.read_timeout_s,
                                                  max_member_bytes=cfg.max_member_bytes, on_skip=on_skip)

        out: Iterator[dict] = samples()
        if cfg.shuffle_buffer > 1:
            rng = _rng(cfg.seed, "buffer", epoch, self.rank, worker)
            out = wds.filters._shuffle(out, bufsize=cfg.shuffle_buffer, initial=cfg.shuffle_buffer, rng=rng)
        return out

    def _positions(self, worker: int, epoch: int, skip: int,
                   keep: set[tuple[int, int]]) -> Iterator[tuple[int, int, dict, list, bool]]:
        """``(epoch, pos, raw sample, tar events since the previous sample, replayed)`` forever (or for
        cfg.epochs), starting after ``skip`` samples of ``epoch``. Samples at positions in ``keep`` (from
        earlier epochs too) are replayed: yielded again, to be decoded but not counted. Tar events travel
        with the next sample so that they are counted in stream order (and once, across a resume)."""
        cfg = self.cfg
        self._tar_errors = []
        start = (epoch, skip)
        epoch = min([epoch] + [e for e, _ in keep])
        while cfg.epochs is None or epoch < cfg.epochs:
            pos = 0
            for raw in self._raw(worker, epoch):
                pos += 1
                errors, self._tar_errors = self._tar_errors, []
                if (epoch, pos) <= start:  # replaying to resume: read, don't decode, don't count (counted before)
                    if (epoch, pos) in keep:
                        yield epoch, pos, raw, [], True
                    continue
                yield epoch, pos, raw, errors, False
            if pos == 0 and cfg.epochs is None:  # would loop forever yielding nothing
                mine = shards_for(cfg, self.shards, epoch, self.rank, self.world_size, worker, self.num_workers)
                raise RuntimeError(f"data worker {worker} of rank {self.rank} read no sample in epoch {epoch} "
                                   f"from {mine}; errors: {self._tar_errors[:3]}")
            epoch += 1

    def _batches(self, worker: int, state: dict, counters: Counters, decoder: Any) -> Iterator[dict]:
        """Decode one sample ahead (the sandbox works while we convert); count in order; one open batch per bucket."""
        cfg = self.cfg
        start_epoch, start_pos = state["epoch"], state["pos"]
        keep = {(int(e), int(p)) for e, p in state.get("pending", [])}
        last_good = start_epoch if start_pos > 0 else start_epoch - 1
        epoch, pos = start_epoch, start_pos
        open_batches: dict[Any, dict] = {}

        def pending(exclude: Any) -> list:
            return sorted(p for k, b in open_batches.items() if k != exclude for p in b["positions"])

        def finish(job: dict, result: tuple) -> Iterator[dict]:
            nonlocal last_good
            for reason, message in job["tar_errors"]:
                counters.warn(f"skipped/{reason}", message)
            key, url = job["key"], job["raw"].get("__url__")
            if result[0] == "skip":
                if job["replayed"]:
                    return
                counters.warn(f"skipped/{result[1]}", f"sample {key!r} in {url}: {result[2]}")
                if cfg.epochs is None and job["epoch"] >= last_good + 2:
                    raise RuntimeError(
                        f"data worker {worker} of rank {self.rank} found no usable sample in a whole epoch "
                        f"({job['epoch'] - 1}); stats so far: {dict(counters)}")
                return
            _, bkey, sample, info = result
            if not job["replayed"]:
                self._on_sample(info, key, counters)
            batch = open_batches.get(bkey)
            if batch is None:
                batch = open_batches[bkey] = self._new_batch(bkey, worker)
            self._put(batch, sample, job)
            batch["caption"].append(caption_of(job["raw"], key, counters if not job["replayed"] else Counters()))
            batch["key"].append(key)
            batch["positions"].append([job["epoch"], job["pos"]])
            if not job["replayed"]:
                counters.add("samples")
            last_good = job["epoch"]
            if len(batch["key"]) == self._batch_size(bkey):
                del open_batches[bkey]
                yield {**self._emit(batch), "caption": batch["caption"], "key": batch["key"],
                       **self._marker(worker, job["epoch"], job["pos"], counters, pending(bkey))}

        prev = None
        for epoch, pos, raw, errors, replayed in self._positions(worker, start_epoch, start_pos, keep):
            job = self._job(worker, epoch, pos, raw)
            job.update(tar_errors=errors, replayed=replayed)
            prev_result = self._collect(prev, decoder) if prev is not None else None
            self._submit(job, decoder)  # the decoder works on this one while we convert the previous one
            if prev is not None:
                yield from finish(prev, prev_result)
            prev = job
        if prev is not None:
            yield from finish(prev, self._collect(prev, decoder))
        for reason, message in self._tar_errors:
            counters.warn(f"skipped/{reason}", message)
        for bkey in sorted(open_batches, key=str):  # the last, partial batches of a finite stream
            batch = open_batches.pop(bkey)
            yield {**self._emit(batch), "caption": batch["caption"], "key": batch["key"],
                   **self._marker(worker, epoch, pos, counters, pending(bkey))}
        yield self._marker(worker, epoch, pos, counters, [], end=True)


class VideoStream(SampleStream):
    """Video shards: decode each clip (in a time-limited sandbox process), crop/resize it to its bucket,
    write it into the batch (a shared ring slot in DataLoader workers)."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        cfg = self.cfg
        if self.buckets:
            self.shapes = [(b.frames, b.height, b.width, b.batch_size) for b in self.buckets]
            self.plans = tuple(b.plan() for b in self.buckets)
        else:
            self.shapes = [(cfg.num_frames, cfg.size, cfg.size, cfg.batch_size)]
            self.plans = ()
        self.dtype = torch.uint8 if cfg.output_dtype == "uint8" else torch.float32
        self.cache: dict[tuple, tuple[np.ndarray, dict]] = {}  # per worker (each process has its own copy)
        self.cache_bytes = 0

    def _cache_key(self, job: dict) -> tuple | None:
        if self.cfg.decode_cache_mb <= 0 or job["ext"] is None:
            return None
        digest = hashlib.blake2b(job["raw"][job["ext"]], digest_size=16).digest()
        return digest, repr(job["plan"])  # the same bytes cut the same way decode to the same frames

    def _open_decoder(self) -> DecodeSandbox | None:
        if self.cfg.decode_timeout_s > 0 and DecodeSandbox.available():
            return DecodeSandbox(self.cfg.decode_timeout_s)
        return None

    def _close_decoder(self, decoder: DecodeSandbox | None) -> None:
        if decoder is not None:
            decoder.close()

    def _job(self, worker: int, epoch: int, pos: int, raw: dict) -> dict:
        """What to decode for one sample and how to cut it (deterministic in its position); counts nothing."""
        cfg = self.cfg
        rng = _rng(cfg.seed, "sample", self.rank, worker, epoch, pos)
        u_start = rng.random() if cfg.random_start else 0.5
        crop = (rng.random(), rng.random()) if cfg.random_crop else (0.5, 0.5)
        draws = tuple(rng.random() for _ in self.plans)
        hint = None
        if self.plans:
            meta = json_of(raw)
            vals = [meta.get(k) for k in ("frames", "fps", "height", "width")]
            if all(isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in vals):
                hint = (int(vals[0]), float(vals[1]), int(vals[2]), int(vals[3]))
        plan = codec.ClipPlan(num_frames=cfg.num_frames, frame_stride=cfg.frame_stride, fps=cfg.fps,
                              u_start=u_start, pad_short=cfg.short_clips == "pad", threads=cfg.decode_threads,
                              decoder=cfg.decoder, strict=cfg.strict_decode, buckets=self.plans, draws=draws,
                              hint=hint)
        return {"epoch": epoch, "pos": pos, "raw": raw, "key": raw.get("__key__", "?"),
                "ext": next((e for e in VIDEO_EXTS if e in raw), None), "plan": plan, "crop": crop}

    def _submit(self, job: dict, sandbox: DecodeSandbox | None) -> None:
        job["cache_key"] = key = self._cache_key(job)
        if key is not None and key in self.cache:
            return
        if job["ext"] is not None and sandbox is not None:
            sandbox.submit(job["raw"][job["ext"]], job["plan"])

    def _collect(self, job: dict, sandbox: DecodeSandbox | None) -> tuple:
        raw = job["raw"]
        if job["ext"] is None:
            return ("skip", "no_mp4", f"no video member (members: {sorted(k for k in raw if not k.startswith('__'))})")
        key = job.get("cache_key")
        if key is not None and key in self.cache:
            frames, info = self.cache[key]
            return ("ok", int(info.get("bucket", 0)), frames, {**info, "cache_hit": True})
        try:
            if sandbox is not None:
                frames, info = sandbox.collect(copy=False)
            else:
                frames, info = codec.decode_clip(raw[job["ext"]], job["plan"])
        except codec.DecodeFailure as e:
            return ("skip", e.reason, e.message)
        if key is not None and self.cache_bytes + frames.nbytes <= self.cfg.decode_cache_mb * 2**20:
            self.cache[key] = (np.array(frames), dict(info))  # a copy: the sandbox reuses its shared buffer
            self.cache_bytes += frames.nbytes
        return ("ok", int(info.get("bucket", 0)), frames, info)

    def _on_sample(self, info: dict, key: str, counters: Counters) -> None:
        if info.get("cache_hit"):
            counters.add("decode/cache_hits")
        if info.get("padded"):
            counters.add("padded/too_short")
        if info.get("decoder") == "pyav" and info.get("decord_error"):
            counters.warn("decode/pyav_fallback", f"sample {key!r}: decord failed ({info['decord_error']}), "
                          "PyAV decoded it")
        if info.get("bucket_metadata_mismatch"):
            counters.warn("bucket/metadata_mismatch", f"sample {key!r}: its json's frames/size differ from the "
                          "video's; the bucket was chosen from the video")
        if self.plans:
            counters.add(f"bucket/{self.buckets[int(info.get('bucket', 0))].name}")

    def _batch_size(self, key: int) -> int:
        return self.shapes[key][3]

    def _new_batch(self, key: int, worker: int) -> dict:
        t, h, w, b = self.shapes[key]
        shape = (b, t, h, w, 3)  # [B, T, H, W, C] in memory, handed out as [B, C, T, H, W]: channels_last_3d
        slot = None
        if self.ring is not None:
            nbytes = int(np.prod(shape)) * self.dtype.itemsize
            slot = self.ring.acquire(worker, nbytes)
        if slot is not None:
            store = self.ring.array(worker, slot, shape, numpy_dtype(self.cfg.output_dtype))
        else:
            tensor = torch.empty(shape, dtype=self.dtype)
            if get_worker_info() is not None:  # no free slot: a fresh shared tensor (the DataLoader passes it)
                tensor.share_memory_()
            store = tensor.numpy()
        return {"store": store, "slot": slot, "worker": worker, "shape": shape, "caption": [], "key": [],
                "positions": [], "tensor": None if slot is not None else tensor}

    def _put(self, batch: dict, frames: np.ndarray, job: dict) -> None:
        self._to_array(frames, job["crop"], batch["store"][len(batch["key"])])

    def _emit(self, batch: dict) -> dict:
        n = len(batch["key"])
        if batch["slot"] is not None:
            return {"slot": (batch["worker"], batch["slot"], batch["shape"], self.cfg.output_dtype, n)}
        return {"video": batch["tensor"][:n].permute(0, 4, 1, 2, 3)}

    @staticmethod
    def _to_array(frames: np.ndarray, crop: tuple[float, float], out: np.ndarray) -> None:
        """Crop the largest region of ``out``'s aspect (centred or placed by ``crop``), resize it to ``out``'s
        size, write it to ``out`` ``[T, H, W, C]`` in [-1, 1] (or uint8).

        numpy and PIL, single-threaded on purpose: torch's intra-op threads make these small per-sample
        ops up to 100x slower in a busy process (measured: 47 ms vs 0.13 ms for one 64x64 clip).
        """
        _, h, w, _ = frames.shape
        _, oh, ow, _ = out.shape
        y0, x0, ch, cw = bucketing.crop_box(h, w, oh, ow, crop)
        if (ch, cw) == (oh, ow):
            x = frames[:, y0:y0 + ch, x0:x0 + cw]
        else:  # PIL's bilinear resize is antialiased when it shrinks
            box = (x0, y0, x0 + cw, y0 + ch)
            x = np.stack([np.asarray(Image.fromarray(f).resize((ow, oh), Image.BILINEAR, box=box)) for f in frames])
        if out.dtype == np.uint8:  # output_dtype="uint8": normalize later, on the device (see to_float)
            out[...] = x
            return
        np.divide(x, np.float32(127.5), out=out, dtype=np.float32)
        np.subtract(out, np.float32(1.0), out=out)
