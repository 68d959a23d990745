"""VAE adapters: pixels <-> latents for the diffusion model.

Contract: ``encode(video [B, C, T, H, W] in [-1, 1]) -> latents [B, c, T/td, H/sd, W/sd]`` already
multiplied by ``scaling_factor`` (after subtracting ``shift_factor``), so that they are roughly unit
variance, and ``decode`` inverts it. ``IdentityVAE`` is pixel space (the demo's default).
``DiffusersVAE`` wraps a diffusers autoencoder from a local directory: image VAEs
(``AutoencoderKL``) run per frame, video VAEs (``AutoencoderKLCogVideoX``, ``AutoencoderKLHunyuanVideo``,
... anything whose ``encode(x).latent_dist`` / ``decode(z).sample`` take [B, C, T, H, W]) run on the clip.
"""

from __future__ import annotations

import json
import os

import torch
import torch.nn as nn

from .paths import require_local_dir


class VAE(nn.Module):
    """Interface; subclasses set the attributes and implement ``encode``/``decode``."""

    in_channels: int = 3
    latent_channels: int = 3
    scaling_factor: float = 1.0
    shift_factor: float = 0.0
    temporal_downsample: int = 1
    spatial_downsample: int = 1

    def encode(self, video: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def encode_posterior(self, video: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mean, std)`` of the latent posterior, normalised as :meth:`encode` normalises: ``mean`` is what
        ``encode`` returns for a deterministic VAE, ``mean + std * noise`` a posterior sample."""
        z = self.encode(video)
        return z, torch.zeros_like(z)

    def latent_shape(self, video_shape) -> tuple[int, int, int, int, int]:
        """[B, C, T, H, W] of a video -> the shape of its latents."""
        b, _, t, h, w = video_shape
        td, sd = self.temporal_downsample, self.spatial_downsample
        t_lat = t if td == 1 else 1 + (t - 1) // td  # causal video VAEs keep the first frame
        return b, self.latent_channels, t_lat, h // sd, w // sd

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        return self.encode(video)


def _check_video(x: torch.Tensor, channels: int, what: str) -> None:
    if x.dim() != 5 or x.shape[1] != channels:
        raise ValueError(f"{what} must be [B, {channels}, T, H, W], got shape {tuple(x.shape)}")


class IdentityVAE(VAE):
    """Pixel space: latents are the video itself (scaling factor 1)."""

    def __init__(self, channels: int = 3):
        super().__init__()
        self.in_channels = self.latent_channels = channels

    def encode(self, video: torch.Tensor) -> torch.Tensor:
        _check_video(video, self.in_channels, "video")
        return video

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        _check_video(latents, self.latent_channels, "latents")
        return latents


class DiffusersVAE(VAE):
    """A diffusers autoencoder; image VAEs are applied frame by frame, ``frame_chunk`` frames at a time.

    ``sample_posterior=False`` encodes to the posterior mode (deterministic); True samples it.
    """

    def __init__(self, vae: nn.Module, *, per_frame: bool | None = None, frame_chunk: int = 16,
                 sample_posterior: bool = False, scaling_factor: float | None = None,
                 shift_factor: float | None = None):
        super().__init__()
        self.vae = vae.eval().requires_grad_(False)
        cfg = vae.config
        get = cfg.get if hasattr(cfg, "get") else lambda k, d=None: getattr(cfg, k, d)
        self.per_frame = (type(vae).__name__ == "AutoencoderKL") if per_frame is None else per_frame
        self.frame_chunk = frame_chunk
        self.sample_posterior = sample_posterior
        self.in_channels = int(get("in_channels", 3))
        self.latent_channels = int(get("latent_channels", 4))
        self.scaling_factor = float(scaling_factor if scaling_factor is not None else get("scaling_factor", 1.0) or 1.0)
        self.shift_factor = float(shift_factor if shift_factor is not None else get("shift_factor", 0.0) or 0.0)
        blocks = get("block_out_channels", None) or [0]
        self.spatial_downsample = int(get("spatial_compression_ratio", None) or 2 ** (len(blocks) - 1))
        self.temporal_downsample = 1 if self.per_frame else int(get("temporal_compression_ratio", None) or 1)
        # per-channel normalisation (Wan-style configs: latents_mean / latents_std instead of a scalar factor)
        mean, std = get("latents_mean", None), get("latents_std", None)
        self.channel_stats = None
        if mean is not None and std is not None:
            self.channel_stats = (torch.tensor(mean, dtype=torch.float32), torch.tensor(std, dtype=torch.float32))
            if len(mean) != self.latent_channels or len(std) != self.latent_channels:
                raise ValueError(f"latents_mean/latents_std have {len(mean)}/{len(std)} entries, "
                                 f"expected latent_channels={self.latent_channels}")

    @classmethod
    def from_local(cls, path: str | os.PathLike, *, subfolder: str | None = None,
                   dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu", **kwargs) -> DiffusersVAE:
        """Load the autoencoder saved in ``path`` (``save_pretrained`` layout; ``subfolder="vae"`` for a
        pipeline). Its class comes from ``config.json``'s ``_class_name`` (default ``AutoencoderKL``)."""
        root = require_local_dir(path, "DiffusersVAE.from_local", needs="")
        d = require_local_dir(root / subfolder if subfolder else root, "DiffusersVAE.from_local")
        import diffusers

        name = json.loads((d / "config.json").read_text()).get("_class_name", "AutoencoderKL")
        klass = getattr(diffusers, name, None)
        if klass is None or not name.startswith("Autoencoder"):
            raise ValueError(f"{d / 'config.json'} names _class_name={name!r}, not a diffusers autoencoder "
                             "(expected AutoencoderKL or a diffusers video VAE)")
        vae = klass.from_pretrained(str(root), subfolder=subfolder, local_files_only=True, torch_dtype=dtype)
        return cls(vae.to(device), **kwargs)

    def _stats(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        shape = (1, -1) + (1,) * (z.dim() - 2)
        mean, std = self.channel_stats
        return mean.to(z.device).reshape(shape), std.to(z.device).reshape(shape)

    def normalize(self, z: torch.Tensor) -> torch.Tensor:
        """Raw VAE latents -> diffusion latents: ``(z - shift) * scale`` (or per-channel ``(z - mean) / std``)."""
        if self.channel_stats is not None:
            mean, std = self._stats(z)
            return (z - mean) / std * self.scaling_factor
        return (z - self.shift_factor) * self.scaling_factor

    def denormalize(self, z: torch.Tensor) -> torch.Tensor:
        """The inverse of :meth:`normalize`."""
        if self.channel_stats is not None:
            mean, std = self._stats(z)
            return z / self.scaling_factor * std + mean
        return z / self.scaling_factor + self.shift_factor

    @property
    def dtype(self) -> torch.dtype:
        return next(self.vae.parameters()).dtype

    def _frames(self, x: torch.Tensor, fn) -> torch.Tensor:
        """Apply ``fn`` ([N, C, H, W] -> [N, C', H', W']) to every frame of ``x`` [B, C, T, H, W]."""
        b, c, t, h, w = x.shape
        frames = x.transpose(1, 2).reshape(b * t, c, h, w)
        out = torch.cat([fn(frames[i:i + self.frame_chunk]) for i in range(0, b * t, self.frame_chunk)])
        return out.reshape(b, t, *out.shape[1:]).transpose(1, 2)

    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        dist = self.vae.encode(x).latent_dist
        return dist.sample() if self.sample_posterior else dist.mode()

    def _decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.vae.decode(z).sample

    @torch.no_grad()
    def encode(self, video: torch.Tensor) -> torch.Tensor:
        _check_video(video, self.in_channels, "video")
        x = video.to(self.dtype)
        z = self._frames(x, self._encode) if self.per_frame else self._encode(x)
        return self.normalize(z.float()).to(video.dtype)

    def _scale(self, z: torch.Tensor) -> torch.Tensor | float:
        """The factor :meth:`normalize` multiplies a latent difference by."""
        if self.channel_stats is not None:
            _, std = self._stats(z)
            return self.scaling_factor / std
        return self.scaling_factor

    @torch.no_grad()
    def encode_posterior(self, video: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        _check_video(video, self.in_channels, "video")
        x = video.to(self.dtype)

        def both(frames: torch.Tensor) -> torch.Tensor:
            dist = self.vae.encode(frames).latent_dist
            return torch.cat([dist.mean, dist.std], dim=1)

        z = self._frames(x, both) if self.per_frame else both(x)
        mean, std = z.float().chunk(2, dim=1)
        return self.normalize(mean).to(video.dtype), (std * self._scale(mean)).to(video.dtype)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        _check_video(latents, self.latent_channels, "latents")
        z = self.denormalize(latents.float()).to(self.dtype)
        x = self._frames(z, self._decode) if self.per_frame else self._decode(z)
        return x.to(latents.dtype)
