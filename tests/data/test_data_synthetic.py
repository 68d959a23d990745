"""Synthetic clips show what their captions say; the CLI commands and their errors."""

from __future__ import annotations

import json
import os
import re

import numpy as np
import pytest

from dit_video.cli import main
from dit_video.data import DataConfig, make_loader, write_synthetic_shards
from dit_video.data.synthetic import COLORS, check_clip, make_clip

EASY = dict(colors=["red", "green", "blue"], shapes=["square"], directions=["left", "right", "up", "down"],
            backgrounds=["plain"], max_objects=1, occlusion_prob=0.0, bounce=False)


def test_easy_clips_show_the_captioned_colour_moving_the_captioned_way(tmp_path):
    paths = write_synthetic_shards(str(tmp_path / "syn"), 24, size=32, num_frames=8, samples_per_shard=10, **EASY)
    assert [os.path.basename(p) for p in paths] == ["00000.tar", "00001.tar", "00002.tar"]
    cfg = DataConfig(shards=str(tmp_path / "syn"), num_frames=8, size=32, batch_size=8, num_workers=0,
                     shuffle_buffer=0, epochs=1, random_crop=False, random_start=False, output_dtype="float32")
    n = 0
    for batch in make_loader(cfg):
        video = ((batch["video"].permute(0, 2, 3, 4, 1) + 1) * 127.5).numpy()  # [B, T, H, W, 3]
        for clip, caption in zip(video, batch["caption"]):
            m = re.fullmatch(r"an? (\w+) square moving (\w+)", caption)
            assert m, caption
            color, direction = m.groups()
            dist = {c: np.linalg.norm(clip - np.array(rgb), axis=-1) for c, rgb in COLORS.items()}
            mask = dist[color] < 60
            others = sum(int((dist[c] < 60).sum()) for c in ("red", "green", "blue") if c != color)
            assert mask[0].sum() >= 9 and others < mask.sum() / 20, caption
            ys, xs = np.nonzero(mask[0])
            ye, xe = np.nonzero(mask[5])
            dy, dx = ye.mean() - ys.mean(), xe.mean() - xs.mean()
            expect = {"right": (0, 1), "left": (0, -1), "down": (1, 0), "up": (-1, 0)}[direction]
            moved = dy * expect[0] + dx * expect[1]
            assert moved > 3 and abs(dy * expect[1]) + abs(dx * expect[0]) < 1, (caption, dy, dx)
            n += 1
    assert n == 24


def test_default_mix_is_deterministic_and_varied(tmp_path):
    a = write_synthetic_shards(str(tmp_path / "a"), 40, samples_per_shard=40, seed=5)
    b = write_synthetic_shards(str(tmp_path / "b"), 40, samples_per_shard=40, seed=5)
    assert open(a[0], "rb").read() == open(b[0], "rb").read()
    import tarfile

    with tarfile.open(a[0]) as tar:
        metas = [json.load(tar.extractfile(m)) for m in tar.getmembers() if m.name.endswith(".json")]
    assert len({m["background"] for m in metas}) == 2
    assert any(m["occluded"] for m in metas) and any(len(m["objects"]) == 2 for m in metas)
    assert len({o["shape"] for m in metas for o in m["objects"]}) == 3
    assert all(m["caption"].startswith(("a ", "an ")) for m in metas)


def test_bad_names_and_sizes_are_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown color"):
        write_synthetic_shards(str(tmp_path / "x"), 2, colors=["mauve"])
    with pytest.raises(ValueError, match="even"):
        write_synthetic_shards(str(tmp_path / "x"), 2, size=31)
    with pytest.raises(ValueError, match="radius"):
        write_synthetic_shards(str(tmp_path / "x"), 2, radius=(0.3, 0.2))


def test_radius_sets_the_shape_size():
    import random

    for lo, hi in ((0.1, 0.12), (0.24, 0.26)):
        frames, caption, _ = make_clip(random.Random(1), size=32, num_frames=2, **EASY, radius=(lo, hi))
        color = caption.split()[1]
        side = np.sqrt((np.linalg.norm(frames[0] - np.array(COLORS[color]), axis=-1) < 60).sum())
        assert 2 * lo * 32 - 1 <= side <= 2 * hi * 32 + 2, (lo, hi, side)


