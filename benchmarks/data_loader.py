"""Data benchmark: clips/s through ``dit_video.data`` vs raw decord decoding of the same shards.

Writes synthetic 256x256 clips (textured backgrounds, moving shapes; 24 frames at 24 fps) as shards,
then, in this one process, times

* ``raw_decord``: read the tars, ``decord.VideoReader(BytesIO)`` + ``get_batch`` of the same 16
  frames the loader takes, to uint8 numpy -- the floor of any decord-based loader;
* ``raw_decord_float``: the same, plus writing each clip as float32 [-1, 1] into a fresh batch
  tensor (channels-last, as the loader stores it): what any loader with this output must also do;
* ``loader_inprocess``: ``make_loader`` with ``num_workers=0`` and ``decode_timeout_s=0``
  (decoding in this process, no sandbox): the pipeline's own overhead (tar reading, shuffle,
  sampling, float conversion to [-1, 1], batching);
* ``loader_inprocess_uint8``: the same with ``output_dtype="uint8"`` (normalize on the GPU instead);
* ``loader_sandboxed``: ``num_workers=0`` with the per-sample time limit (decode in a forked child,
  frames back through shared memory);
* ``loader_1_worker`` / ``loader_2_workers``: DataLoader worker processes (sandboxed), the training setup.

Each is run ``repeats`` times, interleaved, and the median is reported; ``ratio_vs_raw`` divides by
the raw decord median. decord runs with one thread everywhere, so per-worker numbers compare.
"""

from __future__ import annotations

import io
import json
import os
import platform
import statistics
import tarfile
import tempfile
import time


def _write_shards(out: str, num: int, size: int, frames: int) -> None:
    from dit_video.data import write_synthetic_shards

    write_synthetic_shards(out, num, size=size, num_frames=frames, fps=24, seed=1, samples_per_shard=max(1, num // 4),
                           overwrite=True, workers=min(4, os.cpu_count() or 1))


def _raw_decord(shard_dir: str, num_frames: int) -> int:
    import decord

    decord.bridge.set_bridge("native")
    n = 0
    for name in sorted(os.listdir(shard_dir)):
        if not name.endswith(".tar"):
            continue
        with tarfile.open(os.path.join(shard_dir, name)) as tar:
            for m in tar:
                if not m.name.endswith(".mp4"):
                    continue
                vr = decord.VideoReader(io.BytesIO(tar.extractfile(m).read()), num_threads=1)
                start = (len(vr) - num_frames) // 2  # the loader's centred window
                frames = vr.get_batch(list(range(start, start + num_frames))).asnumpy()
                assert frames.shape[0] == num_frames
                n += 1
    return n


def _raw_decord_float(shard_dir: str, num_frames: int, batch_size: int = 8) -> int:
    import decord
    import numpy as np
    import torch

    decord.bridge.set_bridge("native")
    n, batch = 0, None
    for name in sorted(os.listdir(shard_dir)):
        if not name.endswith(".tar"):
            continue
        with tarfile.open(os.path.join(shard_dir, name)) as tar:
            for m in tar:
                if not m.name.endswith(".mp4"):
                    continue
                vr = decord.VideoReader(io.BytesIO(tar.extractfile(m).read()), num_threads=1)
                start = (len(vr) - num_frames) // 2
                x = vr.get_batch(list(range(start, start + num_frames))).asnumpy()
                if batch is None or n % batch_size == 0:  # channels-last, as the loader stores it
                    batch = torch.empty(batch_size, *x.shape)
                o = batch[n % batch_size].numpy()
                np.divide(x, np.float32(127.5), out=o, dtype=np.float32)
                np.subtract(o, np.float32(1.0), out=o)
                n += 1
    return n


def _loader(shard_dir: str, num_frames: int, size: int, num_workers: int, timeout: float,
            dtype: str = "float32") -> int:
    from dit_video.data import DataConfig, make_loader

    cfg = DataConfig(shards=shard_dir, num_frames=num_frames, size=size, batch_size=8, num_workers=num_workers,
                     shuffle_buffer=0, epochs=1, random_start=False, random_crop=False, decode_timeout_s=timeout,
                     output_dtype=dtype)
    loader = make_loader(cfg)
    n = 0
    for batch in loader:
        n += batch["video"].shape[0]
    assert loader.stats().get("samples") == n
    return n


def run(quick: bool = False, out_dir: str | None = None) -> list[dict]:
    """Time the modes above; returns one JSON-able row per mode (and writes data_loader.json to ``out_dir``)."""
    size, frames, src_frames = (64, 16, 24) if quick else (256, 16, 24)
    num, repeats = (16, 1) if quick else (96, 3)
    modes = {
        "raw_decord": lambda d: _raw_decord(d, frames),
        "raw_decord_float": lambda d: _raw_decord_float(d, frames),
        "loader_inprocess": lambda d: _loader(d, frames, size, 0, 0.0),
        "loader_inprocess_uint8": lambda d: _loader(d, frames, size, 0, 0.0, "uint8"),
        "loader_sandboxed": lambda d: _loader(d, frames, size, 0, 60.0),
        "loader_1_worker": lambda d: _loader(d, frames, size, 1, 60.0),
        "loader_2_workers": lambda d: _loader(d, frames, size, 2, 60.0),
    }
    times: dict[str, list[float]] = {m: [] for m in modes}
    with tempfile.TemporaryDirectory(prefix="dit_video_data_bench_") as tmp:
        t0 = time.perf_counter()
        _write_shards(tmp, num, size, src_frames)
        write_s = time.perf_counter() - t0
        for fn in modes.values():  # warm-up: imports, page cache
            fn(tmp)
        for _ in range(repeats):
            for mode, fn in modes.items():
                t = time.perf_counter()
                n = fn(tmp)
                times[mode].append(n / (time.perf_counter() - t))
    raw = statistics.median(times["raw_decord"])
    raw_float = statistics.median(times["raw_decord_float"])
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = None
    rows = []
    for mode, vals in times.items():
        med = statistics.median(vals)
        rows.append({"bench": "data_loader", "mode": mode, "clips_per_s": round(med, 2),
                     "ratio_vs_raw": round(med / raw, 3), "ratio_vs_raw_float": round(med / raw_float, 3),
                     "load_avg_1m": load, "all_clips_per_s": [round(v, 2) for v in vals],
                     "clips": num, "size": size, "frames": frames, "source_frames": src_frames,
                     "repeats": repeats, "shard_write_s": round(write_s, 2), "cpus": os.cpu_count(),
                     "machine": platform.processor() or platform.machine(), "quick": quick})
    if out_dir:
        os.makedirs(out_dir, exist_ok=True)
        with open(os.path.join(out_dir, "data_loader.json"), "w") as f:
            json.dump(rows, f, indent=1)
    return rows


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    for row in run(quick=a.quick, out_dir=a.out):
        print(f"{row['mode']:<24} {row['clips_per_s']:>7.1f} clips/s  x{row['ratio_vs_raw']:.3f} of raw decord, "
              f"x{row['ratio_vs_raw_float']:.3f} of raw decord + float  (runs: {row['all_clips_per_s']})")
