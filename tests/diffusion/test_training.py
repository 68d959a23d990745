"""Training losses: objectives learn, per-frame timesteps, conditioning frames, min-SNR weighting."""

from __future__ import annotations

import math

import pytest
import torch

from dit_video import VideoDiT, VideoDiTConfig
from dit_video.diffusion import DiffusionConfig, build_diffusion

B, C, T, H, W = 2, 3, 3, 4, 4


def tiny_model() -> VideoDiT:
    return VideoDiT(VideoDiTConfig(in_channels=C, num_frames=T, sample_size=[H, W], patch_size=[1, 2, 2],
                                   hidden_size=32, depth=2, num_heads=2, kernel_backend="torch"))


def model_fn_of(model: VideoDiT):
    return lambda x, t, cond_mask=None: model(x, t, cond_mask=cond_mask)


@pytest.mark.parametrize("cfg", [
    DiffusionConfig(objective="flow"),
    DiffusionConfig(objective="eps", timestep_sampling="uniform"),
    DiffusionConfig(objective="v", schedule="cosine", zero_terminal_snr=True, min_snr_gamma=5.0),
    DiffusionConfig(objective="flow", per_frame_timesteps=True, cond_frames=1, cond_prob=0.5),
    DiffusionConfig(objective="flow", prediction="x0"),
], ids=["flow", "eps", "v-minsnr", "flow-perframe-cond", "flow-x0"])
def test_objective_trains_on_a_fixed_batch(cfg):
    torch.manual_seed(0)
    d = build_diffusion(cfg)
    model = tiny_model()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    x0 = torch.randn(B, C, T, H, W) * 0.5 + torch.linspace(-1, 1, W)  # a fixed batch with structure
    losses = []
    for _ in range(15):
        loss, logs = d.training_loss(model_fn_of(model), x0, generator=torch.Generator().manual_seed(7))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        assert logs["loss"] == pytest.approx(loss.item()) and set(logs) >= {"loss", "mse", "t_mean", "cond_frac"}
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < 0.4 * losses[0], losses


class Spy:
    def __init__(self, out=None):
        self.seen = []
        self.out = out

    def __call__(self, x, t, cond_mask=None):
        self.seen.append((x.clone(), t.clone(), cond_mask))
        return torch.zeros_like(x) if self.out is None else self.out(x)


def test_per_frame_timesteps_shapes_and_noise():
    d = build_diffusion(DiffusionConfig(objective="flow", per_frame_timesteps=True))
    x0 = torch.randn(3, C, 5, 2, 2)
    spy = Spy()
    d.training_loss(spy, x0, generator=torch.Generator().manual_seed(0))
    x_t, t, mask = spy.seen[0]
    assert t.shape == (3, 5) and t.dtype == torch.float32 and mask is None
    assert (t > 0).all() and (t < 1000).all() and t.std() > 0  # independent levels per frame
    # x_t frame f is (1 - u_f) x0 + u_f eps: recover eps per frame and check it is one standard-normal draw
    u = (t / 1000)[:, None, :, None, None]
    eps = (x_t - (1 - u) * x0) / u
    assert abs(float(eps.mean())) < 0.3 and 0.6 < float(eps.std()) < 1.4
    noise = torch.randn(x0.shape, generator=_replay_generator(d, (3, 5), x0))
    torch.testing.assert_close(eps, noise, rtol=1e-3, atol=1e-3)


def _replay_generator(d, t_shape, x0):
    """A generator advanced past the timestep draw, positioned at the noise draw of training_loss."""
    g = torch.Generator().manual_seed(0)
    d.sample_timesteps(t_shape, g)
    return g


def test_per_clip_timesteps_shape():
    d = build_diffusion(DiffusionConfig(objective="eps"))
    spy = Spy()
    d.training_loss(spy, torch.randn(4, C, T, 2, 2))
    t = spy.seen[0][1]
    assert t.shape == (4,) and torch.equal(t, t.round()) and (t >= 0).all() and (t <= 999).all()