def test_check_clip_accepts_real_clips_and_rejects_wrong_captions_and_noise():
    import random

    for i in range(20):
        frames, caption, _ = make_clip(random.Random(i), size=24, num_frames=8, **EASY)
        got = check_clip(frames, caption)
        assert got["present"] and got["one_shape"] and got["moves"], (caption, got)
        flipped = {"left": "right", "right": "left", "up": "down", "down": "up"}[got["direction"]]
        assert not check_clip(frames, caption.replace(got["direction"], flipped))["moves"]
        other = next(c for c in ("red", "green", "blue") if c != got["color"])
        assert not check_clip(frames, caption.replace(got["color"], other))["present"]
    two = np.zeros((8, 24, 24, 3), np.uint8)
    two[:, 2:6, 2:6] = two[:, 16:20, 16:20] = COLORS["red"]  # two pieces: not one shape
    assert check_clip(two, "a red square")["present"] and not check_clip(two, "a red square")["one_shape"]
    noise = np.random.default_rng(0).integers(0, 256, (8, 24, 24, 3)).astype(np.uint8)
    assert not check_clip(noise, "a red square moving left")["one_shape"]
    with pytest.raises(ValueError, match="colour"):
        check_clip(noise, "a mauve square")


def test_cli_make_synthetic_and_make_shards(tmp_path, capsys):
    out = tmp_path / "syn"
    assert main(["make-synthetic", "--out", str(out), "--num", "5", "--easy", "--samples-per-shard", "2"]) == 0
    assert sorted(os.listdir(out))[:2] == ["00000.tar", "00000_stats.json"]
    assert main(["make-synthetic", "--out", str(out), "--num", "5"]) == 2  # not empty, no --overwrite
    assert "--overwrite" in capsys.readouterr().err
    assert main(["make-synthetic", "--out", str(tmp_path / "r"), "--num", "2", "--radius", "0.3", "0.2"]) == 2
    assert "radius must be a range" in capsys.readouterr().err
    assert main(["make-synthetic", "--out", str(tmp_path / "two"), "--num", "3", "--apart", "--max-objects", "2",
                 "--size", "32", "--radius", "0.12", "0.14"]) == 0

    src = tmp_path / "videos"
    src.mkdir()
    assert main(["make-shards", str(src), "--out", str(tmp_path / "s")]) == 2
    assert "no video files" in capsys.readouterr().err
    assert main(["make-shards", str(tmp_path / "missing"), "--out", str(tmp_path / "s")]) == 2
    assert "does not exist" in capsys.readouterr().err

    from data_media import clip_bytes

    (src / "a.mp4").write_bytes(clip_bytes(t=12, h=32, w=48, fps=12))
    (src / "b.mkv").write_bytes(b"not a video at all")
    (tmp_path / "caps.csv").write_text("file,caption\nnothing.mp4,x\n")
    assert main(["make-shards", str(src), "--out", str(tmp_path / "s"), "--captions", str(tmp_path / "caps.csv")]) == 2
    assert "matches a video" in capsys.readouterr().err
    args = ["make-shards", str(src), "--out", str(tmp_path / "s"), "--clip-frames", "3", "--fps", "6", "--size", "16"]
    assert main(args) == 0
    stats = json.loads((tmp_path / "s" / "00000_stats.json").read_text())
    assert stats["count"] == 3 and stats["successes"] == 2 and stats["failures"] == {"decode_error": 1}
    import tarfile

    with tarfile.open(tmp_path / "s" / "00000.tar") as tar:
        names = tar.getnames()
        meta = json.load(tar.extractfile("000000000.json"))
    # 12 frames at 12 fps -> 6 at 6 fps -> two 3-frame clips; the broken file is a json-only failed sample
    assert names == ["000000000.mp4", "000000000.json", "000000001.mp4", "000000001.json", "000000002.json"]
    assert (meta["frames"], meta["fps"], meta["height"], meta["width"]) == (3, 6.0, 16, 24)


def test_captions_files(tmp_path):
    from dit_video.data.builder import read_captions

    (tmp_path / "a.csv").write_text("clip1.mp4,a cat, running\nclip2.mp4,\"a dog, sitting\"\n")
    assert read_captions(str(tmp_path / "a.csv")) == {"clip1.mp4": "a cat", "clip2.mp4": "a dog, sitting"}
    (tmp_path / "b.jsonl").write_text('{"video": "x.mkv", "text": "snow"}\n\n')
    assert read_captions(str(tmp_path / "b.jsonl")) == {"x.mkv": "snow"}
    (tmp_path / "c.txt").write_text("x")
    with pytest.raises(ValueError, match="use .csv"):
        read_captions(str(tmp_path / "c.txt"))
    with pytest.raises(FileNotFoundError):
        read_captions(str(tmp_path / "missing.csv"))


