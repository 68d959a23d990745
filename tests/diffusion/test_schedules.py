"""Schedules against independent references: diffusers' DDPMScheduler and the closed forms."""

from __future__ import annotations

import pytest
import torch

from dit_video.diffusion import DiffusionConfig, build_diffusion
from dit_video.diffusion.schedules import alphas_cumprod, shift_time

DIFFUSERS_NAME = {"linear": "linear", "scaled_linear": "scaled_linear", "cosine": "squaredcos_cap_v2"}


@pytest.mark.parametrize("schedule", ["linear", "scaled_linear", "cosine"])
@pytest.mark.parametrize("ztsnr", [False, True])
def test_alphas_cumprod_match_diffusers(schedule, ztsnr):
    diffusers = pytest.importorskip("diffusers")
    ref = diffusers.DDPMScheduler(num_train_timesteps=1000, beta_schedule=DIFFUSERS_NAME[schedule],
                                  beta_start=1e-4 if schedule == "linear" else 0.00085,
                                  beta_end=0.02 if schedule == "linear" else 0.012,
                                  rescale_betas_zero_snr=ztsnr).alphas_cumprod.double()
    ours = alphas_cumprod(schedule, 1000, ztsnr)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-6)
    if ztsnr:
        assert ours[-1] < 1e-12  # pure noise at the last step
    assert bool((ours[1:] < ours[:-1]).all())


def test_flow_path_and_shift():
    d = build_diffusion(DiffusionConfig(objective="flow"))
    t = torch.tensor([0.0, 250.0, 1000.0])
    a, s = d.alpha_sigma(t)
    torch.testing.assert_close(a, torch.tensor([1.0, 0.75, 0.0]))
    torch.testing.assert_close(s, torch.tensor([0.0, 0.25, 1.0]))
    assert shift_time(0.5, 3.0) == pytest.approx(0.75) and shift_time(0.5, 1.0) == 0.5
    grid = build_diffusion(DiffusionConfig(objective="flow", shift=3.0)).sampling_grid(4)
    assert [round(g[2], 6) for g in grid] == [1.0, 0.9, 0.75, 0.5, 0.0]  # 3u / (1 + 2u)
    assert grid[0][0] == 1000.0 and grid[-1] == (0.0, 1.0, 0.0)


def test_ddpm_grid_is_trailing_and_ends_clean():
    d = build_diffusion(DiffusionConfig(objective="eps"))
    grid = d.sampling_grid(4)
    assert [g[0] for g in grid] == [999.0, 749.0, 499.0, 249.0, 0.0]
    assert grid[-1][1:] == (1.0, 0.0)
    with pytest.raises(ValueError, match="steps must be in"):
        d.sampling_grid(1001)


@pytest.mark.parametrize("objective", ["flow", "eps", "v"])
def test_prediction_inverts_to_x0_and_eps(objective):
    """x0_eps(x_t, t, target(x0, eps, t)) returns (x0, eps): the conversions used by every sampler."""
    d = build_diffusion(DiffusionConfig(objective=objective))
    x0, eps = torch.randn(3, 2, 4, 2, 2, dtype=torch.float64), torch.randn(3, 2, 4, 2, 2, dtype=torch.float64)
    for t in (torch.tensor([10.0, 500.0, 900.0]), torch.tensor([[1.0, 100.0, 500.0, 990.0]] * 3)):
        x_t = d.add_noise(x0, eps, t)
        x0_hat, eps_hat = d.x0_eps(x_t, t, d.target(x0, eps, t))
        torch.testing.assert_close(x0_hat, x0, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(eps_hat, eps, rtol=1e-4, atol=1e-4)


def test_x0_prediction_is_a_reparametrised_velocity():
    """prediction='x0': an output of x0 means the velocity eps - x0 (above x0_min_u), so samplers and loss agree."""
    d = build_diffusion(DiffusionConfig(objective="flow", prediction="x0", x0_min_u=0.05))
    x0, eps = torch.randn(3, 2, 4, 2, 2, dtype=torch.float64), torch.randn(3, 2, 4, 2, 2, dtype=torch.float64)
    t = torch.tensor([[60.0, 100.0, 500.0, 990.0]] * 3)
    x_t = d.add_noise(x0, eps, t)
    tol = dict(rtol=1e-5, atol=1e-5)  # alpha/sigma are fp32
    torch.testing.assert_close(d.prediction_to_target(x_t, t, x0), d.target(x0, eps, t), **tol)
    x0_hat, eps_hat = d.x0_eps(x_t, t, x0)
    torch.testing.assert_close(x0_hat, x0, **tol)
    torch.testing.assert_close(eps_hat, eps, **tol)
    low = torch.full((3,), 10.0)  # u = 0.01 < x0_min_u: the velocity is (x_t - out) / 0.05, finite
    v = d.prediction_to_target(d.add_noise(x0, eps, low), low, x0)
    torch.testing.assert_close(v, 0.01 / 0.05 * (eps - x0), **tol)
    plain = build_diffusion(DiffusionConfig(objective="flow"))
    assert plain.prediction_to_target(x_t, t, x0) is x0


def test_config_errors():
    with pytest.raises(ValueError, match="prediction='x0' is a rectified-flow option"):
        DiffusionConfig(objective="eps", prediction="x0")
    with pytest.raises(ValueError, match="prediction must be one of"):
        DiffusionConfig(prediction="eps")
    with pytest.raises(ValueError, match="x0_min_u must be in"):
        DiffusionConfig(prediction="x0", x0_min_u=0.0)
    with pytest.raises(ValueError, match="objective must be one of"):
        DiffusionConfig(objective="x0")
    with pytest.raises(ValueError, match="zero_terminal_snr=true needs objective='v'"):
        DiffusionConfig(objective="eps", zero_terminal_snr=True)
    with pytest.raises(ValueError, match="shift is a rectified-flow option"):
        DiffusionConfig(objective="v", shift=2.0)
    with pytest.raises(ValueError, match="cond_prob must be in"):
        DiffusionConfig(cond_prob=1.5)


def test_build_from_omegaconf():
    from omegaconf import OmegaConf

    structured = OmegaConf.merge(OmegaConf.structured(DiffusionConfig), {"objective": "v", "schedule": "cosine"})
    d = build_diffusion(structured)
    assert d.objective == "v" and d.config.schedule == "cosine"
    assert build_diffusion({"objective": "eps"}).objective == "eps"
    assert build_diffusion(None, objective="v").objective == "v"
    with pytest.raises(Exception, match="timestep_samplingg"):
        OmegaConf.merge(OmegaConf.structured(DiffusionConfig), {"timestep_samplingg": "uniform"})


def test_shift_for_resolution_keeps_the_noise_per_token():
    """Averaging m = 4 i.i.d. tokens of x_t = (1-u) x0 + u eps divides the noise std by 2; the shifted
    time for 4x the tokens restores the coarse image's signal-to-noise ratio (SD3's argument)."""
    from dit_video.diffusion.schedules import shift_for_resolution

    s = shift_for_resolution(4 * 1024, 1024)
    assert s == 2.0
    for u in (0.2, 0.5, 0.8):
        v = shift_time(u, s)
        snr_base = ((1 - u) / u) ** 2
        snr_avg4 = ((1 - v) / (v / 2)) ** 2  # the mean of 4 tokens: noise std v / sqrt(4)
        assert snr_avg4 == pytest.approx(snr_base)
    with pytest.raises(ValueError):
        shift_for_resolution(0, 10)