@pytest.mark.parametrize("per_frame", [False, True])
def test_conditioning_frames_are_clean_and_excluded_from_the_loss(per_frame):
    cfg = DiffusionConfig(objective="v", per_frame_timesteps=per_frame, cond_frames=2, cond_prob=1.0)
    d = build_diffusion(cfg)
    x0 = torch.randn(B, C, T, H, W)
    spy = Spy()
    loss_zero, logs = d.training_loss(spy, x0, generator=torch.Generator().manual_seed(1))
    x_t, t, mask = spy.seen[0]
    assert mask.dtype == torch.bool and mask.shape == (B, T)
    assert mask[:, :2].all() and not mask[:, 2:].any() and logs["cond_frac"] == 1.0
    assert torch.equal(x_t[:, :, :2], x0[:, :, :2])  # untouched by noise
    assert not torch.allclose(x_t[:, :, 2:], x0[:, :, 2:])
    if per_frame:
        assert t.shape == (B, T) and (t[:, :2] == 0).all() and (t[:, 2:] > 0).all()
    # garbage (inf) predictions on the clean frames do not change the loss ...
    garbage = lambda x: torch.zeros_like(x).index_fill_(2, torch.tensor([0, 1]), float("inf"))
    loss_garbage, _ = d.training_loss(Spy(garbage), x0, generator=torch.Generator().manual_seed(1))
    assert torch.equal(loss_zero, loss_garbage)
    # ... but they do when the frames are not conditioning frames (the check can fail)
    d0 = build_diffusion(DiffusionConfig(objective="v", per_frame_timesteps=per_frame))
    a, _ = d0.training_loss(Spy(), x0, generator=torch.Generator().manual_seed(1))
    b, _ = d0.training_loss(Spy(garbage), x0, generator=torch.Generator().manual_seed(1))
    assert torch.isfinite(a) and not torch.isfinite(b)


def test_cond_prob_is_a_per_clip_probability():
    d = build_diffusion(DiffusionConfig(cond_frames=1, cond_prob=0.3))
    spy = Spy()
    d.training_loss(spy, torch.randn(2000, 1, 3, 1, 1), generator=torch.Generator().manual_seed(0))
    mask = spy.seen[0][2]
    assert 0.25 < float(mask[:, 0].float().mean()) < 0.35 and not mask[:, 1:].any()
    with pytest.raises(ValueError, match="cond_frames=3 must be smaller"):
        d2 = build_diffusion(DiffusionConfig(cond_frames=3, cond_prob=0.3))
        d2.training_loss(spy, torch.randn(2, 1, 3, 1, 1))


def test_a_mask_drawn_first_is_the_one_the_loss_uses():
    """The trainer draws the mask before the loss (its caption dropout depends on it): the loss uses those rows
    exactly, draws no mask of its own, and the draw is the one the loss would make from the same generator."""
    d = build_diffusion(DiffusionConfig(cond_frames=2, cond_prob=0.5))
    full = d.draw_cond_mask(8, T, torch.Generator().manual_seed(3), "cpu")
    assert full.shape == (8, T) and full[:, 2:].sum() == 0 and 0 < int(full[:, 0].sum()) < 8
    spy = Spy()
    x0 = torch.randn(4, C, T, H, W)
    d.training_loss(spy, x0, generator=torch.Generator().manual_seed(1), batch_slice=(8, 4), cond_mask=full)
    assert torch.equal(spy.seen[0][2], full[4:])
    with pytest.raises(ValueError, match="cond_mask must be the global batch's"):
        d.training_loss(spy, x0, batch_slice=(8, 4), cond_mask=full[4:])
    assert build_diffusion(DiffusionConfig()).draw_cond_mask(8, T, None, "cpu") is None


def test_ranks_holding_different_numbers_of_given_clips_average_to_one_process():
    """Data parallel averages the ranks' losses: each rank divides by its share of the global batch's noised
    frames, so the mean of two half-batch losses (and their gradients) is the whole batch's loss even when one
    half holds all the clips with given frames. Tolerance: fp32 sums of 8 x T terms in another order."""
    d = build_diffusion(DiffusionConfig(cond_frames=2, cond_prob=0.5))
    full = torch.zeros(8, T, dtype=torch.bool)
    full[:3, :2] = True  # rank 0 holds 3 clips with given frames, rank 1 none
    x0 = torch.randn(8, C, T, H, W)
    w = torch.tensor(0.7, requires_grad=True)

    def loss(rows: slice, bs):
        return d.training_loss(lambda x, t, cond_mask=None: w * x, x0[rows], torch.Generator().manual_seed(5),
                               batch_slice=bs, cond_mask=full)[0]

    one = loss(slice(0, 8), None)
    (g_one,) = torch.autograd.grad(one, w)
    halves = (loss(slice(0, 4), (8, 0)) + loss(slice(4, 8), (8, 4))) / 2
    (g_two,) = torch.autograd.grad(halves, w)
    eps = torch.finfo(torch.float32).eps
    assert abs(float(halves - one)) <= 8 * T * eps * abs(float(one))
    assert abs(float(g_two - g_one)) <= 8 * T * eps * abs(float(g_one))


