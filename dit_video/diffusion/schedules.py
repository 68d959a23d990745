"""Noise schedules: DDPM betas (linear, cosine, scaled-linear), zero-terminal-SNR, flow shift."""

from __future__ import annotations

import math

import torch


def ddpm_betas(schedule: str, num_train_timesteps: int) -> torch.Tensor:
    """float64 betas ``[N]``.

    ``linear``: DDPM (Ho et al. 2020), 1e-4..0.02. ``scaled_linear``: Stable Diffusion / Latte,
    linear in sqrt(beta) between 0.00085 and 0.012. ``cosine``: improved DDPM (Nichol & Dhariwal
    2021), ``abar(t) = cos^2((t/N + s) / (1 + s) * pi/2)`` with s = 0.008, betas clipped at 0.999.
    """
    n = num_train_timesteps
    if schedule == "linear":
        return torch.linspace(1e-4, 0.02, n, dtype=torch.float64)
    if schedule == "scaled_linear":
        return torch.linspace(0.00085**0.5, 0.012**0.5, n, dtype=torch.float64) ** 2
    if schedule == "cosine":
        f = lambda t: math.cos((t / n + 0.008) / 1.008 * math.pi / 2) ** 2
        return torch.tensor([min(1 - f(i + 1) / f(i), 0.999) for i in range(n)], dtype=torch.float64)
    raise ValueError(f"unknown DDPM schedule {schedule!r}; choose linear, cosine or scaled_linear")


def rescale_zero_terminal_snr(betas: torch.Tensor) -> torch.Tensor:
    """Lin et al. 2024, Alg. 1: shift/scale sqrt(abar) so that it ends at exactly 0 and keeps its start."""
    abar_sqrt = torch.cumprod(1.0 - betas, 0).sqrt()
    first, last = abar_sqrt[0].clone(), abar_sqrt[-1].clone()
    abar_sqrt = (abar_sqrt - last) * first / (first - last)
    abar = abar_sqrt**2
    alphas = torch.cat([abar[:1], abar[1:] / abar[:-1]])
    return 1.0 - alphas


def alphas_cumprod(schedule: str, num_train_timesteps: int, zero_terminal_snr: bool = False) -> torch.Tensor:
    """float64 ``abar_k = prod_{i<=k} (1 - beta_i)`` for k = 0..N-1."""
    betas = ddpm_betas(schedule, num_train_timesteps)
    if zero_terminal_snr:
        betas = rescale_zero_terminal_snr(betas)
    return torch.cumprod(1.0 - betas, 0)


def shift_time(u: torch.Tensor | float, shift: float) -> torch.Tensor | float:
    """SD3's resolution shift of flow time: ``shift u / (1 + (shift - 1) u)`` (identity at shift 1)."""
    if shift == 1.0:
        return u
    return shift * u / (1 + (shift - 1) * u)


def shift_for_resolution(num_tokens: int, base_num_tokens: int) -> float:
    """SD3's timestep shift for an input of ``num_tokens`` when ``shift = 1`` suits ``base_num_tokens``:
    ``sqrt(num_tokens / base_num_tokens)`` (Esser et al. 2024, Sec. 5.3.2: keep the per-token SNR)."""
    if num_tokens < 1 or base_num_tokens < 1:
        raise ValueError(f"token counts must be positive, got {num_tokens} and {base_num_tokens}")
    return math.sqrt(num_tokens / base_num_tokens)
