"""``DataConfig``: what the loader reads and how it shapes clips.

Plain types only (no torch import) so that it works as an omegaconf structured config next to the
other schemas in :mod:`dit_video.config`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

SHORT_CLIP_POLICIES = ("pad", "skip")
OUTPUT_DTYPES = ("float32", "uint8")
KINDS = ("video", "latents")
DECODERS = ("decord", "pyav")


@dataclass
class BucketConfig:
    """One bucket: clips of ``frames`` x ``height`` x ``width``. See :mod:`dit_video.data.buckets`.

    ``weight`` in (0, 1] is the probability that a clip which fits this bucket is kept in it rather
    than offered to the next smaller one (Open-Sora's rule; 1: always the largest bucket that fits).
    ``batch_size``: clips per batch of this bucket; None: ``data.batch_size`` scaled so that every
    bucket's batches hold about as many pixels (tokens) as ``data.batch_size`` clips of
    ``data.num_frames`` x ``data.size`` x ``data.size``.
    """

    frames: int = 16
    height: int = 256
    width: int = 256
    weight: float = 1.0
    batch_size: int | None = None


@dataclass
class BucketTable:
    """An Open-Sora-style table: every (resolution, frames) level in every aspect ratio.

    ``resolutions``: sides of the square of the same area (256 -> 256x256, 192x336 at 9:16, ...),
    rounded to ``multiple``; ``aspect_ratios``: ``"H:W"`` strings; ``weights``: one keep probability
    per (resolution, frames) level, row-major (``len(resolutions) * len(frames)`` entries), or empty
    for all 1.
    """

    resolutions: list[int] = field(default_factory=list)
    frames: list[int] = field(default_factory=list)
    aspect_ratios: list[str] = field(default_factory=lambda: ["1:1"])
    weights: list[float] = field(default_factory=list)
    multiple: int = 16


@dataclass
class DataConfig:
    """Clip stream from webdataset shards: video shards (video2dataset layout: ``key.mp4``, ``key.txt``,
    ``key.json``) or latent shards written by ``dit-video encode-shards`` (``kind: latents``).

    ``shards`` is a directory of ``.tar`` files, a glob (``/data/*.tar``) or a brace pattern
    (``/data/{00000..00099}.tar``); several may be joined with ``::``. ``pipe:`` commands and
    remote URLs (``https://``, ``gs:``, ...) run subprocesses and need ``allow_pipe: true``.
    """

    shards: str = ""
    kind: str = "video"  # "video": decode mp4 members; "latents": read encode-shards' latents and text states
    num_frames: int = 16  # frames per clip (T)
    frame_stride: int = 1  # take every k-th source frame
    fps: float | None = None  # target frame rate; when set, overrides frame_stride
    size: int = 256  # output height = width: short side resized to this, then cropped square
    buckets: list[BucketConfig] = field(default_factory=list)  # clips of several shapes; a batch is one bucket
    bucket_table: BucketTable | None = None  # or an Open-Sora-style table expanded into buckets
    batch_size: int = 8
    num_workers: int = 2  # DataLoader worker processes (0: decode in the calling process)
    shuffle_buffer: int = 256  # sample shuffle buffer per worker; 0 or 1 disables sample and shard shuffling
    seed: int = 0
    resample: bool = False  # draw shards with replacement (seeded per epoch/rank/worker) instead of splitting them
    random_crop: bool = True  # False: centre crop
    random_start: bool = True  # False: centred temporal window
    short_clips: str = "pad"  # clips shorter than asked: "pad" (repeat the last frame) or "skip"
    decoder: str = "decord"  # "decord" (PyAV where decord fails) or "pyav"
    decode_timeout_s: float = 60.0  # per-sample limit; decode runs in a sandbox process (0: in-process, no limit)
    strict_decode: bool = True  # skip clips whose decoder reports damaged frames (counted as corrupt_frames)
    epochs: int | None = None  # None: stream forever (epochs advance automatically); N: stop after N epochs
    decode_threads: int = 1  # decoder threads per worker
    # decoded clips kept per worker (MB; 0: off), keyed by the video bytes' hash and the cut: a clip seen again
    # with the same cut is not decoded again (random_start and bucket draws change the cut, so they miss; the
    # crop is applied after decoding, so random_crop still hits). It fills up
    # to the cap and keeps what it holds (a stream that cycles epochs over more than fits would evict every
    # entry before its reuse under LRU). For small datasets over many epochs (the CPU demo: 1024 clips, ~40
    # epochs); counted as decode/cache_hits.
    decode_cache_mb: float = 0.0
    output_dtype: str = "uint8"  # video in [0, 255] (4x fewer bytes than float32); to_float / the trainer
    # normalise on the device. "float32": [-1, 1] from the workers
    pin_memory: bool = False
    prefetch_factor: int = 2  # batches prefetched per worker
    allow_pipe: bool = False  # allow pipe: commands and remote URLs in `shards` (they run subprocesses)
    read_timeout_s: float = 120.0  # a shard (pipe, FIFO, URL) that delivers no byte for this long is abandoned
    max_member_bytes: int = 1 << 30  # tar members larger than this are skipped unread (member_too_large)
    latent_sample: bool = False  # kind=latents: draw mean + std * noise (seeded) instead of the posterior mean

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"DataConfig.kind must be one of {KINDS}, got {self.kind!r}")
        if self.short_clips not in SHORT_CLIP_POLICIES:
            raise ValueError(f"DataConfig.short_clips must be one of {SHORT_CLIP_POLICIES}, got {self.short_clips!r}")
        if self.output_dtype not in OUTPUT_DTYPES:
            raise ValueError(f"DataConfig.output_dtype must be one of {OUTPUT_DTYPES}, got {self.output_dtype!r}")
        if self.decoder not in DECODERS:
            raise ValueError(f"DataConfig.decoder must be one of {DECODERS}, got {self.decoder!r} (torchcodec "
                             "installs here but cannot load without system FFmpeg libraries)")
        for name in ("num_frames", "frame_stride", "size", "batch_size", "decode_threads", "prefetch_factor"):
            if getattr(self, name) < 1:
                raise ValueError(f"DataConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.num_workers < 0 or self.shuffle_buffer < 0:
            raise ValueError("DataConfig.num_workers and shuffle_buffer must be >= 0")
        if self.fps is not None and self.fps <= 0:
            raise ValueError(f"DataConfig.fps must be > 0 (or None to use frame_stride), got {self.fps}")
        if self.epochs is not None and self.epochs < 1:
            raise ValueError(f"DataConfig.epochs must be >= 1 (or None to stream forever), got {self.epochs}")
        if self.decode_cache_mb < 0:
            raise ValueError(f"DataConfig.decode_cache_mb must be >= 0 (0: off), got {self.decode_cache_mb}")
        if self.decode_timeout_s < 0:
            raise ValueError(f"DataConfig.decode_timeout_s must be >= 0, got {self.decode_timeout_s}")
        if self.read_timeout_s <= 0:
            raise ValueError(f"DataConfig.read_timeout_s must be > 0, got {self.read_timeout_s}")
        if self.max_member_bytes < 1:
            raise ValueError(f"DataConfig.max_member_bytes must be >= 1, got {self.max_member_bytes}")
        if self.buckets and self.bucket_table is not None:
            raise ValueError("give data.buckets or data.bucket_table, not both")
        if self.buckets or self.bucket_table is not None:
            from .buckets import resolve_buckets

            resolve_buckets(self)  # raises ValueError naming a bad entry