def test_clips_with_given_frames_drop_their_caption_at_their_own_rate():
    from dit_video.pipeline import ConditionConfig, Conditioner

    mcfg = VideoDiTConfig(conditioning="text", caption_channels=32)
    c = Conditioner(mcfg, ConditionConfig(text_encoder="tiny", tiny_dim=32, tiny_layers=0, max_length=8))
    given = torch.arange(4000) % 2 == 0
    drop = c.dropout(1000, 0.1, torch.Generator().manual_seed(0), batch_slice=(4000, 2000), given=given, p_given=0.6)
    g = given[2000:3000]
    assert 0.54 < float(drop[g].float().mean()) < 0.66 and 0.07 < float(drop[~g].float().mean()) < 0.13
    # without p_given the draw is the plain one, bit for bit
    plain = c.dropout(1000, 0.1, torch.Generator().manual_seed(0), batch_slice=(4000, 2000))
    assert torch.equal(plain, c.dropout(1000, 0.1, torch.Generator().manual_seed(0), batch_slice=(4000, 2000),
                                        given=given, p_given=None))
    assert torch.equal(plain, torch.rand(4000, generator=torch.Generator().manual_seed(0))[2000:3000] < 0.1)
    assert c.dropout(8, 0.0, None, given=torch.zeros(8, dtype=torch.bool), p_given=0.5) is None


@pytest.mark.parametrize("objective", ["flow", "eps", "v"])
def test_min_snr_weight_is_x0_space_min_snr(objective):
    """w(t) |pred - target|^2 == min(SNR, gamma) |x0_hat - x0|^2 for any prediction."""
    d = build_diffusion(DiffusionConfig(objective=objective, min_snr_gamma=5.0))
    x0, eps, pred = (torch.randn(6, 1, 1, 3, 3, dtype=torch.float64) for _ in range(3))
    t = torch.tensor([5.0, 50.0, 200.0, 500.0, 800.0, 990.0])
    x_t = d.add_noise(x0, eps, t)
    w = d.loss_weight(t).double()
    lhs = w * (pred - d.target(x0, eps, t)).pow(2).sum(dim=(1, 2, 3, 4))
    x0_hat, _ = d.x0_eps(x_t, t, pred)
    rhs = d.snr(t).double().clamp(max=5.0) * (x0_hat - x0).pow(2).sum(dim=(1, 2, 3, 4))
    torch.testing.assert_close(lhs, rhs, rtol=1e-4, atol=1e-6)
    assert build_diffusion(DiffusionConfig(objective=objective)).loss_weight(t) is None


def test_timestep_distributions():
    g = torch.Generator().manual_seed(0)
    u = build_diffusion(DiffusionConfig(logit_mean=0.0, logit_std=1.0)).sample_timesteps((20000,), g) / 1000
    assert abs(float(u.median()) - 0.5) < 0.02 and float(u.std()) < 0.25  # logit-normal(0, 1): std ~0.21
    high = build_diffusion(DiffusionConfig(logit_mean=1.0, logit_std=1.0)).sample_timesteps((20000,), g) / 1000
    assert abs(float(high.median()) - 0.7311) < 0.02  # sigmoid(1)
    uni = build_diffusion(DiffusionConfig(timestep_sampling="uniform")).sample_timesteps((20000,), g) / 1000
    assert 0.27 < float(uni.std()) < 0.31  # uniform: 1/sqrt(12) = 0.289
    shifted = build_diffusion(DiffusionConfig(logit_mean=0.0, shift=3.0)).sample_timesteps((20000,), g) / 1000
    assert abs(float(shifted.median()) - 0.75) < 0.02  # median 0.5 -> 3 * 0.5 / 2


