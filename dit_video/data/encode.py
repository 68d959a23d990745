"""``encode_shards``: video shards -> latent shards (VAE posterior + text states), for ``data.kind: latents``.

The encoders come from the caller (``models(cfg) -> (vae, text_encoder or None)``: objects with
:class:`dit_video.encoders.VAE`'s ``encode_posterior`` and :class:`dit_video.encoders.TextEncoder`'s
``encode``), so that this data-layer module imports no encoder code; ``dit-video encode-shards``
passes :func:`dit_video.commands.encode_shards.load_models`. With worker processes it must be a
module-level function (it is sent to them by name).

Each input shard ``i`` of the (sorted) shard list becomes ``OUT/{i:05d}.tar`` + ``{i:05d}_stats.json``
(the layout and members are described in :mod:`dit_video.data.latents`). Clips are read with the
loader's tar reader (time limits, member cap, checked names), decoded in the time-limited sandbox,
cut with a centred window and a centre crop to ``num_frames`` x ``size`` x ``size`` (or to their
bucket: the same rule as the loader, with the bucket draws seeded by the sample key), batched by
shape and encoded; everything that is skipped is counted by reason in the shard's stats file.

Resumable: an output shard is written under a temporary name and renamed when complete, and its
stats file (``"complete": true``) last; a new run skips the shards already complete (a killed run
continues where it stopped). ``OUT/manifest.json`` records the VAE, the text encoder and the
preprocessing; a run whose inputs differ from an existing manifest's is refused.

Parallel: ``workers`` processes per rank, one shard at a time each (each loads its own VAE and text
encoder); under ``torchrun`` (``RANK`` / ``WORLD_SIZE`` set) rank ``r`` takes shards ``r, r + W, ...``.
No collectives are needed: ranks share nothing but the manifest, which they all write identically.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from . import buckets as bucketing
from . import codec, tarreader
from .latents import DTYPES, FORMAT, VERSION, fingerprint_dir, write_manifest
from .pipeline import VIDEO_EXTS, VideoStream, _rng, caption_of, json_of
from .sandbox import DecodeSandbox
from .shardlist import list_shards
from .stats import Counters, merge
from .writer import WRITER, write_shard

log = logging.getLogger(__name__)


@dataclass
class EncodeConfig:
    """What ``dit-video encode-shards`` reads, how it cuts clips and which encoders it runs."""

    shards: str
    out: str
    vae: str
    text_encoder: str | None = None
    max_length: int = 77
    num_frames: int = 16
    frame_stride: int = 1
    fps: float | None = None
    size: int = 256
    buckets: list[dict] = field(default_factory=list)
    batch_size: int = 8
    dtype: str = "bf16"
    workers: int = 1
    threads: int = 1  # torch threads per worker process
    device: str = "cpu"
    decoder: str = "decord"
    strict_decode: bool = True
    decode_timeout_s: float = 60.0
    read_timeout_s: float = 120.0
    max_member_bytes: int = 1 << 30
    allow_pipe: bool = False

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ValueError(f"--dtype must be one of {sorted(DTYPES)}, got {self.dtype!r}")
        for name in ("num_frames", "frame_stride", "size", "batch_size", "workers", "threads", "max_length"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.decode_timeout_s <= 0:
            raise ValueError("--decode-timeout must be > 0 (decoding always runs in the time-limited sandbox)")


def _buckets(cfg: EncodeConfig) -> list[bucketing.Bucket]:
    return bucketing.resolve_buckets({"buckets": cfg.buckets, "batch_size": cfg.batch_size,
                                      "num_frames": cfg.num_frames, "size": cfg.size})


def manifest_for(cfg: EncodeConfig, shards: list[str], vae: Any, text: Any) -> dict[str, Any]:
    """The manifest of this run (identical on every rank)."""
    vfp = fingerprint_dir(cfg.vae)
    buckets = _buckets(cfg)
    m: dict[str, Any] = {
        "format": FORMAT, "version": VERSION, "writer": WRITER, "dtype": cfg.dtype,
        "latents": "VAE posterior mean and std, normalised like VAE.encode ((z - shift) * scale or per channel)",
        "vae": {"path": os.path.abspath(cfg.vae), "class": type(getattr(vae, "vae", vae)).__name__, **vfp,
                "scaling_factor": float(vae.scaling_factor), "shift_factor": float(vae.shift_factor),
                "latent_channels": int(vae.latent_channels), "spatial_downsample": int(vae.spatial_downsample),
                "temporal_downsample": int(vae.temporal_downsample),
                "per_channel_stats": getattr(vae, "channel_stats", None) is not None},
        "text_encoder": None,
        "preprocessing": {"num_frames": cfg.num_frames, "frame_stride": cfg.frame_stride, "fps": cfg.fps,
                          "size": cfg.size, "buckets": [b.name + f":{b.weight:g}" for b in buckets] or None,
                          "start": "centre", "crop": "centre (largest region of the bucket's aspect)",
                          "resize": "PIL bilinear (antialiased when shrinking)", "pixels": "uint8 / 127.5 - 1",
                          "decoder": cfg.decoder, "strict_decode": cfg.strict_decode},
        "source": {"spec": cfg.shards, "shards": [os.path.basename(s) for s in shards]},
    }
    if text is not None:
        m["text_encoder"] = {"path": os.path.abspath(cfg.text_encoder), **fingerprint_dir(cfg.text_encoder),
                             "class": type(getattr(text, "model", text)).__name__, "max_length": cfg.max_length,
                             "dim": int(text.dim)}
    return m


Models = Callable[[EncodeConfig], tuple[Any, Any]]  # cfg -> (vae, text encoder or None)


class Encoder:
    """The VAE and text encoder of one worker process, and the per-shard work."""

    def __init__(self, cfg: EncodeConfig, models: Models) -> None:
        torch.set_num_threads(cfg.threads)
        self.cfg = cfg
        self.vae, self.text = models(cfg)
        self.buckets = _buckets(cfg)
        sd = self.vae.spatial_downsample
        shapes = [(b.height, b.width) for b in self.buckets] or [(cfg.size, cfg.size)]
        bad = [f"{h}x{w}" for h, w in shapes if h % sd or w % sd]
        if bad:
            raise ValueError(f"clip sizes {bad} are not multiples of the VAE's spatial factor {sd}: choose --size / "
                             "--buckets divisible by it")
        self.shapes = ([(b.frames, b.height, b.width, b.batch_size) for b in self.buckets]
                       or [(cfg.num_frames, cfg.size, cfg.size, cfg.batch_size)])
        self.plans = tuple(b.plan() for b in self.buckets)

    def _plan(self, key: str) -> codec.ClipPlan:
        c = self.cfg
        rng = _rng("encode-shards", key)  # the bucket draws depend on the clip only, not on order or worker
        return codec.ClipPlan(num_frames=c.num_frames, frame_stride=c.frame_stride, fps=c.fps, u_start=0.5,
                              pad_short=not self.plans, decoder=c.decoder, strict=c.strict_decode,
                              buckets=self.plans, draws=tuple(rng.random() for _ in self.plans))

    def _encode(self, group: list[dict]) -> list[tuple[str, dict]]:
        """Encode clips of one shape; returns their samples for the tar."""
        frames = torch.from_numpy(np.stack([g["frames"] for g in group]))  # [B, T, H, W, 3] uint8
        video = frames.permute(0, 4, 1, 2, 3).float().div_(127.5).sub_(1.0).to(self.cfg.device)
        mean, std = self.vae.encode_posterior(video)
        tokens = mask = None
        if self.text is not None:
            tokens, mask = self.text.encode([g["caption"] for g in group])
        from safetensors.torch import save

        dtype = DTYPES[self.cfg.dtype]
        out = []
        for i, g in enumerate(group):
            tensors = {"mean": mean[i].to(dtype).contiguous().cpu(), "std": std[i].to(dtype).contiguous().cpu()}
            if tokens is not None:
                n = int(mask[i].sum())
                tensors["text"] = tokens[i, :n].to(dtype).contiguous().cpu()
            t, h, w = g["frames"].shape[:3]
            meta = {"source_key": g["key"], "source_shard": g["url"], "source": g["meta"], "frames": t,
                    "height": h, "width": w, "bucket": f"{t}x{h}x{w}", "latent_shape": list(mean[i].shape),
                    "src_frames": g["info"].get("src_frames"), "src_fps": g["info"].get("src_fps"),
                    "decoder": g["info"].get("decoder")}
            out.append((g["key"], {"safetensors": save(tensors), "txt": g["caption"], "json": meta}))
        return out

    def encode_shard(self, index: int, url: str, out: str) -> dict[str, Any]:
        """Encode one input shard into ``out/{index:05d}.tar``; returns its stats."""
        c = self.cfg
        t0 = time.perf_counter()
        counters = Counters()
        sandbox = DecodeSandbox(c.decode_timeout_s)
        groups: dict[int, list[dict]] = {}

        def on_skip(reason: str, message: str) -> None:
            counters.warn(f"skipped/{reason}", message)

        def samples():
            for raw in tarreader.iter_samples(url, allow_pipe=c.allow_pipe, timeout_s=c.read_timeout_s,
                                              max_member_bytes=c.max_member_bytes, on_skip=on_skip):
                key = raw["__key__"]
                ext = next((e for e in VIDEO_EXTS if e in raw), None)
                if ext is None:
                    counters.warn("skipped/no_mp4", f"sample {key!r} in {url} has no video member")
                    continue
                try:
                    frames, info = sandbox.decode(raw[ext], self._plan(key))
                except codec.DecodeFailure as e:
                    counters.warn(f"skipped/{e.reason}", f"sample {key!r} in {url}: {e.message}")
                    continue
                b = int(info.get("bucket", 0))
                ft, fh, fw, bs = self.shapes[b]
                clip = np.empty((ft, fh, fw, 3), np.uint8)
                VideoStream._to_array(frames, (0.5, 0.5), clip)
                if info.get("padded"):
                    counters.add("padded/too_short")
                groups.setdefault(b, []).append({"key": key, "url": url, "frames": clip, "info": info,
                                                 "caption": caption_of(raw, key, counters), "meta": json_of(raw)})
                counters.add("samples")
                if len(groups[b]) == bs:
                    yield from self._encode(groups.pop(b))
            for b in sorted(groups):
                yield from self._encode(groups.pop(b))

        path = os.path.join(out, f"{index:05d}.tar")
        try:
            n = write_shard(path, samples())  # under a temporary name until complete
        finally:
            sandbox.close()
        stats = {"count": n, "successes": n, "failed": sum(v for k, v in counters.items() if k.startswith("skipped/")),
                 "failures": {k[len("skipped/"):]: v for k, v in sorted(counters.items()) if k.startswith("skipped/")},
                 "counters": dict(sorted(counters.items())), "writer": WRITER, "complete": True,
                 "source_shard": url, "seconds": round(time.perf_counter() - t0, 3)}
        tmp = path[: -len(".tar")] + "_stats.json.tmp"
        with open(tmp, "w") as f:
            json.dump(stats, f, indent=1, sort_keys=True)
        os.replace(tmp, path[: -len(".tar")] + "_stats.json")
        return stats


def is_complete(out: str, index: int) -> bool:
    stats = os.path.join(out, f"{index:05d}_stats.json")
    if not (os.path.isfile(stats) and os.path.isfile(os.path.join(out, f"{index:05d}.tar"))):
        return False
    try:
        with open(stats) as f:
            s = json.load(f)
    except (OSError, ValueError):
        return False
    return isinstance(s, dict) and s.get("complete") is True and s.get("writer") == WRITER


_worker: Encoder | None = None


def _init_worker(cfg_dict: dict, models: Models) -> None:
    global _worker
    _worker = Encoder(EncodeConfig(**cfg_dict), models)


def _run(args: tuple) -> dict:
    index, url, out = args
    return _worker.encode_shard(index, url, out)


def encode_shards(cfg: EncodeConfig, models: Models, *, rank: int | None = None, world_size: int | None = None,
                  progress: bool = True) -> dict[str, Any]:
    """Encode this rank's share of ``cfg.shards`` into ``cfg.out`` with the encoders ``models(cfg)`` returns;
    returns a summary (shards, clips, failures by reason, clips/s). See the module docstring."""
    rank = int(os.environ.get("RANK", 0)) if rank is None else rank
    world_size = int(os.environ.get("WORLD_SIZE", 1)) if world_size is None else world_size
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in [0, world_size={world_size})")
    shards = list_shards(cfg.shards, allow_pipe=cfg.allow_pipe)
    os.makedirs(cfg.out, exist_ok=True)
    main = Encoder(cfg, models)  # loads the models here first: errors (paths, sizes) before any worker starts
    write_manifest(cfg.out, manifest_for(cfg, shards, main.vae, main.text))
    mine = [(i, shards[i], cfg.out) for i in range(rank, len(shards), world_size)]
    todo = [job for job in mine if not is_complete(cfg.out, job[0])]
    done_before = len(mine) - len(todo)
    from tqdm import tqdm

    bar = tqdm(total=len(mine), initial=done_before, unit="shard", desc=f"encode-shards[{rank}]",
               disable=not progress)
    results: list[dict] = []
    t0 = time.perf_counter()
    pool = None
    try:
        if cfg.workers == 1 or len(todo) <= 1:
            it = (main.encode_shard(*job) for job in todo)
        else:
            import multiprocessing

            pool = ProcessPoolExecutor(min(cfg.workers, len(todo)), mp_context=multiprocessing.get_context("spawn"),
                                       initializer=_init_worker, initargs=(asdict(cfg), models))
            it = pool.map(_run, todo)
        for stats in it:
            results.append(stats)
            bar.update(1)
            bar.set_postfix(clips=sum(r["count"] for r in results))
    finally:
        bar.close()
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    seconds = time.perf_counter() - t0
    clips = sum(r["count"] for r in results)
    return {"rank": rank, "world_size": world_size, "shards": len(mine), "encoded": len(results),
            "skipped_complete": done_before, "clips": clips, "seconds": round(seconds, 3),
            "clips_per_s": round(clips / seconds, 3) if seconds > 0 and clips else 0.0,
            "counters": merge([r["counters"] for r in results])}
