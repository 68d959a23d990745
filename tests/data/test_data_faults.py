"""Fault injection on the data path ([reliability]): no command from a shard spec, no hang, no memory
blow-up, bad media and bad tars counted exactly by reason, make-shards --overwrite keeps other files."""

from __future__ import annotations

import io
import logging
import os
import tarfile
import threading
import time

import numpy as np
import pytest
from data_media import bit_flipped_mp4, clip_bytes, no_moov_mp4

from dit_video.data import DataConfig, make_loader
from dit_video.data import codec as codec_mod
from dit_video.data.builder import make_shards
from dit_video.data.writer import write_shard


def cfg_for(shards, **kw) -> DataConfig:
    base = dict(shards=str(shards), num_frames=4, frame_stride=1, size=16, batch_size=2, num_workers=0,
                shuffle_buffer=0, epochs=1, random_crop=False, random_start=False, decode_timeout_s=20)
    base.update(kw)
    return DataConfig(**base)


def keys_of(loader) -> list[str]:
    return [k for b in loader for k in b["key"]]


def random_clip(seed: int, t: int = 6, h: int = 32, w: int = 32) -> bytes:
    rng = np.random.default_rng(seed)
    return codec_mod.encode_mp4(rng.integers(0, 256, (t, h, w, 3), dtype=np.uint8), 8)


# -- 1. no code from a shard spec ---------------------------------------------------------------

def test_pipe_spec_runs_nothing_without_opt_in(shard_of, tmp_path, caplog):
    shard = shard_of("00000.tar", [(f"k{i}", {"mp4": clip_bytes(t=5), "txt": "x"}) for i in range(2)])
    marker = tmp_path / "MARKER"
    spec = f"pipe:touch {marker}; cat {shard}"
    for bad in (spec, "https://example.com/shards-{000..003}.tar", "gs:bucket/00000.tar", f"{shard}::{spec}"):
        with pytest.raises(ValueError, match=r"data\.allow_pipe=true"):
            make_loader(cfg_for(bad))
    assert not marker.exists()

    caplog.set_level(logging.WARNING, logger="dit_video.data")
    loader = make_loader(cfg_for(spec, allow_pipe=True))
    assert keys_of(loader) == ["k0", "k1"] and marker.exists()
    warned = [r.getMessage() for r in caplog.records if "allow_pipe" in r.getMessage()]
    assert len(warned) == 1 and f"touch {marker}; cat {shard}" in warned[0]


TINY = ["model.sample_size=[16,16]", "model.num_frames=4", "model.hidden_size=32", "model.depth=2",
        "model.num_heads=2", "model.caption_channels=16", "condition.tiny_dim=16", "data.size=16",
        "data.num_frames=4", "data.batch_size=2", "data.num_workers=0", "data.shuffle_buffer=0",
        "train.log_every=1", "train.progress=false", "train.threads=1", "optim.warmup_steps=2", "sample.steps=2",
        "train.steps=1", "sample.prompts=[]",
        "diffusion.cond_frames=2", "diffusion.cond_prob=0.25"]


def test_pipe_spec_through_cli_train(tmp_path, capsys):
    from dit_video.cli import main
    from dit_video.data import write_synthetic_shards

    demo = os.path.join(os.path.dirname(__file__), "..", "..", "configs", "train", "demo.yaml")
    (shard,) = write_synthetic_shards(str(tmp_path / "shards"), 4, size=16, num_frames=4, samples_per_shard=4)
    marker = tmp_path / "MARKER"
    spec = f"data.shards=pipe:touch {marker}; cat {shard}"
    rc = main(["train", demo, *TINY, spec, f"train.out_dir={tmp_path / 'refused'}"])
    assert rc == 2 and not marker.exists()
    err = capsys.readouterr().err
    assert "data.allow_pipe=true" in err and len(err.strip().splitlines()) == 1

    rc = main(["train", demo, *TINY, spec, "data.allow_pipe=true", f"train.out_dir={tmp_path / 'allowed'}"])
    assert rc == 0 and marker.exists()


# -- 2. no hangs, no memory blow-ups ---------------------------------------------------------------

def test_fifo_and_stalled_pipe_never_hang(shard_of, tmp_path):
    good = shard_of("00001.tar", [("g0", {"mp4": clip_bytes(t=5), "txt": "x"})])
    d = tmp_path / "shards"
    silent, stalled = d / "00000.tar", d / "00002.tar"
    os.mkfifo(silent)  # nobody ever writes: reads end at once (EOF), an empty tar
    os.mkfifo(stalled)  # a writer that sends half a header and then stalls

    def stall() -> None:
        with open(stalled, "wb", buffering=0) as f:
            f.write(b"\0" * 100)
            time.sleep(8)

    writer = threading.Thread(target=stall, daemon=True)
    writer.start()
    start = time.monotonic()
    loader = make_loader(cfg_for(d, read_timeout_s=1.0))
    assert keys_of(loader) == ["g0"]
    assert loader.stats() == {"samples": 1, "skipped/tar_error": 1, "skipped/shard_timeout": 1}
    assert time.monotonic() - start < 6

    # a command that stalls (behind the opt-in): abandoned after the limit, the process killed
    start = time.monotonic()
    loader = make_loader(cfg_for(f"pipe:sleep 30::{good}", allow_pipe=True, read_timeout_s=1.0))
    assert keys_of(loader) == ["g0"]
    assert loader.stats() == {"samples": 1, "skipped/shard_timeout": 1}
    assert time.monotonic() - start < 6


