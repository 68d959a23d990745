"""``dit-video eval`` end to end on a few tiny videos: mp4 + gif folder, a webdataset shard, captions CSV, FVD, CLIP."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch
from eval_clips import smooth, square_clip, static, teleport
from PIL import Image
from test_i3d_clip import TinyI3D, make_tiny_clip

from dit_video.cli import main
from dit_video.data.codec import encode_mp4
from dit_video.data.synthetic import make_clip, write_synthetic_shards
from dit_video.eval import evaluate_clips, scalars


def _write(folder, name, frames, caption=None, gif_too=False):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.mp4").write_bytes(encode_mp4(frames, fps=8, crf=0))
    if gif_too:
        images = [Image.fromarray(f) for f in frames]
        images[0].save(folder / f"{name}.gif", save_all=True, append_images=images[1:], duration=125, loop=0)
    if caption:
        (folder / f"{name}.txt").write_text(caption)


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("videos")
    gen = root / "gen"
    _write(gen, "smooth", smooth()[:8], "a red square moving right", gif_too=True)  # gif beside mp4: read once
    _write(gen, "teleport", teleport()[4:12], "a red square moving right")
    # Pillow stores the 5 equal frames as one of 5 x 250 ms; the reader repeats it back (4 fps)
    frames = np.concatenate([static()[:5], square_clip([(32, 34), (32, 36), (32, 38)])])
    images = [Image.fromarray(f) for f in frames]
    images[0].save(gen / "starts.gif", save_all=True, append_images=images[1:], duration=250, loop=0)
    with Image.open(gen / "starts.gif") as im:
        assert im.n_frames == 4
    images[0].save(gen / "still.gif", save_all=True, append_images=images[1:5], duration=250, loop=0)  # 1 frame
    (gen / "broken.mp4").write_bytes(b"not a video")
    real = root / "real"
    write_synthetic_shards(str(real), 3, size=32, num_frames=8, seed=1, shapes=["square"], backgrounds=["plain"],
                           max_objects=1, occlusion_prob=0.0)
    return gen, real


def test_eval_folder_with_captions_csv(videos, tmp_path, capsys):
    gen, _ = videos
    csv = tmp_path / "captions.csv"
    csv.write_text("video,caption\nstarts.gif,a red square\n")
    out = tmp_path / "out"
    assert main(["eval", str(gen), "--captions", str(csv), "--out", str(out)]) == 0
    line = capsys.readouterr().out
    assert "[eval] 3 videos" in line and "persistent 0.67 of 3" in line and "undecodable" in line
    result = json.loads((out / "eval.json").read_text())
    rows = {r["name"]: r for r in result["videos"]}
    assert sorted(rows) == ["smooth.mp4", "starts.gif", "teleport.mp4"]
    assert result["skipped"] == {"gif_beside_mp4": 1, "undecodable": 1, "one_frame": 1}
    starts = rows["starts.gif"]
    assert starts["caption"] == "a red square" and starts["persistent"] is True and starts["frames"] == 8
    # 2 px/frame is over the threshold at 8 fps (6 * 64 / 256 = 1.5 px) but under it at the gif's 4 fps (3 px)
    assert starts["flicker_max"] > 0 and starts["dynamic_pairs"] == 0 and starts["dynamic"] is False
    assert rows["smooth.mp4"]["frames"] == 8 and rows["smooth.mp4"]["dynamic_pairs"] == 7
    assert rows["smooth.mp4"]["persistent"] is True and rows["smooth.mp4"]["dynamic"] is True
    assert rows["teleport.mp4"]["persistent"] is False and rows["teleport.mp4"]["persistence"]["smooth"] is False
    agg = result["aggregate"]
    assert agg["videos"] == 3 and agg["persistence"] == pytest.approx(2 / 3)
    assert agg["dynamic_degree"] == pytest.approx(2 / 3)
    md = (out / "eval.md").read_text()
    table = [line for line in md.splitlines() if line.startswith("| ")]
    assert len(table) == 5 and "**aggregate (3)**" in table[-1] and "lower better" in table[0]  # header, 3, aggregate


def test_eval_shards_with_fvd_and_clip(videos, tmp_path, capsys):
    gen, real = videos
    i3d = tmp_path / "i3d_torchscript.pt"
    torch.jit.script(TinyI3D()).save(str(i3d))
    clip = tmp_path / "clip"
    make_tiny_clip(clip)
    out = tmp_path / "out"
    assert main(["eval", str(real), "--real", str(gen), "--i3d", str(i3d), "--clip", str(clip), "--out", str(out),
                 "--device", "cpu"]) == 0
    assert "FVD" in capsys.readouterr().out
    result = json.loads((out / "eval.json").read_text())
    assert [r["name"] for r in result["videos"]] == [f"00000.tar/00000{i:04d}.mp4" for i in range(3)]
    assert all(r["caption"] and r["persistent"] for r in result["videos"])  # captions from the shard's .txt
    agg = result["aggregate"]
    assert agg["fvd"] > 0 and "kvd" in agg and agg["n_real"] == 3 and agg["n_clip_score"] == 3
    assert result["real"]["aggregate"]["videos"] == 3
    assert "FVD (lower better, 3 generated vs 3 real)" in (out / "eval.md").read_text()


@pytest.mark.parametrize("flag", ["VIDEOS", "--real", "--captions", "--i3d", "--clip"])
def test_missing_path_is_one_line_naming_the_flag(videos, tmp_path, capsys, flag):
    gen, _ = videos
    missing = str(tmp_path / "missing")
    args = ["eval", missing if flag == "VIDEOS" else str(gen), "--out", str(tmp_path / "o")]
    if flag != "VIDEOS":
        args += [flag, missing] + (["--real", str(gen)] if flag == "--i3d" else [])
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and flag in err and "missing" in err


def test_i3d_without_real_is_an_error(videos, tmp_path, capsys):
    gen, _ = videos
    assert main(["eval", str(gen), "--i3d", str(gen / "smooth.mp4"), "--out", str(tmp_path)]) == 2
    assert "--real" in capsys.readouterr().err


def test_scalars_for_logging():
    frames, caption, _ = make_clip(random.Random(0), size=32, num_frames=8, max_objects=1, occlusion_prob=0.0)
    s = scalars(evaluate_clips([frames, static()], [caption, None]))
    assert set(s) == {"eval/flicker", "eval/flicker_score", "eval/warp_error", "eval/motion", "eval/dynamic_degree",
                      "eval/persistence"}
    assert all(isinstance(v, float) for v in s.values()) and s["eval/persistence"] == 1.0
