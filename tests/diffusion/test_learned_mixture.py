"""End to end in 1-D: a small network trained with ``training_loss`` and sampled with ``sample`` recovers
the Gaussian mixture (flow objective, logit-normal density of mean 0). Ties the loss, the timestep scale and the
sampler."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch

from dit_video.diffusion import DiffusionConfig, build_diffusion

sys.path.insert(0, str(Path(__file__).parent))
from mixture import MEANS, STDS, WEIGHTS, ks_statistic  # noqa: E402


class Denoiser(torch.nn.Module):
    """MLP on (x, Fourier features of t / N)."""

    def __init__(self, n: int):
        super().__init__()
        self.n = n
        self.f = torch.nn.Sequential(torch.nn.Linear(17, 128), torch.nn.SiLU(), torch.nn.Linear(128, 128),
                                     torch.nn.SiLU(), torch.nn.Linear(128, 1))

    def forward(self, x, t, cond_mask=None):
        b = x.shape[0]
        tt = t.reshape(b, 1).float() / self.n * math.pi / 2 * 2.0 ** torch.arange(8)
        return self.f(torch.cat([x.reshape(b, 1), tt.sin(), tt.cos()], 1)).reshape(x.shape)


@pytest.mark.slow
def test_trained_flow_model_recovers_the_mixture():
    torch.manual_seed(0)
    # the image-style density (mean 0): a 1-D mixture's detail is decided at low noise. The video default
    # (logit_mean=1.0, leaning to noise) reaches KS 0.090 here with the same budget (measured), just above the bar
    d = build_diffusion(DiffusionConfig(objective="flow", logit_mean=0.0))
    net = Denoiser(d.num_train_timesteps)
    steps = 800
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    g = torch.Generator().manual_seed(0)
    for _ in range(steps):
        comp = torch.multinomial(WEIGHTS.float(), 256, replacement=True, generator=g)
        x0 = (MEANS[comp] + STDS[comp] * torch.randn(256, generator=g, dtype=torch.float64)).float()
        loss, _ = d.training_loss(net, x0.reshape(-1, 1, 1, 1, 1), generator=g)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    with torch.no_grad():
        x = d.sample(net, (4000, 1, 1, 1, 1), steps=30, generator=torch.Generator().manual_seed(1))
    # a single Gaussian with the mixture's mean and variance is at KS ~0.24; the exact sampler at ~0.01
    assert ks_statistic(x) < 0.08
    assert abs(float((x < 0).float().mean()) - float(WEIGHTS[0])) < 0.04
