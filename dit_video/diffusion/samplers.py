"""Deterministic samplers over a Gaussian path ``x = alpha x0 + sigma eps``.

Every sampler is ``fn(denoise, x, grid, progress=False) -> x`` where ``grid`` is a list of
``(t_model, alpha, sigma)`` from noise to clean (the last entry has ``sigma = 0``) and
``denoise(x, t_model) -> (x0_hat, eps_hat)``. The :class:`~dit_video.diffusion.objectives.Diffusion`
builds both from its schedule and the model's prediction, so the samplers know no objective.

Which sampler goes with which objective (checked by :func:`check_sampler`):

=============  ==============  =========================================================
sampler        objectives      what it integrates
=============  ==============  =========================================================
``euler``      flow            velocity ODE ``dx/du = eps - x0``, first order
``heun``       flow            same ODE, Heun's second order (2 model calls per step)
``ddim``       eps, v          DDIM with eta = 0 (Song et al. 2021), first order
``dpmpp_2m``   eps, v          DPM-Solver++(2M) in data prediction (Lu et al. 2022)
=============  ==============  =========================================================

On a flow path Euler *is* DDIM, so nothing is lost by the split; it keeps the names honest.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

Denoiser = Callable[[torch.Tensor, float], tuple[torch.Tensor, torch.Tensor]]
Grid = list[tuple[float, float, float]]


def _steps(n: int, progress: bool, desc: str):
    if not progress:
        return range(n)
    from tqdm.auto import tqdm

    return tqdm(range(n), desc=desc, leave=False)


def euler(denoise: Denoiser, x: torch.Tensor, grid: Grid, progress: bool = False) -> torch.Tensor:
    """Flow Euler: ``x <- x + (u_next - u) (eps_hat - x0_hat)``; ``u`` is the flow time (= sigma)."""
    for i in _steps(len(grid) - 1, progress, "euler"):
        (t, _, u), (_, _, u_next) = grid[i], grid[i + 1]
        x0, eps = denoise(x, t)
        x = x + (u_next - u) * (eps - x0)
    return x


def heun(denoise: Denoiser, x: torch.Tensor, grid: Grid, progress: bool = False) -> torch.Tensor:
    """Flow Heun (EDM's 2nd-order step; the last step into u = 0 is Euler)."""
    for i in _steps(len(grid) - 1, progress, "heun"):
        (t, _, u), (t_next, _, u_next) = grid[i], grid[i + 1]
        x0, eps = denoise(x, t)
        v = eps - x0
        x_euler = x + (u_next - u) * v
        if u_next == 0:
            x = x_euler
            continue
        x0_2, eps_2 = denoise(x_euler, t_next)
        x = x + (u_next - u) * 0.5 * (v + (eps_2 - x0_2))
    return x


def ddim(denoise: Denoiser, x: torch.Tensor, grid: Grid, progress: bool = False) -> torch.Tensor:
    """DDIM (eta = 0): ``x <- alpha_next x0_hat + sigma_next eps_hat``."""
    for i in _steps(len(grid) - 1, progress, "ddim"):
        (t, _, _), (_, a_next, s_next) = grid[i], grid[i + 1]
        x0, eps = denoise(x, t)
        x = a_next * x0 + s_next * eps
    return x


def _lam(a: float, s: float) -> float:
    """Half log-SNR ``log(alpha / sigma)`` with the infinite ends."""
    if a == 0:
        return -math.inf
    if s == 0:
        return math.inf
    return math.log(a / s)


def dpmpp_2m(denoise: Denoiser, x: torch.Tensor, grid: Grid, progress: bool = False) -> torch.Tensor:
    """DPM-Solver++(2M), data prediction, multistep; first order on the first and the last step.

    ``x <- (sigma_n / sigma) x - alpha_n expm1(-h) D`` with ``h = lambda_n - lambda`` and
    ``D = (1 + 1/(2r)) x0_hat - 1/(2r) x0_prev``, ``r = h_prev / h`` (Lu et al. 2022, Alg. 2).
    The step into sigma = 0 returns ``x0_hat`` (alpha = 1 there).
    """
    x0_prev, h_prev = None, None
    for i in _steps(len(grid) - 1, progress, "dpmpp_2m"):
        (t, a, s), (_, a_next, s_next) = grid[i], grid[i + 1]
        x0, _ = denoise(x, t)
        if s_next == 0:
            x = a_next * x0
            break
        h = _lam(a_next, s_next) - _lam(a, s)
        d = x0
        if x0_prev is not None and math.isfinite(h_prev):
            r = h_prev / h
            d = (1 + 1 / (2 * r)) * x0 - (1 / (2 * r)) * x0_prev
        x = (s_next / s) * x - a_next * math.expm1(-h) * d
        x0_prev, h_prev = x0, h
    return x


@dataclass(frozen=True)
class Sampler:
    """A sampler function and the objectives it is defined for."""

    name: str
    fn: Callable[..., torch.Tensor]
    objectives: tuple[str, ...]
    model_calls_per_step: int = 1


SAMPLERS: dict[str, Sampler] = {
    "euler": Sampler("euler", euler, ("flow",)),
    "heun": Sampler("heun", heun, ("flow",), model_calls_per_step=2),
    "ddim": Sampler("ddim", ddim, ("eps", "v")),
    "dpmpp_2m": Sampler("dpmpp_2m", dpmpp_2m, ("eps", "v")),
}

DEFAULT_SAMPLER = {"flow": "euler", "eps": "ddim", "v": "ddim"}


def check_sampler(name: str, objective: str) -> Sampler:
    """The :class:`Sampler` called ``name``; ``ValueError`` if unknown or not valid for ``objective``."""
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; available: {sorted(SAMPLERS)}")
    spec = SAMPLERS[name]
    if objective not in spec.objectives:
        ok = sorted(k for k, v in SAMPLERS.items() if objective in v.objectives)
        raise ValueError(f"sampler {name!r} is for objective(s) {list(spec.objectives)}, not {objective!r}; "
                         f"use one of {ok}")
    return spec
