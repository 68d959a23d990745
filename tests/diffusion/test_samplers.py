"""Each sampler recovers a known 1-D Gaussian mixture from its exact analytic denoiser (no network)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from dit_video.diffusion import SAMPLERS, DiffusionConfig, build_diffusion, check_sampler

sys.path.insert(0, str(Path(__file__).parent))
from mixture import MEANS, STDS, WEIGHTS, exact_model_fn, ks_statistic  # noqa: E402

N = 2000


def stratified_noise(n: int = N) -> torch.Tensor:
    """Standard-normal quantiles: the 1-D ODE map is monotone, so the outputs are the mixture's quantiles
    up to the sampler's error (no Monte-Carlo noise in the check)."""
    p = (torch.arange(n, dtype=torch.float64) + 0.5) / n
    return (2**0.5 * torch.erfinv(2 * p - 1)).reshape(n, 1, 1, 1, 1)


def run(cfg: DiffusionConfig, sampler: str, steps: int) -> torch.Tensor:
    d = build_diffusion(cfg)
    return d.sample(exact_model_fn(d), (N, 1, 1, 1, 1), sampler=sampler, steps=steps, noise=stratified_noise(),
                    dtype=torch.float64)


CASES = [  # (config, sampler, steps, KS tolerance)
    (DiffusionConfig(objective="flow"), "euler", 100, 0.008),
    (DiffusionConfig(objective="flow", shift=3.0), "euler", 100, 0.008),
    (DiffusionConfig(objective="flow"), "heun", 20, 0.003),
    (DiffusionConfig(objective="flow", prediction="x0"), "heun", 20, 0.003),
    (DiffusionConfig(objective="eps", schedule="linear"), "ddim", 100, 0.01),
    (DiffusionConfig(objective="v", schedule="cosine"), "ddim", 100, 0.01),
    (DiffusionConfig(objective="eps", schedule="linear"), "dpmpp_2m", 50, 0.005),
    (DiffusionConfig(objective="v", schedule="linear", zero_terminal_snr=True), "dpmpp_2m", 50, 0.004),
    (DiffusionConfig(objective="v", schedule="scaled_linear", zero_terminal_snr=True), "dpmpp_2m", 100, 0.006),
]


@pytest.mark.parametrize("cfg,sampler,steps,tol", CASES,
                         ids=[f"{c.objective}-{c.prediction}-{c.schedule}-shift{c.shift}-{s}-{n}"
                              for c, s, n, _ in CASES])
def test_sampler_recovers_mixture(cfg, sampler, steps, tol):
    x = run(cfg, sampler, steps)
    assert torch.isfinite(x).all()
    assert ks_statistic(x) < tol
    mean = float((WEIGHTS * MEANS).sum())
    var = float((WEIGHTS * (STDS**2 + MEANS**2)).sum()) - mean**2
    assert abs(float(x.mean()) - mean) < 0.02
    assert abs(float(x.var()) - var) < 0.05
    assert abs(float((x < 0).double().mean()) - float(WEIGHTS[0])) < 0.01  # mass of the left component


def test_no_sampler_is_trivially_accurate():
    """The tolerance is meaningful: a handful of steps is measurably off, more steps converge."""
    for cfg, sampler, _, tol in CASES[:1] + CASES[3:4]:
        assert ks_statistic(run(cfg, sampler, 5)) > 5 * tol


def test_convergence_orders():
    """Euler/DDIM are first order (error halves when steps double); Heun is second order, and
    DPM-Solver++(2M) beats DDIM at the same number of model calls."""
    flow = DiffusionConfig(objective="flow")
    e10, e20 = ks_statistic(run(flow, "euler", 10)), ks_statistic(run(flow, "euler", 20))
    assert 1.6 < e10 / e20 < 2.4
    h5, h10 = ks_statistic(run(flow, "heun", 5)), ks_statistic(run(flow, "heun", 10))
    assert h5 / h10 > 3.0
    eps = DiffusionConfig(objective="eps")
    assert ks_statistic(run(eps, "dpmpp_2m", 50)) < 0.3 * ks_statistic(run(eps, "ddim", 50))


def test_zero_terminal_snr_removes_the_start_mismatch():
    """Scaled-linear betas end at SNR > 0, so starting from pure noise leaves an error that more steps
    cannot remove (Lin et al. 2024); with zero-terminal-SNR the same sampler converges."""
    plain = DiffusionConfig(objective="v", schedule="scaled_linear")
    ztsnr = DiffusionConfig(objective="v", schedule="scaled_linear", zero_terminal_snr=True)
    assert ks_statistic(run(plain, "dpmpp_2m", 100)) > 0.009
    assert ks_statistic(run(ztsnr, "dpmpp_2m", 100)) < 0.005


def test_sampler_objective_pairs():
    assert set(SAMPLERS) == {"euler", "heun", "ddim", "dpmpp_2m"}
    for name in ("euler", "heun"):
        check_sampler(name, "flow")
        for obj in ("eps", "v"):
            with pytest.raises(ValueError, match=f"sampler '{name}' is for objective"):
                check_sampler(name, obj)
    for name in ("ddim", "dpmpp_2m"):
        check_sampler(name, "eps")
        check_sampler(name, "v")
        with pytest.raises(ValueError, match="use one of \\['euler', 'heun'\\]"):
            check_sampler(name, "flow")
    with pytest.raises(ValueError, match="unknown sampler 'nope'"):
        check_sampler("nope", "flow")
    d = build_diffusion(DiffusionConfig(objective="v"))
    with pytest.raises(ValueError, match="sampler 'euler'"):
        d.sample(exact_model_fn(d), (2, 1, 1, 1, 1), sampler="euler", steps=2)
    assert d.default_sampler == "ddim" and build_diffusion(DiffusionConfig()).default_sampler == "euler"


def test_sampler_reproducible_with_generator():
    d = build_diffusion(DiffusionConfig(objective="flow"))
    fn = exact_model_fn(d)
    a = d.sample(fn, (3, 1, 2, 1, 1), steps=4, generator=torch.Generator().manual_seed(3))
    b = d.sample(fn, (3, 1, 2, 1, 1), steps=4, generator=torch.Generator().manual_seed(3))
    c = d.sample(fn, (3, 1, 2, 1, 1), steps=4, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)
