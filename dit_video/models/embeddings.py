"""Embeddings: tubelet patches, timesteps, labels, captions, sincos and 3D rotary positions."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding ``[cos | sin]`` of (possibly fractional) timesteps, any shape -> ``[..., dim]``."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[..., None] * freqs
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb


def sincos_1d(dim: int, pos: np.ndarray) -> np.ndarray:
    """``[len(pos), dim]`` table ``[sin | cos]`` (the MAE/DiT convention), float64."""
    omega = 1.0 / 10000 ** (np.arange(dim // 2, dtype=np.float64) / (dim / 2.0))
    out = np.einsum("m,d->md", pos.reshape(-1).astype(np.float64), omega)
    return np.concatenate([np.sin(out), np.cos(out)], axis=1)


def sincos_2d(dim: int, grid_hw: tuple[int, int], base_size: int | None = None,
              interpolation_scale: float = 1.0) -> np.ndarray:
    """``[h*w, dim]`` 2D table: first half encodes w (columns), second half h (rows).

    ``base_size``/``interpolation_scale`` follow diffusers' PatchEmbed, so a grid larger than
    the one the model was trained on is interpolated rather than extrapolated.
    """
    gh, gw = grid_hw
    base = base_size if base_size is not None else gh
    ys = np.arange(gh, dtype=np.float64) / (gh / base) / interpolation_scale
    xs = np.arange(gw, dtype=np.float64) / (gw / base) / interpolation_scale
    grid_x, grid_y = np.meshgrid(xs, ys)  # [gh, gw] each; x varies along columns
    return np.concatenate([sincos_1d(dim // 2, grid_x), sincos_1d(dim // 2, grid_y)], axis=1)


def rope3d_split(head_dim: int) -> tuple[int, int, int]:
    """How the ``head_dim/2`` rotation pairs are shared between the t, h and w axes."""
    n = head_dim // 2
    nh = nw = n // 3
    return n - nh - nw, nh, nw


def rope3d_tables(grid: tuple[int, int, int], head_dim: int, theta: float = 10000.0,
                  device: torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin tables ``[T, S, head_dim/2]`` (fp32) for a ``(T, h, w)`` token grid.

    Each axis gets its own band of pairs (``rope3d_split``) with frequencies
    ``theta^(-j / n_axis)``, so the rotation angle of pair j depends on one axis only.
    """
    t, h, w = grid
    angles = []
    nt, nh, nw = rope3d_split(head_dim)
    pos_t = torch.arange(t, dtype=torch.float64, device=device)[:, None, None].expand(t, h, w)
    pos_h = torch.arange(h, dtype=torch.float64, device=device)[None, :, None].expand(t, h, w)
    pos_w = torch.arange(w, dtype=torch.float64, device=device)[None, None, :].expand(t, h, w)
    for pos, n in ((pos_t, nt), (pos_h, nh), (pos_w, nw)):
        if n == 0:
            continue
        freqs = theta ** (-torch.arange(n, dtype=torch.float64, device=device) / n)
        angles.append(pos[..., None] * freqs)
    ang = torch.cat(angles, dim=-1).reshape(t, h * w, head_dim // 2)
    return ang.cos().float(), ang.sin().float()


class PatchEmbed3D(nn.Module):
    """Non-overlapping tubelets ``(pt, ph, pw)``: ``[B, C, T, H, W] -> [B, T', S, D]``.

    A linear map of each flattened tubelet (channel-major, like a Conv3d weight), so a
    Conv2d/Conv3d patch embedding converts by reshaping its weight.
    """

    def __init__(self, in_channels: int, hidden: int, patch: tuple[int, int, int]):
        super().__init__()
        self.patch = tuple(patch)
        pt, ph, pw = self.patch
        self.proj = nn.Linear(in_channels * pt * ph * pw, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, t, h, w = x.shape
        pt, ph, pw = self.patch
        x = x.reshape(b, c, t // pt, pt, h // ph, ph, w // pw, pw)
        x = x.permute(0, 2, 4, 6, 1, 3, 5, 7).reshape(b, t // pt, (h // ph) * (w // pw), c * pt * ph * pw)
        return self.proj(x)


def unpatchify(x: torch.Tensor, c: int, grid: tuple[int, int, int], patch: tuple[int, int, int]) -> torch.Tensor:
    """``[B, T', S, pt*ph*pw*c] -> [B, c, T, H, W]`` (per-patch order: pt, ph, pw, c as DiT)."""
    b = x.shape[0]
    t, h, w = grid
    pt, ph, pw = patch
    x = x.reshape(b, t, h, w, pt, ph, pw, c)
    return x.permute(0, 7, 1, 4, 2, 5, 3, 6).reshape(b, c, t * pt, h * ph, w * pw)


class TimestepEmbedder(nn.Module):
    """Sinusoidal features of t, then an MLP (DiT / diffusers TimestepEmbedding)."""

    def __init__(self, hidden: int, freq_dim: int = 256):
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        emb = timestep_embedding(t, self.freq_dim).to(self.mlp[0].weight.dtype)
        return self.mlp(emb)


class LabelEmbedder(nn.Module):
    """Class labels -> vectors; index ``num_classes`` is the null class used for CFG."""

    def __init__(self, num_classes: int, hidden: int):
        super().__init__()
        self.num_classes = num_classes
        self.table = nn.Embedding(num_classes + 1, hidden)

    def forward(self, labels: torch.Tensor) -> torch.Tensor:
        return self.table(labels)


class CaptionProjection(nn.Module):
    """Text-encoder token states -> model width (PixArt: linear, GELU-tanh, linear)."""

    def __init__(self, in_dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(in_dim, hidden)
        self.fc2 = nn.Linear(hidden, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))
