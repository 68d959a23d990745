"""The streaming loader: round trip, corrupt media counted by reason, video2dataset shards, splitting, resume."""

from __future__ import annotations

import json
import os
import pickle
import signal
import time

import numpy as np
import pytest
import torch
from data_media import audio_only_mp4, clip_bytes, unsupported_codec_mp4

from dit_video.data import DataConfig, make_loader
from dit_video.data import codec as codec_mod
from dit_video.data.builder import make_shards
from dit_video.data.loader import WorkerDiedError


def cfg_for(shards, **kw) -> DataConfig:
    base = dict(shards=str(shards), num_frames=4, frame_stride=1, size=16, batch_size=2, num_workers=0,
                shuffle_buffer=0, epochs=1, random_crop=False, random_start=False, decode_timeout_s=20)
    base.update(kw)
    return DataConfig(**base)


def drain(loader) -> list[dict]:
    return list(loader)


COLORS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (40, 60, 230), "grey": (128, 128, 128)}


def test_round_trip_folder_to_batches(tmp_path):
    src = tmp_path / "videos"
    (src / "sub").mkdir(parents=True)
    sizes = {"red": (48, 64), "green": (64, 48), "blue": (40, 40), "grey": (32, 96)}
    for i, (name, (h, w)) in enumerate(sizes.items()):
        path = src / ("sub" if i % 2 else "") / f"{name}.mp4"
        path.write_bytes(clip_bytes(COLORS[name], t=7, h=h, w=w))
    (tmp_path / "caps.jsonl").write_text("".join(json.dumps({"file": n, "caption": n}) + "\n" for n in sizes))
    out = tmp_path / "shards"
    paths = make_shards(str(src), str(out), captions=str(tmp_path / "caps.jsonl"), samples_per_shard=3,
                        progress=False)
    assert [os.path.basename(p) for p in paths] == ["00000.tar", "00001.tar"]
    assert json.loads((out / "00000_stats.json").read_text())["successes"] == 3
    import tarfile

    with tarfile.open(out / "00000.tar") as tar:  # h264 mp4 and nothing asked: the original bytes
        meta = json.load(tar.extractfile("000000000.json"))
        assert tar.extractfile("000000000.mp4").read() == (src / meta["source"]).read_bytes()
        h, w = sizes[os.path.splitext(os.path.basename(meta["source"]))[0]]
        assert (meta["height"], meta["width"], meta["frames"], meta["fps"]) == (h, w, 7, 8.0)

    loader = make_loader(cfg_for(out, size=16, num_frames=4, batch_size=3, output_dtype="float32"))
    batches = drain(loader)
    assert [b["video"].shape for b in batches] == [(3, 3, 4, 16, 16), (1, 3, 4, 16, 16)]
    seen = {}
    for b in batches:
        v = b["video"]
        assert v.dtype == torch.float32 and v.min() >= -1 and v.max() <= 1
        for key, cap, clip in zip(b["key"], b["caption"], v):
            seen[key] = cap
            expect = torch.tensor(COLORS[cap], dtype=torch.float32) / 127.5 - 1
            mean = clip.mean(dim=(1, 2, 3))
            assert torch.allclose(mean, expect, atol=0.06), (cap, mean, expect)
    assert sorted(seen.values()) == sorted(sizes) and len(seen) == 4
    # decord 0.6 mis-sizes 40-pixel-wide frames ("DECORDArrayCopyFromTo: The size must exactly match");
    # PyAV decodes that clip instead, and the fallback is counted
    assert loader.stats() == {"samples": 4, "decode/pyav_fallback": 1}


