"""``DataConfig``: what the video loader reads and how it shapes clips.

Plain types only (no torch import) so that it works as an omegaconf structured config next to the
other schemas in :mod:`dit_video.config`.
"""

from __future__ import annotations

from dataclasses import dataclass

SHORT_CLIP_POLICIES = ("pad", "skip")
OUTPUT_DTYPES = ("float32", "uint8")


@dataclass
class DataConfig:
    """Video clip stream from webdataset shards (video2dataset layout: ``key.mp4``, ``key.txt``, ``key.json``).

    ``shards`` is a directory of ``.tar`` files, a glob (``/data/*.tar``) or a brace pattern
    (``/data/{00000..00099}.tar``); several may be joined with ``::``.
    """

    shards: str = ""
    num_frames: int = 16  # frames per clip (T)
    frame_stride: int = 1  # take every k-th source frame
    fps: float | None = None  # target frame rate; when set, overrides frame_stride
    size: int = 256  # output height = width: short side resized to this, then cropped square
    batch_size: int = 8
    num_workers: int = 2  # DataLoader worker processes (0: decode in the calling process)
    shuffle_buffer: int = 256  # sample shuffle buffer per worker; 0 or 1 disables sample and shard shuffling
    seed: int = 0
    resample: bool = False  # draw shards with replacement (seeded per epoch/rank/worker) instead of splitting them
    random_crop: bool = True  # False: centre crop
    random_start: bool = True  # False: centred temporal window
    short_clips: str = "pad"  # clips shorter than asked: "pad" (repeat the last frame) or "skip"
    decode_timeout_s: float = 60.0  # per-sample limit; decode runs in a sandbox process (0: in-process, no limit)
    epochs: int | None = None  # None: stream forever (epochs advance automatically); N: stop after N epochs
    decode_threads: int = 1  # decoder threads per worker
    output_dtype: str = "float32"  # "uint8": video stays in [0, 255] (4x fewer bytes); normalize on the GPU
    pin_memory: bool = False
    prefetch_factor: int = 2  # batches prefetched per worker

    def __post_init__(self) -> None:
        if self.short_clips not in SHORT_CLIP_POLICIES:
            raise ValueError(f"DataConfig.short_clips must be one of {SHORT_CLIP_POLICIES}, got {self.short_clips!r}")
        if self.output_dtype not in OUTPUT_DTYPES:
            raise ValueError(f"DataConfig.output_dtype must be one of {OUTPUT_DTYPES}, got {self.output_dtype!r}")
        for name in ("num_frames", "frame_stride", "size", "batch_size", "decode_threads", "prefetch_factor"):
            if getattr(self, name) < 1:
                raise ValueError(f"DataConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.num_workers < 0 or self.shuffle_buffer < 0:
            raise ValueError("DataConfig.num_workers and shuffle_buffer must be >= 0")
        if self.fps is not None and self.fps <= 0:
            raise ValueError(f"DataConfig.fps must be > 0 (or None to use frame_stride), got {self.fps}")
        if self.epochs is not None and self.epochs < 1:
            raise ValueError(f"DataConfig.epochs must be >= 1 (or None to stream forever), got {self.epochs}")
        if self.decode_timeout_s < 0:
            raise ValueError(f"DataConfig.decode_timeout_s must be >= 0, got {self.decode_timeout_s}")
