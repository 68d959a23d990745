"""CFG at scale 1 is the conditional prediction; continuation keeps given frames bit-exact; sliding window."""

from __future__ import annotations

import pytest
import torch

from dit_video.diffusion import DiffusionConfig, build_diffusion, cfg_combine

SHAPE = (2, 3, 6, 4, 4)


class Recorder:
    """A deterministic nonlinear ``model_fn`` that records what it was called with."""

    def __init__(self, bias: float = 0.0):
        self.calls: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]] = []
        self.bias = bias

    def __call__(self, x, t, cond_mask=None):
        self.calls.append((x.clone(), t.clone(), None if cond_mask is None else cond_mask.clone()))
        return torch.tanh(x * 0.7 + self.bias) + 1e-3 * t.reshape(-1, 1, 1, 1, 1)


def test_cfg_combine_formula():
    c, u = torch.randn(4, 5), torch.randn(4, 5)
    assert cfg_combine(c, u, 1.0) is c
    torch.testing.assert_close(cfg_combine(c, u, 4.0), u + 4.0 * (c - u))
    torch.testing.assert_close(cfg_combine(c, u, 0.0), u)


@pytest.mark.parametrize("objective,sampler", [("flow", "euler"), ("flow", "heun"), ("eps", "ddim"),
                                               ("v", "dpmpp_2m")])
def test_cfg_scale_one_is_the_conditional_prediction(objective, sampler):
    d = build_diffusion(DiffusionConfig(objective=objective))
    cond, uncond = Recorder(0.3), Recorder(-0.5)
    g = lambda: torch.Generator().manual_seed(0)
    plain = d.sample(cond, SHAPE, sampler=sampler, steps=4, generator=g())
    guided1 = d.sample(cond, SHAPE, sampler=sampler, steps=4, generator=g(), guidance_scale=1.0,
                       uncond_model_fn=uncond)
    assert torch.equal(plain, guided1)
    assert not uncond.calls  # scale 1 does not even run the unconditional model
    guided3 = d.sample(cond, SHAPE, sampler=sampler, steps=4, generator=g(), guidance_scale=3.0,
                       uncond_model_fn=uncond)
    assert uncond.calls and not torch.allclose(guided3, plain)


