"""Buckets: homogeneous batches, the batch-size rule, frequencies against the weights, no upscaling, exact
resume; and the shared batch ring never reuses memory that is still referenced."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from dit_video.data import DataConfig, make_loader
from dit_video.data import buckets as bk
from dit_video.data import codec as codec_mod


def cfg_for(shards, **kw) -> DataConfig:
    base = dict(shards=str(shards), num_frames=4, frame_stride=1, size=16, batch_size=2, num_workers=0,
                shuffle_buffer=0, epochs=1, random_crop=False, random_start=False, decode_timeout_s=20)
    base.update(kw)
    return DataConfig(**base)


def _clip(rng, t, h, w) -> bytes:
    return codec_mod.encode_mp4(rng.integers(0, 256, (t, h, w, 3), dtype=np.uint8), 8)


SOURCES = [(6, 48, 64), (6, 64, 48), (3, 32, 32), (6, 40, 40), (6, 96, 96), (2, 48, 80), (6, 10, 10)]  # T, H, W
BUCKETS = "4x32x32,4x24x40,4x40x24,2x16x16,2x12x20,4x64x64"


@pytest.fixture
def mixed_shards(shard_of, tmp_path):
    """Four shards of clips in the sizes of SOURCES; the key names the size, the json holds it (as make-shards
    writes it) for half of them."""
    rng = np.random.default_rng(0)
    sizes = {}
    for s in range(4):
        samples = []
        for i in range(9):
            t, h, w = SOURCES[(s * 9 + i) % len(SOURCES)]
            key = f"s{s}_{i}_{t}x{h}x{w}"
            members = {"mp4": _clip(rng, t, h, w), "txt": key}
            if i % 2:
                members["json"] = {"frames": t, "fps": 8.0, "height": h, "width": w}
            samples.append((key, members))
            sizes[key] = (t, h, w)
        shard_of(f"{s:05d}.tar", samples)
    return tmp_path / "shards", sizes


def test_rule_and_table():
    cfg = DataConfig(num_frames=16, size=256, batch_size=8,
                     bucket_table={"resolutions": [256, 128], "frames": [16, 8], "aspect_ratios": ["1:1", "9:16"],
                                   "weights": [1.0, 0.5, 1.0, 1.0], "multiple": 16})
    got = {b.name: (b.batch_size, b.weight) for b in bk.resolve_buckets(cfg)}
    assert got == {"16x256x256": (8, 1.0), "16x192x336": (8, 1.0), "8x256x256": (16, 0.5), "8x192x336": (16, 0.5),
                   "16x128x128": (32, 1.0), "16x96x176": (31, 1.0), "8x128x128": (64, 1.0), "8x96x176": (62, 1.0)}
    base = 8 * 16 * 256 * 256
    for b in bk.resolve_buckets(cfg):  # pixels (tokens) per batch within half a clip of the base's
        assert abs(b.batch_size * b.pixels - base) <= b.pixels / 2
    assert bk.parse_buckets("16x256x256, 8x192x336:0.5:4") == [
        {"frames": 16, "height": 256, "width": 256}, {"frames": 8, "height": 192, "width": 336, "weight": 0.5,
                                                     "batch_size": 4}]
    for bad, msg in [("16x256", "FRAMESxHEIGHTxWIDTH"), ("4x8x8:1.5", "keep probability")]:
        with pytest.raises(ValueError, match=msg):
            DataConfig(buckets=bk.parse_buckets(bad))


def test_batches_are_homogeneous_and_nothing_is_upscaled(mixed_shards):
    shards, sizes = mixed_shards
    cfg = cfg_for(shards, buckets=bk.parse_buckets(BUCKETS), num_workers=2, batch_size=2, epochs=1)
    resolved = {b.name: b for b in bk.resolve_buckets(cfg)}
    loader = make_loader(cfg)
    seen = []
    for batch in loader:
        b, c, t, h, w = batch["video"].shape
        bucket = resolved[f"{t}x{h}x{w}"]
        assert b <= bucket.batch_size and c == 3
        for key in batch["key"]:
            st, sh, sw = sizes[key]
            assert sh >= h and sw >= w and st >= t, f"{key} upscaled into {bucket.name}"
            seen.append((key, bucket.name))
    stats = loader.stats()
    landed = {k: v for k, v in stats.items() if k.startswith("bucket/")}
    assert sum(landed.values()) == stats["samples"] == len(seen)
    want = {}
    for key, (st, sh, sw) in sizes.items():  # the rule by hand: nearest aspect group, largest that fits
        fits = [b for b in resolved.values() if b.height <= sh and b.width <= sw and b.frames <= st]
        if not fits:
            want[key] = None
            continue
        ratio = math.log(sh / sw)
        best = min(abs(math.log(b.height / b.width) - ratio) for b in fits)
        group = [b for b in fits if abs(math.log(b.height / b.width) - ratio) - best < 0.05]
        want[key] = max(group, key=lambda b: (b.pixels, b.frames)).name
    assert dict(seen) == {k: v for k, v in want.items() if v is not None}
    assert stats.get("skipped/no_bucket", 0) == sum(v is None for v in want.values()) > 0
    assert {n for _, n in seen} == set(resolved)  # the sources were chosen so that every bucket is used


def test_bucket_frequencies_match_the_weights(shard_of, tmp_path):
    """1000 clips that fit every bucket: bucket i is kept with probability w_i prod_{j<i} (1 - w_j)."""
    rng = np.random.default_rng(1)
    clip = _clip(rng, 2, 16, 16)
    n = 1000
    for s in range(4):
        shard_of(f"{s:05d}.tar", [(f"c{s}_{i}", {"mp4": clip, "txt": "x"}) for i in range(n // 4)])
    spec = "2x16x16:0.5,2x8x8:0.4,1x8x8:0.5"
    loader = make_loader(cfg_for(tmp_path / "shards", buckets=bk.parse_buckets(spec), num_workers=2,
                                 shuffle_buffer=8, seed=3, num_frames=2, size=8, batch_size=4))
    counts = {}
    for batch in loader:
        name = "x".join(str(d) for d in batch["video"].shape[2:])
        counts[name] = counts.get(name, 0) + len(batch["key"])
    p = {"2x16x16": 0.5, "2x8x8": 0.5 * 0.4, "1x8x8": 0.5 * 0.6 * 0.5}
    dropped = 1 - sum(p.values())
    stats = loader.stats()
    assert stats["skipped/bucket_dropped"] + sum(counts.values()) == n
    for name, prob in [*p.items(), ("dropped", dropped)]:
        got = stats["skipped/bucket_dropped"] if name == "dropped" else counts[name]
        sigma = math.sqrt(n * prob * (1 - prob))
        assert abs(got - n * prob) < 4 * sigma, (name, got, n * prob, sigma)  # 4 sigma: fails 1 in 16,000 seeds


@pytest.mark.parametrize("num_workers,stop", [(2, 3), (0, 5)])
def test_bucketed_resume_is_exact(mixed_shards, num_workers, stop):
    shards, _ = mixed_shards
    cfg = cfg_for(shards, buckets=bk.parse_buckets(BUCKETS), num_workers=num_workers, batch_size=2, epochs=None,
                  shuffle_buffer=4, seed=9, random_crop=True, random_start=True)
    total = 20  # batches of 1-2: more than the 31 usable clips of an epoch, so unfinished batches span epochs
    ref_loader = make_loader(cfg)
    it = iter(ref_loader)
    ref = [next(it) for _ in range(total)]
    del it
    first = make_loader(cfg)
    it = iter(first)
    head = [next(it) for _ in range(stop)]
    del it
    state = json.loads(json.dumps(first.state_dict()))
    assert any(w["pending"] for w in state["workers"])  # the test means something: unfinished batches waited
    resumed = make_loader(cfg)
    resumed.load_state_dict(state)
    it = iter(resumed)
    tail = [next(it) for _ in range(total - stop)]
    del it
    got = head + tail
    assert [b["key"] for b in got] == [b["key"] for b in ref]
    for a, b in zip(got, ref):
        assert torch.equal(a["video"], b["video"])
    assert resumed.stats() == ref_loader.stats()


def _in_ring(t: torch.Tensor, ring) -> bool:
    import ctypes

    start = ctypes.addressof(ctypes.c_char.from_buffer(ring.buf))
    return start <= t.untyped_storage().data_ptr() < start + len(ring.buf)


def test_ring_never_overwrites_a_batch_still_held(shard_of, tmp_path):
    rng = np.random.default_rng(2)
    clips = {}
    for s in range(2):
        samples = []
        for i in range(20):
            clips[f"k{s}_{i}"] = _clip(rng, 4, 32, 32)
            samples.append((f"k{s}_{i}", {"mp4": clips[f"k{s}_{i}"], "txt": "x"}))
        shard_of(f"{s:05d}.tar", samples)
    plan = codec_mod.ClipPlan(num_frames=4)
    truth = {k: torch.from_numpy(codec_mod.decode_clip(c, plan)[0]).permute(3, 0, 1, 2) for k, c in clips.items()}

    def check(batch: dict, video: torch.Tensor) -> None:  # every clip equals its own source, decoded here
        for k, v in zip(batch["key"], video):
            assert torch.equal(v, truth[k]), k

    loader = make_loader(cfg_for(tmp_path / "shards", batch_size=2, num_frames=4, size=32, output_dtype="uint8",
                                 epochs=None, num_workers=2))
    it = iter(loader)
    held = [next(it) for _ in range(3)]  # kept while the workers go through their slots many times
    ring = loader.ring
    assert all(_in_ring(h["video"], ring) for h in held)
    kept_view = held[0]["video"][0, :, 1:]  # a view outlives its batch tensor
    kept_key = held[0]["key"][0]
    for h in held[1:]:
        check(h, h["video"])
    held = held[1:]
    ptrs = set()
    for _ in range(27):  # each batch dropped after use: its slot comes back
        batch = next(it)
        check(batch, batch["video"])
        assert _in_ring(batch["video"], ring)
        ptrs.add(batch["video"].untyped_storage().data_ptr())
    assert torch.equal(kept_view, truth[kept_key][:, 1:])
    assert len(ptrs) <= ring.workers * ring.slots < 27  # slots were reused
    hoard = [next(it) for _ in range(30)]  # all kept: the workers run out of slots and fall back
    assert not all(_in_ring(b["video"], ring) for b in hoard)
    for b in held + hoard:
        check(b, b["video"])
    del it


def test_bucketed_ranks_cover_the_shards_once(mixed_shards):
    """Two ranks x two workers with buckets: disjoint, and together every clip that fits a bucket, once."""
    shards, sizes = mixed_shards
    seen = []
    for rank in range(2):
        cfg = cfg_for(shards, buckets=bk.parse_buckets(BUCKETS), num_workers=2, shuffle_buffer=4, seed=3)
        loader = make_loader(cfg, rank=rank, world_size=2)
        seen.append([k for b in loader for k in b["key"]])
    fits = {k for k, (t, h, w) in sizes.items() if min(h, w) >= 12}  # the 10x10 sources fit no bucket
    assert set(seen[0]).isdisjoint(seen[1]) and sorted(seen[0] + seen[1]) == sorted(fits)