def _member(name: str, data: bytes) -> bytes:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info.tobuf(format=tarfile.GNU_FORMAT) + data + b"\0" * (-len(data) % 512)


def _in_child(fn) -> tuple[object, float]:
    """Run ``fn`` in a forked child: ``(its result, its peak RSS growth in MB over the RSS it started with)``."""
    import pickle

    with open("/proc/self/statm") as f:
        start_mb = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.write(w, pickle.dumps(fn()))
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        data = f.read()
    _, _, usage = os.wait4(pid, 0)
    return pickle.loads(data), usage.ru_maxrss / 1024 - start_mb


@pytest.mark.parametrize("sparse", [True, False])
def test_huge_member_is_skipped_unread(tmp_path, sparse):
    """A tar declaring a 16 GiB member: a sparse file that really has the 16 GiB (of holes) and a sample after
    it, or a 4 KB file cut right after the header. The member is skipped and counted, never read."""
    d = tmp_path / "shards"
    d.mkdir()
    clip = clip_bytes(t=5)
    big = tarfile.TarInfo("big.mp4")
    big.size = 16 << 30
    with open(d / "00000.tar", "wb") as f:
        f.write(_member("a.mp4", clip) + _member("a.txt", b"before"))
        f.write(big.tobuf(format=tarfile.GNU_FORMAT) + b"\0" * 512)
        if sparse:
            f.seek(f.tell() - 512 + (16 << 30))  # the member's data: a hole
            f.write(_member("b.mp4", clip) + _member("b.txt", b"after") + b"\0" * 1024)
    assert os.stat(d / "00000.tar").st_blocks * 512 < (1 << 20)  # the file holds under 1 MB on disk
    def read() -> tuple:
        loader = make_loader(cfg_for(d))
        return keys_of(loader), loader.stats()

    start = time.monotonic()
    (keys, stats), grew_mb = _in_child(read)
    assert time.monotonic() - start < 20
    assert grew_mb < 100, f"reading the shard grew the process by {grew_mb:.0f} MB"
    if sparse:
        assert keys == ["a", "b"] and stats == {"samples": 2, "skipped/member_too_large": 1}
    else:
        assert keys == ["a"] and stats == {"samples": 1, "skipped/member_too_large": 1, "skipped/tar_error": 1}


def test_member_cap_is_configurable_and_pax_bombs_are_refused(shard_of, tmp_path):
    clip = clip_bytes(t=5)
    shard_of("00000.tar", [("small", {"mp4": clip, "txt": "x"}), ("large", {"mp4": clip + b"\0" * 4096, "txt": "y"})])
    loader = make_loader(cfg_for(tmp_path / "shards", max_member_bytes=len(clip) + 100))
    assert keys_of(loader) == ["small"] and loader.stats() == {"samples": 1, "skipped/member_too_large": 1}

    # a pax header claiming 64 MiB of extended attributes (tarfile would read them all into memory)
    d = tmp_path / "pax"
    d.mkdir()
    with open(d / "00000.tar", "wb") as f:
        f.write(_member("a.mp4", clip) + _member("a.txt", b"x"))
        pax = tarfile.TarInfo("././@PaxHeader")
        pax.type, pax.size = tarfile.XHDTYPE, 64 << 20
        f.write(pax.tobuf(format=tarfile.USTAR_FORMAT))
        f.truncate(f.tell() + (64 << 20) + 4096)
    loader = make_loader(cfg_for(d, max_member_bytes=1 << 20))
    assert keys_of(loader) == [] and loader.stats() == {"skipped/tar_error": 1}


# -- 3. bad media: exactly the injected number skipped, by reason -----------------------------------

INJECT = {"zero_byte": 2, "truncated": 3, "no_moov": 2, "bit_flipped": 3, "duplicate_key": 2, "dotdot_name": 2}


