"""Regression: with the framework's defaults, a small text model learns the caption's motion where it is decided.

At pure noise (flow u = 1) the sampler has not yet placed the object; the model's x0 prediction there is its
estimate of ``E[x0 | caption]``, the data's mean clip, and for a moving object that mean moves. A model that
does not carry the motion there leaves the direction to the initial noise: samples move the captioned way by
chance. Two defaults decide it (measured, see README "The demo"): the training density of u
(``DiffusionConfig.logit_mean``, leaning to noise) and the frame index reaching every block
(``VideoDiTConfig.temporal_position="input"``). This test trains the defaults for a short fixed budget on
"a red square moving left / right" and asserts that the prediction at u = 1 moves each caption's way by at
least half the data's mean shift; the last test shows the assertion fails for the old layout (the frame
index added before the first temporal block only).
"""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from dit_video.config import VideoDiTConfig
from dit_video.data.synthetic import caption_mean_shifts, colour_shift, make_clip
from dit_video.diffusion import build_diffusion
from dit_video.diffusion.config import DiffusionConfig
from dit_video.models import VideoDiT
from dit_video.pipeline.conditioner import ConditionedDiT, Conditioner
from dit_video.pipeline.config import ConditionConfig

SPEC = dict(colors=["red"], shapes=["square"], directions=["left", "right"], speeds=["quickly"],
            backgrounds=["plain"], max_objects=1, occlusion_prob=0.0, bounce=False, radius=(0.2, 0.25),
            background_colors=[(10, 10, 12)])
CAPTIONS = ["a red square moving left", "a red square moving right"]
SIZE, FRAMES, STEPS = 16, 4, 1500


def _train(**model_kw) -> dict[str, float]:
    """Train for STEPS steps with the defaults (but ``model_kw``); the x0-prediction shift at u = 1 per caption."""
    torch.manual_seed(0)
    clips, caps = [], []
    for i in range(256):
        f, c, _ = make_clip(random.Random(f"motion:{i}"), size=SIZE, num_frames=FRAMES, **SPEC)
        clips.append(f)
        caps.append(c)
    x = torch.from_numpy(np.stack(clips)).permute(0, 4, 1, 2, 3).float() / 127.5 - 1.0
    mcfg = VideoDiTConfig(in_channels=3, num_frames=FRAMES, sample_size=[SIZE, SIZE], patch_size=[1, 4, 4],
                          hidden_size=64, depth=4, num_heads=4, conditioning="text", caption_channels=32, **model_kw)
    conditioner = Conditioner(mcfg, ConditionConfig(text_encoder="tiny", tiny_dim=32, tiny_layers=0, max_length=8))
    model = ConditionedDiT(VideoDiT(mcfg), conditioner.new_learned_encoder()).train()
    diffusion = build_diffusion(DiffusionConfig())  # the defaults under test
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(0)
    for _ in range(STEPS):
        idx = torch.randint(0, len(x), (16,), generator=gen)
        kw = conditioner.training_kwargs([caps[i] for i in idx], None)
        loss, _ = diffusion.training_loss(lambda xt, t, cond_mask=None, kw=kw: model(xt, t, cond_mask=cond_mask, **kw),
                                          x[idx], generator=gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    model.eval()
    out = {}
    with torch.no_grad():
        for cap in CAPTIONS:
            cond, _ = conditioner.sampling_kwargs(model, [cap], None)
            x0 = diffusion.x0_at_pure_noise(lambda xt, t, kw=cond: model(xt, t, **kw), (1, 3, FRAMES, SIZE, SIZE), 8,
                                            torch.Generator().manual_seed(1))
            out[cap] = colour_shift(((x0[0].clamp(-1, 1) + 1) * 127.5).permute(1, 2, 3, 0).numpy(), cap)
    return out


def _data_shifts() -> dict[str, float]:
    return caption_mean_shifts(256, size=SIZE, num_frames=FRAMES, **SPEC)


@pytest.mark.slow
def test_defaults_carry_the_captions_motion_at_pure_noise():
    want, got = _data_shifts(), _train()
    for cap in CAPTIONS:
        assert want[cap] > 3.0, want  # the data's mean moves (a check of the data, not the model)
        assert got[cap] >= 0.5 * want[cap], f"{cap!r}: x0 prediction at u = 1 moves {got[cap]:+.2f} px, data {want[cap]:+.2f}"


@pytest.mark.slow
def test_the_check_fails_without_the_frame_index_at_the_input():
    want, got = _data_shifts(), _train(temporal_position="first_temporal")
    assert any(got[c] < 0.5 * want[c] for c in CAPTIONS), (got, want)