DEMO_LIKE = dict(colors=["red", "green", "blue", "yellow"], shapes=["square", "circle"],
                 directions=["left", "right", "up", "down"], speeds=["slowly"], backgrounds=["plain"], max_objects=1,
                 occlusion_prob=0.0, bounce=False, radius=(0.16, 0.19), background_colors=[(10, 10, 12)])


def test_without_bounce_shapes_stay_whole_to_the_last_frame_and_the_check_knows_the_shape():
    import random

    for i in range(40):
        frames, caption, meta = make_clip(random.Random(i), size=32, num_frames=16, **DEMO_LIKE)
        color = np.array(COLORS[meta["objects"][0]["color"]], np.float32)
        mask = np.linalg.norm(frames.astype(np.float32) - color, axis=-1) < 60
        sides = np.array([[np.ptp(np.nonzero(m)[k]) + 1 for k in (0, 1)] for m in mask])  # bounding box [T, 2]
        assert sides.min() >= sides.max() - 1 and sides.min() >= 10, (caption, sides)  # never cut by an edge
        got = check_clip(frames, caption, background=(10, 10, 12), min_shift=8.0)
        assert got["ok"] and got["shape_ok"] and got["background_ok"], (caption, got)
        other = "circle" if got["shape"] == "square" else "square"
        assert check_clip(frames, caption.replace(got["shape"], other))["shape_ok"] is False
        assert check_clip(frames, caption.replace(got["shape"], other))["ok"] is False
        assert check_clip(frames, "a " + got["color"] + " thing moving " + got["direction"])["shape_ok"] is None


def test_check_clip_background_rejects_a_tint_and_stray_blobs():
    import random

    frames, caption, _ = make_clip(random.Random(0), size=32, num_frames=16, **DEMO_LIKE)
    assert check_clip(frames, caption, background=(10, 10, 12))["background_ok"]
    assert check_clip(frames, caption)["background_ok"] is None  # not asked
    tinted = frames.copy()
    far = np.linalg.norm(frames.astype(np.float32) - np.array([10, 10, 12]), axis=-1) < 5
    tinted[far] = (40, 15, 60)  # a dark purple background
    got = check_clip(tinted, caption, background=(10, 10, 12))
    assert not got["background_ok"] and not got["ok"] and got["background_dist"] > 30
    stray = frames.copy()
    stray[9:, :6, :6] = (120, 120, 120)  # a grey blob appears in the corner
    assert not check_clip(stray, caption, background=(10, 10, 12))["background_ok"]


def _two_objects(size: int = 40, frames: int = 8) -> np.ndarray:
    """A red square moving left along the top and a blue circle moving up on the right, on (10, 10, 12)."""
    from dit_video.data.synthetic import _mask

    yy, xx = np.mgrid[:size, :size].astype(np.float32)
    t = np.arange(frames, dtype=np.float32)
    video = np.broadcast_to(np.array([10, 10, 12], np.uint8), (frames, size, size, 3)).copy()
    video[_mask("square", yy, xx, np.full(frames, 7.0), 26 - 2 * t, 5)] = COLORS["red"]
    video[_mask("circle", yy, xx, 33 - 2 * t, np.full(frames, 32.0), 5)] = COLORS["blue"]
    return video


def test_check_clip_checks_every_object_of_a_two_object_caption():
    from dit_video.data.synthetic import object_phrases

    video, bg = _two_objects(), (10, 10, 12)
    both = "a red square moving left and a blue circle moving up"
    assert object_phrases(both) == ["a red square moving left", "a blue circle moving up"]
    assert object_phrases("a red square moving left and bouncing back") == ["a red square moving left and "
                                                                            "bouncing back"]
    got = check_clip(video, both, background=bg, min_shift=8)
    assert got["ok"] and got["background_ok"] and [o["color"] for o in got["objects"]] == ["red", "blue"]
    # each object's own check: the background of one is not the other object
    assert not check_clip(video, "a red square moving left", background=bg, min_shift=8)["background_ok"]
    for wrong, key in (("a red square moving left and a blue circle moving down", "moves"),
                       ("a red circle moving left and a blue circle moving up", "shape_ok"),
                       ("a red square moving left and a green circle moving up", "present")):
        bad = check_clip(video, wrong, background=bg, min_shift=8)
        assert bad[key] is False and not bad["ok"], wrong
    stray = video.copy()
    stray[:, 30:, :6] = (120, 120, 120)  # a grey blob no caption names
    assert not check_clip(stray, both, background=bg, min_shift=8)["background_ok"]
    with pytest.raises(ValueError, match="different colours"):
        check_clip(video, "a red square moving left and a red circle moving up")


