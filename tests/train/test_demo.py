"""``dit-video demo`` end to end at a reduced size, then ``dit-video sample`` on its exported weights."""

from __future__ import annotations

import re

import av
import numpy as np
from PIL import Image

from dit_video.cli import main

SMALL = ["model.hidden_size=32", "model.depth=2", "model.num_heads=2", "data.batch_size=2", "data.num_workers=0",
         "sample.steps=2", "train.progress=false", "train.threads=1"]


def _frames(path) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


def test_demo_end_to_end_reduced(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--steps", "3", "--clips", "16", "--size", "16", "--frames", "4", "--out", str(out),
                 *SMALL, "diffusion.cond_frames=2", "diffusion.cond_prob=0.5",
                 "diffusion.cond_cfg_dropout=0.5"]) == 0
    assert "filmstrip.png" in capsys.readouterr().out
    from dit_video.data.synthetic import demo_captions

    captions = demo_captions()
    mp4s = sorted((out / "samples").glob("*.mp4"))
    assert len(mp4s) == len(captions) and all(p.with_suffix(".gif").is_file() for p in mp4s)
    assert mp4s[0].name == "00_" + captions[0].replace(" ", "_") + ".mp4"
    frames = _frames(mp4s[0])
    assert len(frames) == 4 and frames[0].shape == (128, 128, 3)  # 16x16 upscaled x8 for viewing
    strip = Image.open(out / "filmstrip.png")
    assert strip.height > 100 and strip.width > 100  # 8 rows (captions) x 4 columns (frames) plus labels
    assert Image.open(out / "loss.png").size[0] > 100
    summary = (out / "summary.txt").read_text()
    n = len(captions)
    assert "steps 3\n" in summary and "one_shape " in summary and "ok " in summary and f"/{n}\n" in summary
    assert "high_noise_probe " in summary
    for key in ("continuation_no_caption", "continuation_no_caption_all_checks",
                "continuation_contradicting_caption_continues",
                "continuation_contradicting_caption_turns"):  # video prediction of 16 held-out clips
        assert re.search(rf"^{key} \d+/16$", summary, re.M), key
    assert Image.open(out / "continuation.png").height > 100
    for key in ("longer_ok", "longer_one_shape", "longer_shape_ok", "longer_moves"):  # 8 frames, windows of 4
        assert re.search(rf"^{key} \d+/{n}$", summary, re.M), key
    assert re.search(r"^longer_frames 8 \(window starts at \[4, 6\]\)$", summary, re.M)
    assert re.search(r"^longer_seam_jump [\d.]+ \(max [\d.]+\)$", summary, re.M)
    assert Image.open(out / "longer.png").height > 100
    table = summary.split("\n\n", 1)[1].strip().splitlines()  # the per-caption table: a header + a row each
    assert len(table) == n + 1 and all(row.startswith(c + " |") for row, c in zip(table[1:], captions))

    # sample from the demo's weights: guidance, another sampler, continuation of a clip's first 2 frames
    import torch

    from dit_video.pipeline.video import write_video

    flat = torch.tensor([0.6, -0.2, -0.8])[:, None, None, None].expand(3, 4, 16, 16)  # an orange clip
    cond, _ = write_video(flat, tmp_path / "cond.mp4", fps=8)
    target = tmp_path / "s.mp4"
    assert main(["sample", str(out / "weights"), "--prompt", "a blue square moving left", "--steps", "2",
                 "--cfg", "2.0", "--sampler", "euler", "--seed", "3", "--cond-video", str(cond), "--cond-frames", "2",
                 "--scale", "1", "--out", str(target)]) == 0
    got = _frames(target)
    assert len(got) == 4 and target.with_suffix(".gif").is_file()
    orange = np.array([204.0, 102.0, 25.5])
    for f in got[:2]:  # the kept frames come back (up to two rounds of lossy mp4 coding)
        assert np.abs(f.astype(np.float32) - orange).mean() < 10.0
    assert np.abs(got[3].astype(np.float32) - orange).mean() > 20.0  # a generated frame (3 training steps: noise)
    # continuation without a caption: an empty caption is the null condition that condition dropout trained
    capsys.readouterr()
    assert main(["sample", str(out / "weights"), "--steps", "2", "--cond-video", str(cond), "--cond-frames", "2",
                 "--scale", "1", "--out", str(tmp_path / "u.mp4")]) == 0
    assert "without a caption" in capsys.readouterr().out and len(_frames(tmp_path / "u.mp4")) == 4
    from dit_video.pipeline.sampling import SamplingPipeline

    pipe = SamplingPipeline.from_pretrained(out / "weights")
    cond_kw, null_kw = pipe.conditioner.sampling_kwargs(pipe.model, ["", "a red square moving left"], None)
    assert not cond_kw["text_mask"][0].any() and cond_kw["text_mask"][1].any() and not null_kw["text_mask"].any()
    assert main(["sample", str(out / "weights"), "--prompt", "x", "--sampler", "nope", "--out",
                 str(tmp_path / "t.mp4")]) == 2
    assert "unknown sampler" in capsys.readouterr().err


def test_demo_refuses_clips_with_no_frame_left_to_generate(tmp_path, capsys):
    assert main(["demo", "--frames", "4", "--out", str(tmp_path / "d"), *SMALL, "diffusion.cond_frames=4",
                 "diffusion.cond_prob=0.25"]) == 2
    assert "leave none to generate" in capsys.readouterr().err and not (tmp_path / "d").exists()


def test_seam_jump_is_one_without_a_seam_and_grows_with_one():
    from dit_video.commands.demo import seam_jump

    t = np.arange(16, dtype=np.float32)
    ramp = np.broadcast_to((t * 4)[:, None, None, None], (16, 4, 4, 3)).copy()  # a steady change per frame
    assert seam_jump(ramp, [8, 12]) == 1.0
    jumped = ramp.copy()
    jumped[8:] += 20.0  # frame 8 changes by 4 + 20 = 24, 6x the usual
    assert seam_jump(jumped, [8]) == 6.0
    assert seam_jump(jumped, [8, 12]) == 3.5  # the mean over the boundaries: (6 + 1) / 2