def _bad_shards(d) -> tuple[list[str], int]:
    """Four shards with the injections of INJECT spread over them, plus one cut tar tail; returns the good keys
    and the number of cut tars."""
    d.mkdir()
    good, n = [], 0
    shards: list[list[tuple]] = [[] for _ in range(4)]

    def add(key, members, ok):
        nonlocal n
        shards[n % 4].append((key, members))
        n += 1
        if ok:
            good.append(key)

    for i in range(12):
        add(f"good{i}", {"mp4": random_clip(i), "txt": f"good {i}"}, True)
    for i in range(INJECT["zero_byte"]):
        add(f"zero{i}", {"mp4": b"", "txt": "zero"}, False)
    for i in range(INJECT["truncated"]):
        c = random_clip(100 + i)
        add(f"trunc{i}", {"mp4": c[: len(c) * (i + 1) // 5], "txt": "cut"}, False)
    for i in range(INJECT["no_moov"]):
        add(f"nomoov{i}", {"mp4": no_moov_mp4(random_clip(200 + i)), "txt": "no index"}, False)
    for i in range(INJECT["bit_flipped"]):
        add(f"flip{i}", {"mp4": bit_flipped_mp4(random_clip(300 + i), seed=i), "txt": "flipped"}, False)
    shards[3].append(("cutme", {"mp4": random_clip(500), "txt": "cut off"}))  # the sample the cut tail takes
    for i, s in enumerate(shards):
        write_shard(str(d / f"{i:05d}.tar"), s)
    # duplicate keys: shard 0's first key again later in the shard, and shard 1's last sample twice in a row
    with tarfile.open(d / "00000.tar", "a") as tar:
        for ext, data in (("mp4", random_clip(400)), ("txt", b"again")):
            info = tarfile.TarInfo(f"{shards[0][0][0]}.{ext}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    with tarfile.open(d / "00001.tar", "a") as tar:
        for ext, data in (("mp4", random_clip(401)), ("txt", b"twice")):
            info = tarfile.TarInfo(f"{shards[1][-1][0]}.{ext}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    # members named ../x (no extension) and ../evil.mp4 in shard 2
    with tarfile.open(d / "00002.tar", "a") as tar:
        for name in ("../x", "../evil.mp4"):
            info = tarfile.TarInfo(name)
            info.size = 4
            tar.addfile(info, io.BytesIO(b"evil"))
    # a cut tail: shard 3 loses its end inside its last sample's video; that sample is lost with it
    data = (d / "00003.tar").read_bytes()
    at = data.index(b"cutme.mp4")
    (d / "00003.tar").write_bytes(data[: at + 512 + 200])
    return good, 1


def test_bad_media_counted_exactly_by_reason(tmp_path):
    d = tmp_path / "shards"
    good, cut = _bad_shards(d)
    per_epoch = {"skipped/empty_file": INJECT["zero_byte"],
                 "skipped/decode_error": INJECT["truncated"] + INJECT["no_moov"],
                 "skipped/corrupt_frames": INJECT["bit_flipped"], "skipped/duplicate_key": INJECT["duplicate_key"],
                 "skipped/bad_member_name": INJECT["dotdot_name"], "skipped/tar_error": cut,
                 "samples": len(good)}
    loader = make_loader(cfg_for(d, num_workers=2, epochs=2, batch_size=3, shuffle_buffer=4, seed=5))
    keys = keys_of(loader)  # two epochs through two workers: no worker died, the stream went on
    assert sorted(keys) == sorted(good * 2)
    assert loader.stats() == {k: 2 * v for k, v in sorted(per_epoch.items())}


# -- 4. make-shards --overwrite removes only its own files, after the new ones exist -----------------

def test_make_shards_overwrite_keeps_other_files(tmp_path, monkeypatch):
    src = tmp_path / "videos"
    src.mkdir()
    for i in range(3):
        (src / f"v{i}.mp4").write_bytes(clip_bytes(t=5))
    out = tmp_path / "out"
    first = make_shards(str(src), str(out), samples_per_shard=1, progress=False)
    assert len(first) == 3
    (out / "mine.tar").write_bytes(b"the user's own archive")
    (out / "notes_stats.json").write_text("{}")
    with pytest.raises(FileExistsError, match="not empty"):
        make_shards(str(src), str(out), samples_per_shard=1, progress=False)

    # a run that dies half-way leaves the old shards as they were
    from dit_video.data import builder

    real, calls = builder.write_shard, []

    def dies_on_second(path, samples):
        calls.append(path)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(path, samples)

    monkeypatch.setattr(builder, "write_shard", dies_on_second)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(KeyboardInterrupt):
        make_shards(str(src), str(out), samples_per_shard=1, overwrite=True, progress=False)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    monkeypatch.setattr(builder, "write_shard", real)

    second = make_shards(str(src), str(out), samples_per_shard=2, overwrite=True, progress=False)
    names = sorted(p.name for p in out.iterdir())
    assert names == ["00000.tar", "00000_stats.json", "00001.tar", "00001_stats.json", "mine.tar",
                     "notes_stats.json"]
    assert (out / "mine.tar").read_bytes() == b"the user's own archive" and len(second) == 2

    # a file of someone else's with a shard's name is never overwritten
    (out / "00005.tar").write_bytes(b"not ours")
    with pytest.raises(FileExistsError, match="not written by dit-video"):
        make_shards(str(src), str(out), samples_per_shard=1, overwrite=True, progress=False)
    assert (out / "00005.tar").read_bytes() == b"not ours"