def test_two_object_captions_are_distinct_pairs_of_colours_that_make_clip_could_write():
    from dit_video.data.synthetic import object_phrases, two_object_captions

    caps = two_object_captions(32)
    assert len(set(caps)) == 32 and caps == two_object_captions(32) and caps != two_object_captions(32, seed=1)
    for c in caps:
        a, b = object_phrases(c)
        assert re.fullmatch(r"an? (\w+) (square|circle) moving (left|right|up|down)", a)
        assert a.split()[1] != b.split()[1]  # two colours
    with pytest.raises(ValueError, match="two colours"):
        two_object_captions(2, spec={"colors": ["red"]})


def test_apart_keeps_two_objects_whole_so_each_clip_passes_its_own_check():
    import random

    from dit_video.data.synthetic import DEMO_BACKGROUND, DEMO_CLIPS

    kw = {**DEMO_CLIPS, "max_objects": 2, "radius": (0.12, 0.14)}

    def two_object_checks(apart: bool) -> list[bool]:
        out = []
        for i in range(60):
            frames, caption, meta = make_clip(random.Random(i), size=32, num_frames=8, apart=apart, **kw)
            if len(meta["objects"]) == 2:
                out.append(check_clip(frames, caption, background=DEMO_BACKGROUND, min_shift=8)["ok"])
        return out

    kept, crossed = two_object_checks(True), two_object_checks(False)
    assert len(kept) >= 20 and all(kept)
    assert not all(crossed)  # without it, objects meet: one hides part of the other
    crowded = {**kw, "radius": (0.45, 0.49), "colors": ["red", "blue"]}  # two shapes that fill the frame
    for i in range(20):
        try:
            assert len(make_clip(random.Random(i), size=16, num_frames=8, apart=True, **crowded)[2]["objects"]) == 1
        except ValueError as e:
            assert "apart: found no path for object 2 of 2" in str(e)
            break
    else:
        pytest.fail("no clip drew two objects")


def test_corner_test_tells_squares_circles_and_triangles_apart():
    from dit_video.data.synthetic import _mask, nearest_shape

    yy, xx = np.mgrid[:32, :32].astype(np.float32)
    rng = np.random.default_rng(0)
    for _ in range(200):
        r = 32 * rng.uniform(0.16, 0.25)
        cy, cx = rng.uniform(r, 31 - r, size=(2, 1))
        for shape in ("square", "circle", "triangle"):
            assert nearest_shape(_mask(shape, yy, xx, cy, cx, r)[0]) == shape, (shape, r)


def test_background_colors_are_used_and_checked():
    import random

    kw = {**DEMO_LIKE, "background_colors": [(0, 50, 0)]}
    frames, _, _ = make_clip(random.Random(0), size=16, num_frames=2, **kw)
    assert tuple(frames[0, 0, 0]) == (0, 50, 0) or tuple(frames[0, -1, -1]) == (0, 50, 0)
    with pytest.raises(ValueError, match="background_colors"):
        make_clip(random.Random(0), background_colors=[(0, 300, 0)])


def test_full_resolution_colour_keeps_the_demo_clips_checkable_after_decoding(tmp_path):
    import random

    from dit_video.data.codec import ClipPlan, decode_clip, encode_mp4
    from dit_video.data.synthetic import DEMO_BACKGROUND, DEMO_CLIPS

    clips = [make_clip(random.Random(f"pix:{i}"), size=32, num_frames=8, **DEMO_CLIPS) for i in range(32)]
    passed, err = {}, {}
    for pix in ("yuv420p", "yuv444p"):
        got = [decode_clip(encode_mp4(f, pix_fmt=pix), ClipPlan(num_frames=8, u_start=0.0))[0] for f, _, _ in clips]
        passed[pix] = sum(check_clip(g, c, background=DEMO_BACKGROUND, min_shift=8)["ok"]
                          for g, (_, c, _) in zip(got, clips))
        err[pix] = float(np.mean([np.abs(g.astype(np.float32) - f).mean() for g, (f, _, _) in zip(got, clips)]))
    assert all(check_clip(f, c, background=DEMO_BACKGROUND, min_shift=8)["ok"] for f, c, _ in clips)
    assert passed["yuv444p"] == 32 and err["yuv444p"] < 1.5, (passed, err)  # h264 at crf 18: under 1.5 / 255
    assert err["yuv420p"] > 2 * err["yuv444p"], err  # half-resolution colour smears the hard edges
    with pytest.raises(ValueError, match="pix_fmt"):
        write_synthetic_shards(str(tmp_path / "x"), 4, pix_fmt="rgb24")