def _corrupt_samples(prefix: str) -> list:
    good = clip_bytes(t=6)
    return [
        (f"{prefix}good1", {"mp4": good, "txt": "ok"}),
        (f"{prefix}empty", {"mp4": b"", "txt": "zero bytes"}),
        (f"{prefix}garbage", {"mp4": b"\x13\x37 not a video" * 64, "txt": "garbage"}),
        (f"{prefix}truncated", {"mp4": good[: len(good) // 2], "txt": "truncated"}),
        (f"{prefix}codec", {"mp4": unsupported_codec_mp4(), "txt": "unsupported codec"}),
        (f"{prefix}audio", {"mp4": audio_only_mp4(), "txt": "audio only"}),
        (f"{prefix}short", {"mp4": clip_bytes(t=2), "txt": "two frames"}),
        (f"{prefix}nocap", {"mp4": good}),
        (f"{prefix}nomp4", {"txt": "metadata only", "json": {"status": "failed_to_download"}}),
        (f"{prefix}good2", {"mp4": good, "txt": "ok"}),
    ]


@pytest.mark.parametrize("short_clips,num_workers", [("pad", 0), ("skip", 0), ("pad", 2)])
def test_corrupt_media_counted_by_reason(shard_of, tmp_path, short_clips, num_workers):
    shard_of("00000.tar", _corrupt_samples("a"))
    shard_of("00001.tar", _corrupt_samples("b"))
    loader = make_loader(cfg_for(tmp_path / "shards", short_clips=short_clips, num_workers=num_workers))
    keys = [k for b in drain(loader) for k in b["key"]]
    per_shard = {"skipped/empty_file": 1, "skipped/decode_error": 2, "skipped/unsupported_codec": 1,
                 "skipped/no_video_stream": 1, "skipped/no_mp4": 1, "missing_caption": 1}
    if short_clips == "pad":
        per_shard.update({"samples": 4, "padded/too_short": 1})
        good = ["good1", "short", "nocap", "good2"]
    else:
        per_shard.update({"samples": 3, "skipped/too_short": 1})
        good = ["good1", "nocap", "good2"]
    assert loader.stats() == {k: 2 * v for k, v in sorted(per_shard.items())}
    assert sorted(keys) == sorted(p + g for p in "ab" for g in good)


def test_video2dataset_shard_with_failed_sample(tmp_path):
    d = tmp_path / "v2d"
    d.mkdir()
    marker = tmp_path / "unpickled"

    class Evil:  # a .pyd member that would create `marker` if anything unpickled it
        def __reduce__(self):
            return (open, (str(marker), "w"))

    from dit_video.data.writer import write_shard

    ok = clip_bytes(t=5, h=32, w=32)
    meta = lambda k, status, **kw: {"url": f"https://example.com/{k}.mp4", "key": k, "status": status,  # noqa: E731
                                     "error_message": None, "caption": f"clip {k}", **kw}
    write_shard(str(d / "00000.tar"), [
        ("000000000", {"mp4": ok, "txt": "clip 000000000", "json": meta("000000000", "success")}),
        ("000000001", {"txt": "clip 000000001",
                       "json": meta("000000001", "failed_to_download", error_message="HTTP Error 404")}),
        ("000000002", {"mp4": ok, "json": meta("000000002", "success"), "pyd": pickle.dumps(Evil())}),
        ("000000003", {"mp4": ok, "txt": "clip 000000003", "json": meta("000000003", "success")}),
    ])
    (d / "00000_stats.json").write_text(json.dumps({"count": 4, "successes": 3, "failed_to_download": 1}))
    (d / "00000.parquet").write_bytes(b"PAR1 not read")
    loader = make_loader(cfg_for(d, batch_size=4))
    (batch,) = drain(loader)
    assert batch["key"] == ["000000000", "000000002", "000000003"]
    assert batch["caption"] == ["clip 000000000", "clip 000000002", "clip 000000003"]  # 2: from its json
    assert loader.stats() == {"samples": 3, "skipped/no_mp4": 1}
    assert not marker.exists()


def _numbered_shards(shard_of, n_shards: int, per_shard: int, h: int = 32, w: int = 32, t: int = 6):
    rng = np.random.default_rng(0)
    for s in range(n_shards):
        samples = []
        for i in range(per_shard):
            frames = rng.integers(0, 256, (t, h, w, 3), dtype=np.uint8)
            samples.append((f"s{s}_{i}", {"mp4": codec_mod.encode_mp4(frames, 8), "txt": f"s{s}_{i}"}))
        shard_of(f"{s:05d}.tar", samples)


def test_ranks_and_workers_disjoint_and_covering(shard_of, tmp_path):
    _numbered_shards(shard_of, 8, 3)
    everything = {f"s{s}_{i}" for s in range(8) for i in range(3)}
    seen = []
    for rank in range(2):
        cfg = cfg_for(tmp_path / "shards", num_workers=2, shuffle_buffer=4, seed=3)
        seen.append([k for b in make_loader(cfg, rank=rank, world_size=2) for k in b["key"]])
    for keys in seen:
        assert len(keys) == len(set(keys)) == 12
    assert set(seen[0]).isdisjoint(seen[1]) and set(seen[0]) | set(seen[1]) == everything


def test_too_few_shards_is_a_clear_error(shard_of, tmp_path):
    _numbered_shards(shard_of, 2, 1)
    with pytest.raises(ValueError, match="cannot feed 2 rank"):
        make_loader(cfg_for(tmp_path / "shards", num_workers=2), rank=0, world_size=2)
    make_loader(cfg_for(tmp_path / "shards", num_workers=2, resample=True), rank=0, world_size=2)  # fine


def test_missing_shards_are_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        make_loader(cfg_for(tmp_path / "nope" / "{00000..00003}.tar"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no .tar shards"):
        make_loader(cfg_for(tmp_path / "empty"))


@pytest.mark.parametrize("num_workers,stop", [(2, 3), (0, 4)])
def test_stop_and_resume_equals_uninterrupted(shard_of, tmp_path, num_workers, stop):
    _numbered_shards(shard_of, 4, 5, h=24, w=40)
    cfg = cfg_for(tmp_path / "shards", num_workers=num_workers, batch_size=3, shuffle_buffer=4, epochs=None,
                  random_crop=True, random_start=True, seed=7, num_frames=3)
    total = 11  # 33 samples: more than the 20 in an epoch, so the run crosses into epoch 1
    ref_loader = make_loader(cfg)
    it = iter(ref_loader)
    ref = [next(it) for _ in range(total)]
    del it

    first = make_loader(cfg)
    it = iter(first)
    head = [next(it) for _ in range(stop)]
    del it
    state = json.loads(json.dumps(first.state_dict()))  # survives a JSON checkpoint
    resumed = make_loader(cfg)
    resumed.load_state_dict(state)
    it = iter(resumed)
    tail = [next(it) for _ in range(total - stop)]
    del it
    got = head + tail
    assert [b["key"] for b in got] == [b["key"] for b in ref]
    for a, b in zip(got, ref):
        assert torch.equal(a["video"], b["video"])
    assert resumed.stats() == ref_loader.stats() and ref_loader.stats()["samples"] == 3 * total
    assert resumed.state_dict()["epoch"] == ref_loader.state_dict()["epoch"] == 1
    keys = [k for b in ref for k in b["key"]]
    # the first 18 samples all come from epoch 0 (for each worker), so none repeats; 33 cover all 20
    assert len(set(keys[:18])) == 18 and len(set(keys)) == 20


def test_resume_with_changed_world_or_workers_raises(shard_of, tmp_path):
    _numbered_shards(shard_of, 4, 1)
    cfg = cfg_for(tmp_path / "shards", num_workers=2)
    state = make_loader(cfg).state_dict()
    with pytest.raises(ValueError, match="world size"):
        make_loader(cfg, rank=0, world_size=2).load_state_dict(state)
    other = cfg_for(tmp_path / "shards", num_workers=1)
    with pytest.raises(ValueError, match="num_workers"):
        make_loader(other).load_state_dict(state)
    make_loader(cfg).load_state_dict(state)  # same settings: fine


@pytest.mark.parametrize("num_workers", [0, 1])
def test_hanging_and_crashing_decoder_are_skipped(shard_of, tmp_path, monkeypatch, num_workers):
    real = codec_mod.decode_clip

    def flaky(data, plan):
        if data.startswith(b"HANG"):
            time.sleep(600)
        if data.startswith(b"CRASH"):
            os.kill(os.getpid(), signal.SIGSEGV)
        return real(data, plan)

    monkeypatch.setattr(codec_mod, "decode_clip", flaky)  # inherited by the forked decoder processes
    good = clip_bytes(t=5)
    shard_of("00000.tar", [("a", {"mp4": good, "txt": "a"}), ("hang", {"mp4": b"HANG" + good, "txt": "h"}),
                           ("crash", {"mp4": b"CRASH" + good, "txt": "c"}), ("b", {"mp4": good, "txt": "b"})])
    loader = make_loader(cfg_for(tmp_path / "shards", decode_timeout_s=2.5, num_workers=num_workers))
    start = time.time()
    keys = [k for b in drain(loader) for k in b["key"]]
    assert keys == ["a", "b"]
    assert loader.stats() == {"samples": 2, "skipped/decode_timeout": 1, "skipped/decode_crash": 1}
    assert time.time() - start < 30


def test_dead_worker_is_reported(shard_of, tmp_path, monkeypatch):
    from dit_video.data import pipeline

    main_pid = os.getpid()
    real = pipeline.VideoStream._put

    def die_in_worker(self, batch, frames, job):
        if os.getpid() != main_pid:
            os.kill(os.getpid(), signal.SIGKILL)
        return real(self, batch, frames, job)

    monkeypatch.setattr(pipeline.VideoStream, "_put", die_in_worker)
    shard_of("00000.tar", [("a", {"mp4": clip_bytes(t=5), "txt": "a"})])
    with pytest.raises(WorkerDiedError, match="worker process died"):
        drain(make_loader(cfg_for(tmp_path / "shards", num_workers=1)))


def _truncate(path: str, member: str) -> None:
    """Cut a tar 300 bytes into ``member``'s data (a download that stopped half-way)."""
    data = open(path, "rb").read()
    open(path, "wb").write(data[: data.index(member.encode()) + 512 + 300])


def test_truncated_tar_counted_and_stream_goes_on(shard_of, tmp_path):
    good = clip_bytes(t=5)
    bad = shard_of("00000.tar", [(f"a{i}", {"mp4": good, "txt": "x"}) for i in range(4)])
    _truncate(bad, "a2.mp4")
    shard_of("00001.tar", [(f"b{i}", {"mp4": good, "txt": "x"}) for i in range(2)])
    loader = make_loader(cfg_for(tmp_path / "shards", batch_size=8))
    keys = [k for b in drain(loader) for k in b["key"]]
    assert keys == ["a0", "a1", "b0", "b1"]
    assert loader.stats() == {"samples": 4, "skipped/tar_error": 1}


def test_resume_counts_every_skip_once(shard_of, tmp_path):
    shard_of("00000.tar", _corrupt_samples("a"))
    shard_of("00001.tar", _corrupt_samples("b"))
    shard_of("00002.tar", _corrupt_samples("c"))
    _truncate(shard_of("00003.tar", _corrupt_samples("d")), "dshort.mp4")
    cfg = cfg_for(tmp_path / "shards", num_workers=2, batch_size=2, shuffle_buffer=3, epochs=2, seed=1)
    ref_loader = make_loader(cfg)
    ref = drain(ref_loader)
    first = make_loader(cfg)
    it = iter(first)
    head = [next(it) for _ in range(5)]
    del it
    resumed = make_loader(cfg)
    resumed.load_state_dict(first.state_dict())
    got = head + drain(resumed)
    assert [b["key"] for b in got] == [b["key"] for b in ref]
    assert resumed.stats() == ref_loader.stats()
    # two epochs of: 3 whole corrupt-media shards + one cut inside its 7th sample (6 read, 1 good, 1 tar error)
    assert ref_loader.stats() == {"samples": 2 * (3 * 4 + 1), "skipped/tar_error": 2, "skipped/empty_file": 8,
                                  "skipped/decode_error": 16, "skipped/unsupported_codec": 8,
                                  "skipped/no_video_stream": 8, "skipped/no_mp4": 6, "missing_caption": 6,
                                  "padded/too_short": 6}


def test_config_is_an_omegaconf_structured_config(shard_of, tmp_path):
    from omegaconf import OmegaConf

    _numbered_shards(shard_of, 1, 2)
    base = OmegaConf.structured(DataConfig)
    cfg = OmegaConf.merge(base, OmegaConf.from_dotlist([f"shards={tmp_path / 'shards'}", "fps=4", "epochs=1",
                                                        "num_workers=0", "size=8", "num_frames=2"]))
    assert cfg.fps == 4.0 and cfg.epochs == 1
    from omegaconf.errors import ValidationError

    with pytest.raises(ValidationError):
        OmegaConf.merge(base, {"num_frames": "many"})
    (batch,) = drain(make_loader(cfg))  # a DictConfig is accepted too
    assert batch["video"].shape == (2, 3, 2, 8, 8)
    with pytest.raises(ValueError, match="short_clips"):
        DataConfig(short_clips="drop")


def test_target_fps_picks_the_right_source_frames(shard_of, tmp_path):
    t = 24
    frames = np.zeros((t, 32, 32, 3), np.uint8)
    frames[:] = (np.arange(t) * 10)[:, None, None, None]  # frame i has grey level 10 i
    shard_of("00000.tar", [("ramp", {"mp4": codec_mod.encode_mp4(frames, fps=24), "txt": "ramp"})])
    for fps, stride, want in [(8.0, 1, [0, 3, 6, 9]), (None, 2, [0, 2, 4, 6])]:
        cfg = cfg_for(tmp_path / "shards", fps=fps, frame_stride=stride, num_frames=4, size=32, random_start=True,
                      seed=11, output_dtype="float32")
        (batch,) = drain(make_loader(cfg))
        levels = ((batch["video"][0].mean(dim=(0, 2, 3)) + 1) * 127.5 / 10).numpy()
        steps = np.diff(levels)
        assert np.allclose(steps, np.diff(want), atol=0.3), (fps, levels)


def test_resampled_stream_is_seeded_and_endless(shard_of, tmp_path):
    _numbered_shards(shard_of, 3, 2)
    cfg = cfg_for(tmp_path / "shards", resample=True, epochs=None, num_workers=2, shuffle_buffer=2, seed=4)

    def take(loader, n):
        it = iter(loader)
        out = [k for _ in range(n) for k in next(it)["key"]]
        del it
        return out

    a, b = take(make_loader(cfg), 8), take(make_loader(cfg), 8)
    assert a == b and len(a) == 16  # 16 > 6 samples: it kept going, drawing shards with replacement
    other = take(make_loader(cfg_for(tmp_path / "shards", resample=True, epochs=None, num_workers=2,
                                     shuffle_buffer=2, seed=5)), 8)
    assert other != a
    first = make_loader(cfg)
    head = take(first, 3)
    resumed = make_loader(cfg)
    resumed.load_state_dict(first.state_dict())
    assert head + take(resumed, 5) == a


def test_uint8_default_matches_float_output(shard_of, tmp_path):
    from dit_video.data import to_float

    _numbered_shards(shard_of, 1, 3, h=24, w=40)
    kw = dict(random_crop=True, random_start=True, seed=2, size=16, batch_size=3)
    (f,) = drain(make_loader(cfg_for(tmp_path / "shards", output_dtype="float32", **kw)))
    (u,) = drain(make_loader(cfg_for(tmp_path / "shards", **kw)))  # the default: uint8
    assert u["video"].dtype == torch.uint8 and u["key"] == f["key"]
    assert torch.allclose(to_float(u["video"]), f["video"], atol=1e-6)


def test_video_layout_is_channels_last_3d_view(shard_of, tmp_path):
    _numbered_shards(shard_of, 1, 2)
    (batch,) = drain(make_loader(cfg_for(tmp_path / "shards", batch_size=2, num_frames=3, size=8)))
    v = batch["video"]
    assert v.shape == (2, 3, 3, 8, 8) and v.is_contiguous(memory_format=torch.channels_last_3d)
    assert torch.equal(v.contiguous(), v)


@pytest.mark.parametrize("num_workers", [0, 1])
def test_decode_cache_serves_the_same_batches_and_counts_hits(shard_of, tmp_path, num_workers):
    _numbered_shards(shard_of, 1, 3, h=32, w=32, t=6)
    kw = dict(epochs=3, num_workers=num_workers, batch_size=3, num_frames=4, size=16)
    plain = make_loader(cfg_for(tmp_path / "shards", **kw))
    ref = drain(plain)
    cached = make_loader(cfg_for(tmp_path / "shards", decode_cache_mb=1.0, **kw))
    got = drain(cached)
    assert [b["key"] for b in got] == [b["key"] for b in ref] and len(got) == 3
    assert all(torch.equal(a["video"], b["video"]) for a, b in zip(got, ref))
    # epochs 2 and 3 are served from the cache: 3 clips x 2; the first epoch decodes every clip
    assert cached.stats() == {"samples": 9, "decode/cache_hits": 6} and "decode/cache_hits" not in plain.stats()
    one_clip = 4 * 32 * 32 * 3 / 2**20  # the decoded clip's bytes, before the resize to 16x16
    capped = make_loader(cfg_for(tmp_path / "shards", decode_cache_mb=1.5 * one_clip, **kw))
    drain(capped)
    assert capped.stats()["decode/cache_hits"] == 2  # full after the first clip: it keeps that one


def test_decode_cache_size_must_not_be_negative(tmp_path):
    with pytest.raises(ValueError, match="decode_cache_mb"):
        cfg_for(tmp_path, decode_cache_mb=-1)
