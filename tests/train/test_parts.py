"""Trainer parts without DeepSpeed: lr schedule, EMA, RNG capture, checkpoint discovery, video writing."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from dit_video.train import checkpoint as ckpt
from dit_video.train.ema import EMA
from dit_video.train.rng import rng_state, set_rng_state
from dit_video.train.schedule import warmup_cosine


def test_warmup_then_cosine():
    f = [warmup_cosine(s, warmup=10, total=110, min_ratio=0.1) for s in range(120)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0)
    assert f[10] == pytest.approx(1.0) and f[60] == pytest.approx(0.55) and f[110] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(f[10:], f[11:]))  # monotone decay after warmup
    assert warmup_cosine(20, warmup=10, total=110, min_ratio=0.1, progress_floor=1.0) == pytest.approx(0.1)


def test_ema_is_fp32_and_follows_the_weights():
    m = torch.nn.Linear(3, 2).to(torch.bfloat16)
    ema = EMA(m, decay=0.9, warmup=False)
    assert all(p.dtype == torch.float32 for p in ema.shadow.parameters())
    start = ema.shadow.weight.clone()
    with torch.no_grad():
        m.weight.add_(1.0)
    ema.update(m, step=1)
    torch.testing.assert_close(ema.shadow.weight, 0.9 * start + 0.1 * m.weight.float())
    assert EMA(m, 0.999, warmup=True).current_decay(0) == pytest.approx(0.1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_ema_update_equals_a_per_tensor_lerp_bit_for_bit(dtype):
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.LayerNorm(7), torch.nn.Linear(7, 3)).to(dtype)
    ema = EMA(m, decay=0.99, warmup=True)
    ref = [p.detach().float().clone() for p in m.parameters()]
    for step in range(1, 4):
        with torch.no_grad():
            for p in m.parameters():
                p.add_(torch.randn_like(p))
        ema.update(m, step)
        for r, p in zip(ref, m.parameters()):
            r.lerp_(p.detach().float(), 1.0 - ema.current_decay(step))
    for r, s in zip(ref, ema.shadow.parameters()):
        assert torch.equal(r, s)


def test_rng_state_roundtrip_through_weights_only_load(tmp_path):
    g = torch.Generator().manual_seed(3)
    state = rng_state({"noise": g})
    torch.save(state, tmp_path / "s.pt")
    first = (random.random(), np.random.rand(), torch.rand(1).item(), torch.rand(1, generator=g).item())
    set_rng_state(torch.load(tmp_path / "s.pt", weights_only=True), {"noise": g})
    assert (random.random(), np.random.rand(), torch.rand(1).item(), torch.rand(1, generator=g).item()) == first
    with pytest.raises(ValueError, match="dropout"):
        set_rng_state(state, {"dropout": torch.Generator()})


def test_find_checkpoint_skips_incomplete_tags(tmp_path):
    d = tmp_path / "checkpoints"
    for step, complete in ((100, True), (200, True), (300, False)):
        (d / ckpt.tag_for(step)).mkdir(parents=True)
        if complete:
            (d / ckpt.tag_for(step) / ckpt.MARKER).write_text(f'{{"step": {step}, "files": {{}}}}')
    (d / "latest").write_text(ckpt.tag_for(300))  # DeepSpeed's tag file points at the incomplete save
    assert ckpt.find_checkpoint(tmp_path).name == "step_00000200"
    assert ckpt.find_checkpoint(d).name == "step_00000200"
    with pytest.raises(FileNotFoundError, match="incomplete"):
        ckpt.find_checkpoint(d / ckpt.tag_for(300))
    (d / ckpt.tag_for(100) / ckpt.MARKER).unlink()
    (d / ckpt.tag_for(200) / ckpt.MARKER).unlink()
    with pytest.raises(FileNotFoundError, match=r"no complete checkpoint.*step_00000300"):
        ckpt.find_checkpoint(tmp_path)


def test_write_video_mp4_and_gif(tmp_path):
    import av
    from PIL import Image

    from dit_video.pipeline.video import write_video

    v = torch.zeros(3, 5, 12, 12) - 1
    for t in range(5):
        v[0, t, 2:6, 2 + t:6 + t] = 1  # a red square moving right
    mp4, gif = write_video(v, tmp_path / "clip.mp4", fps=4, scale=2)
    with av.open(str(mp4)) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    assert len(frames) == 5 and frames[0].shape == (24, 24, 3)
    assert frames[0][6, 6, 0] > 200 and frames[0][6, 6, 1] < 60 and frames[0][20, 20].max() < 40
    assert Image.open(gif).n_frames == 5