def test_cfg_equals_combined_model():
    """Guided sampling == sampling with a model that returns uncond + s (cond - uncond)."""
    d = build_diffusion(DiffusionConfig(objective="flow"))
    cond, uncond = Recorder(0.3), Recorder(-0.5)
    combined = lambda x, t, cond_mask=None: uncond(x, t) + 2.5 * (cond(x, t) - uncond(x, t))
    a = d.sample(cond, SHAPE, steps=3, generator=torch.Generator().manual_seed(1), guidance_scale=2.5,
                 uncond_model_fn=uncond)
    b = d.sample(combined, SHAPE, steps=3, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


@pytest.mark.parametrize("objective,sampler", [("flow", "heun"), ("eps", "ddim")])
def test_guidance_interval_guides_only_the_noise_levels_in_it(objective, sampler):
    d = build_diffusion(DiffusionConfig(objective=objective))
    n = d.num_train_timesteps
    g = lambda: torch.Generator().manual_seed(2)
    kw = dict(sampler=sampler, steps=6, guidance_scale=3.0)
    cond, uncond = Recorder(0.3), Recorder(-0.5)
    everywhere = d.sample(cond, SHAPE, generator=g(), uncond_model_fn=uncond, **kw)
    levels = [float(t[0]) / n for _, t, _ in cond.calls]
    assert torch.equal(d.sample(cond, SHAPE, generator=g(), uncond_model_fn=uncond, guidance_interval=(0.0, 1.0),
                                **kw), everywhere)
    cut = sorted(levels)[len(levels) // 2]  # guide the upper half of the levels the sampler visits
    cond, uncond = Recorder(0.3), Recorder(-0.5)
    half = d.sample(cond, SHAPE, generator=g(), uncond_model_fn=uncond, guidance_interval=(cut, 1.0), **kw)
    assert sorted(float(t[0]) / n for _, t, _ in uncond.calls) == sorted(v for v in levels if v >= cut)
    assert 0 < len(uncond.calls) < len(cond.calls)
    # what it equals: a model that is guided above the cut and conditional below it
    c2, u2 = Recorder(0.3), Recorder(-0.5)

    def by_level(x, t, cond_mask=None):
        c = c2(x, t, cond_mask)
        return cfg_combine(c, u2(x, t, cond_mask), 3.0) if float(t[0]) / n >= cut else c

    ref = d.sample(by_level, SHAPE, sampler=sampler, steps=6, generator=g())
    torch.testing.assert_close(half, ref, rtol=0, atol=0)
    assert not torch.equal(half, everywhere)
    with pytest.raises(ValueError, match="guidance_interval"):
        d.sample(cond, SHAPE, generator=g(), uncond_model_fn=uncond, guidance_interval=(0.6, 0.2), **kw)


def test_guidance_without_uncond_is_an_error():
    d = build_diffusion(DiffusionConfig())
    with pytest.raises(ValueError, match="needs uncond_model_fn"):
        d.sample(Recorder(), SHAPE, steps=2, guidance_scale=2.0)


@pytest.mark.parametrize("objective,sampler", [("flow", "euler"), ("flow", "heun"), ("eps", "ddim"),
                                               ("v", "dpmpp_2m")])
def test_continuation_keeps_given_frames_exactly(objective, sampler):
    d = build_diffusion(DiffusionConfig(objective=objective))
    given = torch.randn(2, 3, 5, 4, 4)  # 5 frames given, the first 2 used
    model = Recorder()
    out = d.sample(model, SHAPE, sampler=sampler, steps=3, cond_video=given, cond_frames=2, guidance_scale=2.0,
                   uncond_model_fn=Recorder(-1.0))
    assert out.shape == SHAPE
    assert torch.equal(out[:, :, :2], given[:, :, :2])  # bit-exact
    assert not torch.allclose(out[:, :, 2:3], given[:, :, 2:3])
    for x, t, mask in model.calls:  # the model saw the clean frames, flagged in cond_mask
        assert torch.equal(x[:, :, :2], given[:, :, :2])
        assert mask.dtype == torch.bool and mask.shape == (2, 6)
        assert mask[:, :2].all() and not mask[:, 2:].any()
        assert t.shape == (2,)


def test_continuation_broadcasts_a_single_clip_and_validates():
    d = build_diffusion(DiffusionConfig())
    given = torch.randn(1, 3, 1, 4, 4)
    out = d.sample(Recorder(), SHAPE, steps=2, cond_video=given)
    assert torch.equal(out[:, :, :1], given.expand(2, -1, -1, -1, -1))
    with pytest.raises(ValueError, match="cond_video must be"):
        d.sample(Recorder(), SHAPE, steps=2, cond_video=torch.randn(2, 3, 2, 8, 8))
    with pytest.raises(ValueError, match="at least one frame"):
        d.sample(Recorder(), SHAPE, steps=2, cond_video=torch.randn(2, 3, 6, 4, 4))
    with pytest.raises(ValueError, match="without cond_video"):
        d.sample(Recorder(), SHAPE, steps=2, cond_frames=2)


def test_sample_without_condition_passes_no_mask():
    model = Recorder()
    build_diffusion(DiffusionConfig()).sample(model, SHAPE, steps=2)
    assert len(model.calls) == 2 and all(m is None for _, _, m in model.calls)
    ts = [float(t[0]) for _, t, _ in model.calls]
    assert ts == [1000.0, 500.0]  # model timestep scale, from noise to clean


def test_sample_long_slides_a_window():
    d = build_diffusion(DiffusionConfig())
    model = Recorder()
    given = torch.randn(2, 3, 2, 4, 4)
    out = d.sample_long(model, (2, 3, 13, 4, 4), window=6, overlap=2, steps=2, cond_video=given,
                        generator=torch.Generator().manual_seed(0))
    assert out.shape == (2, 3, 13, 4, 4)
    assert torch.equal(out[:, :, :2], given)
    # windows: frames 0-5, then 4 new frames per window conditioned on the last 2: 6 + 4 + 4 = 14, cut to 13
    inputs = [x for x, _, _ in model.calls]
    masks = [m for _, _, m in model.calls]
    assert len(inputs) == 3 * 2 and all(x.shape[2] == 6 for x in inputs)
    for w in range(1, 3):
        start = 6 + 4 * (w - 1) - 2  # the window's first frame in the output
        ctx = inputs[2 * w][:, :, :2]
        assert torch.equal(ctx, out[:, :, start:start + 2])  # conditioned on the previous window's last frames
        assert masks[2 * w][:, :2].all() and not masks[2 * w][:, 2:].any()
    with pytest.raises(ValueError, match="0 < overlap < window"):
        d.sample_long(model, (2, 3, 13, 4, 4), window=4, overlap=4, steps=2)


def test_cfg_drop_mask_rate():
    from dit_video.diffusion import cfg_drop_mask

    m = cfg_drop_mask(20000, 0.1, torch.Generator().manual_seed(0))
    assert m.dtype == torch.bool and m.shape == (20000,) and 0.09 < float(m.float().mean()) < 0.11
    assert not cfg_drop_mask(100, 0.0).any() and cfg_drop_mask(100, 1.0).all()


def test_videodit_continuation_and_long_sampling():
    """The real backbone as model_fn: cond_mask reaches it, given frames come back bit-exact."""
    from dit_video import VideoDiT, VideoDiTConfig

    model = VideoDiT(VideoDiTConfig(in_channels=3, num_frames=4, sample_size=[4, 4], patch_size=[1, 2, 2],
                                    hidden_size=32, depth=2, num_heads=2, kernel_backend="torch")).eval()
    torch.nn.init.normal_(model.final_linear.weight, std=0.1)  # a non-zero output
    fn = lambda x, t, cond_mask=None: model(x, t, cond_mask=cond_mask)
    d = build_diffusion(DiffusionConfig(objective="v"))
    given = torch.randn(2, 3, 1, 4, 4)
    out = d.sample(fn, (2, 3, 4, 4, 4), sampler="dpmpp_2m", steps=3, cond_video=given)
    assert torch.equal(out[:, :, :1], given) and torch.isfinite(out).all()
    long = d.sample_long(fn, (2, 3, 7, 4, 4), window=4, overlap=1, steps=2, cond_video=given)
    assert long.shape == (2, 3, 7, 4, 4) and torch.equal(long[:, :, :1], given)


def test_continuation_is_exact_in_the_given_dtype():
    d = build_diffusion(DiffusionConfig())
    given = torch.randn(2, 3, 2, 4, 4, dtype=torch.float64) / 3  # not representable in fp32
    out = d.sample(Recorder(), SHAPE, steps=2, cond_video=given)
    assert out.dtype == torch.float64 and torch.equal(out[:, :, :2], given)


def _pipeline(cond_frames: int):
    """A tiny pixel-space text pipeline whose recipe says the model was trained with ``cond_frames`` given."""
    from dit_video import VideoDiT, VideoDiTConfig
    from dit_video.pipeline.conditioner import ConditionedDiT, Conditioner
    from dit_video.pipeline.config import ConditionConfig, PipelineConfig
    from dit_video.pipeline.sampling import SamplingPipeline

    mcfg = VideoDiTConfig(in_channels=3, num_frames=4, sample_size=[8, 8], patch_size=[1, 4, 4], hidden_size=32,
                          depth=2, num_heads=2, conditioning="text", caption_channels=16, kernel_backend="torch")
    ccfg = ConditionConfig(text_encoder="tiny", tiny_dim=16, tiny_layers=0, max_length=8)
    conditioner = Conditioner(mcfg, ccfg)
    torch.manual_seed(0)
    model = ConditionedDiT(VideoDiT(mcfg), conditioner.new_learned_encoder())
    torch.nn.init.normal_(model.dit.final_linear.weight, std=0.1)  # a non-zero output
    recipe = PipelineConfig(model=mcfg, diffusion=DiffusionConfig(cond_frames=cond_frames,
                                                                  cond_prob=0.25 if cond_frames else 0.0),
                            condition=ccfg)
    return SamplingPipeline(model, recipe, conditioner=conditioner)


def test_generate_beyond_the_trained_length_slides_windows_of_it(monkeypatch):
    pipe = _pipeline(cond_frames=2)
    assert pipe.windows(4) is None and pipe.windows(9) == (4, 2) and pipe.windows(9, window=3) == (3, 2)
    with pytest.raises(ValueError, match="cond_frames"):
        pipe.windows(9, window=2)  # overlap 2 leaves no new frame per window
    lengths = []
    inner = pipe.model.forward
    monkeypatch.setattr(pipe.model, "forward", lambda x, *a, **k: lengths.append(x.shape[2]) or inner(x, *a, **k))
    v = pipe.generate(["a red square moving left"], num_frames=9, steps=2, seed=0)
    assert v.shape == (1, 3, 9, 8, 8) and torch.isfinite(v).all()
    assert set(lengths) == {4}  # every model call at the trained length: 4 + 2 + 2 + 2 frames, cut to 9
    assert len(lengths) == 4 * 2  # 4 windows x 2 euler steps (flow's default sampler, no guidance)


def test_generate_beyond_the_trained_length_without_video_prediction_is_one_pass(caplog):
    pipe = _pipeline(cond_frames=0)
    with caplog.at_level("WARNING", logger="dit_video.pipeline.sampling"):
        assert pipe.windows(9) is None
    assert "diffusion.cond_frames=0" in caplog.text
    with pytest.raises(ValueError, match="cond_frames=0"):
        pipe.windows(9, window=4)
    assert pipe.generate(["a red square moving left"], num_frames=6, steps=1).shape == (1, 3, 6, 8, 8)
