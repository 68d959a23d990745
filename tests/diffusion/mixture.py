"""A 1-D Gaussian mixture and its exact denoiser ``E[x0 | x_t]`` on any path ``x_t = a x0 + s eps``."""

from __future__ import annotations

import math

import torch

WEIGHTS = torch.tensor([0.3, 0.7], dtype=torch.float64)
MEANS = torch.tensor([-2.0, 1.5], dtype=torch.float64)
STDS = torch.tensor([0.3, 0.5], dtype=torch.float64)


def posterior_mean(x: torch.Tensor, a: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """``E[x0 | x_t = x]`` for the mixture, all float64, elementwise (a, s broadcast against x)."""
    x = x[..., None]
    a, s = a[..., None], s[..., None]
    var = a**2 * STDS**2 + s**2
    logp = torch.log(WEIGHTS) - 0.5 * torch.log(2 * math.pi * var) - 0.5 * (x - a * MEANS) ** 2 / var
    r = torch.softmax(logp, dim=-1)
    comp = MEANS + a * STDS**2 / var * (x - a * MEANS)
    return (r * comp).sum(-1)


def exact_model_fn(diffusion):
    """A ``model_fn`` returning the objective's prediction from the exact posterior mean.

    It computes alpha/sigma from the schedule directly (flow: ``1 - t/N``, ``t/N``; DDPM:
    ``sqrt(abar_k)``), not through the diffusion's own conversion code.
    """
    n = diffusion.num_train_timesteps

    def fn(x, t, cond_mask=None):
        x64 = x.double()
        tt = t.double().reshape(-1, *([1] * (x.dim() - 1)))
        if diffusion.objective == "flow":
            u = tt / n
            a, s = 1 - u, u
        else:
            abar = diffusion.alphas_cumprod[t.round().long()].reshape(tt.shape)
            a, s = abar.sqrt(), (1 - abar).sqrt()
        x0 = posterior_mean(x64, a.expand_as(x64), s.expand_as(x64))
        eps = (x64 - a * x0) / s
        if diffusion.config.prediction == "x0":  # flow with x-prediction: the network outputs x0
            pred = x0
        elif diffusion.objective == "flow":
            pred = eps - x0
        elif diffusion.objective == "eps":
            pred = eps
        else:
            pred = a * eps - s * x0
        return pred.to(x.dtype)

    return fn


def mixture_cdf(x: torch.Tensor) -> torch.Tensor:
    z = (x.double()[..., None] - MEANS) / STDS
    return (WEIGHTS * 0.5 * (1 + torch.erf(z / math.sqrt(2)))).sum(-1)


def ks_statistic(samples: torch.Tensor) -> float:
    """Kolmogorov-Smirnov distance between the samples' empirical CDF and the mixture's CDF."""
    xs = samples.double().flatten().sort().values
    n = xs.numel()
    cdf = mixture_cdf(xs)
    hi = torch.arange(1, n + 1, dtype=torch.float64) / n
    lo = torch.arange(0, n, dtype=torch.float64) / n
    return float(torch.maximum((hi - cdf).abs(), (cdf - lo).abs()).max())