def test_mode_sampling_is_sd3s_warp_of_a_uniform_draw():
    from dit_video.diffusion.timesteps import mode_warp

    x = torch.linspace(0, 1, 1001)
    torch.testing.assert_close(mode_warp(x, 0.0), 1 - x)  # scale 0: uniform
    for scale in (-1.0, 1.29, 2 / (math.pi - 2)):
        f = mode_warp(x, scale)
        assert f[0] == 1 and abs(float(f[-1])) < 1e-6 and bool((f[1:] <= f[:-1] + 1e-6).all())  # a density on [0, 1]
    g = torch.Generator().manual_seed(0)
    u = build_diffusion(DiffusionConfig(timestep_sampling="mode", mode_scale=1.29)).sample_timesteps((40000,), g) / 1000
    # scale > 0 moves mass to the middle: P(0.25 < u < 0.75) = 1 - 2 * P(x < x*) with f(x*) = 0.75, by bisection
    lo, hi = 0.0, 1.0
    for _ in range(50):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if float(mode_warp(torch.tensor(mid, dtype=torch.float64), 1.29)) > 0.75 else (lo, mid)
    expect = 1 - 2 * lo
    assert expect > 0.6 and abs(float(((u > 0.25) & (u < 0.75)).float().mean()) - expect) < 0.01
    with pytest.raises(ValueError, match="mode_scale must be in"):
        DiffusionConfig(timestep_sampling="mode", mode_scale=2.0)


def test_uniform_share_puts_that_share_of_draws_on_a_uniform_floor():
    from statistics import NormalDist

    g = torch.Generator().manual_seed(0)
    u = build_diffusion(DiffusionConfig(logit_mean=1.0, uniform_share=0.25)).sample_timesteps((80000,), g) / 1000
    for a, b in ((0.0, 0.1), (0.1, 0.5), (0.9, 1.0)):
        ln = NormalDist(1.0, 1.0).cdf(math.log(b / (1 - b)) if b < 1 else 50) - (
            NormalDist(1.0, 1.0).cdf(math.log(a / (1 - a))) if a > 0 else 0.0)
        expect = 0.25 * (b - a) + 0.75 * ln
        got = float(((u > a) & (u <= b)).float().mean())
        assert abs(got - expect) < 4 * math.sqrt(expect * (1 - expect) / u.numel()) + 1e-3, (a, b, got, expect)
    with pytest.raises(ValueError, match="uniform_share must be in"):
        DiffusionConfig(uniform_share=1.5)


def test_training_loss_validates_shapes():
    d = build_diffusion(DiffusionConfig())
    with pytest.raises(ValueError, match=r"x0 must be \[B, C, T, H, W\]"):
        d.training_loss(Spy(), torch.randn(2, 3, 8, 8))
    with pytest.raises(ValueError, match="model_fn returned shape"):
        d.training_loss(lambda x, t, cond_mask=None: torch.cat([x, x], 1), torch.randn(2, 3, 2, 4, 4))


@pytest.mark.parametrize("cfg", [DiffusionConfig(objective="flow"), DiffusionConfig(objective="eps"),
                                 DiffusionConfig(objective="v", schedule="cosine"),
                                 DiffusionConfig(objective="flow", prediction="x0")],
                         ids=["flow", "eps", "v", "flow-x0"])
def test_exact_denoiser_minimises_the_training_loss(cfg):
    """The training target and the samplers' conversions agree: on mixture data, the exact posterior
    prediction (the one the sampler tests integrate) has a lower loss than any perturbation of it."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from mixture import MEANS, STDS, WEIGHTS, exact_model_fn

    g = torch.Generator().manual_seed(0)
    comp = torch.multinomial(WEIGHTS.float(), 20000, replacement=True, generator=g)
    x0 = (MEANS[comp] + STDS[comp] * torch.randn(20000, generator=g, dtype=torch.float64)).reshape(-1, 1, 1, 1, 1)
    d = build_diffusion(cfg)
    exact = exact_model_fn(d)
    loss = lambda fn: d.training_loss(fn, x0, generator=torch.Generator().manual_seed(1))[0].item()
    best = loss(exact)
    for perturbed in (lambda x, t, cond_mask=None: 1.05 * exact(x, t),
                      lambda x, t, cond_mask=None: 0.95 * exact(x, t),
                      lambda x, t, cond_mask=None: exact(x, t) + 0.05,
                      lambda x, t, cond_mask=None: -exact(x, t)):
        assert loss(perturbed) > best
