"""Gaussian diffusion processes and their training objectives.

Both processes write ``x_t = alpha(t) x0 + sigma(t) eps`` and differ in ``alpha``, ``sigma``, the
timestep grid and the model's prediction target:

- :class:`FlowMatching` (rectified flow): ``alpha = 1 - u``, ``sigma = u``, ``t = u * N``;
  target ``eps - x0`` (velocity); with ``prediction="x0"`` the network outputs ``x0`` and
  :meth:`Diffusion.prediction_to_target` turns that into the velocity ``(x_t - out) / max(u, x0_min_u)``.
- :class:`GaussianDiffusion` (DDPM): ``alpha = sqrt(abar_k)``, ``sigma = sqrt(1 - abar_k)``,
  ``t = k``; target ``eps`` or ``v = alpha eps - sigma x0`` (Salimans & Ho 2022).

``t`` is always on the model's timestep scale (0..num_train_timesteps), a float tensor of shape
``[B]`` (one level per clip) or ``[B, T]`` (one per frame). Sampling (CFG, continuation,
sliding-window extension) lives in :mod:`dit_video.diffusion.sampling`; the methods here forward.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .config import DiffusionConfig
from .schedules import alphas_cumprod, shift_time
from .timesteps import conditioning_mask, randn, sample_unit_time

ModelFn = Callable[..., torch.Tensor]  # model_fn(x_t, t, cond_mask=None) -> prediction like x_t


def _expand(c: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Per-clip ``[B]`` or per-frame ``[B, T]`` coefficients -> broadcastable against ``[B, C, T, ...]``."""
    if c.dim() == 1:
        return c.reshape(-1, *([1] * (x.dim() - 1)))
    return c.reshape(c.shape[0], 1, c.shape[1], *([1] * (x.dim() - 3)))


class Diffusion:
    """Base class: the shared training loss and sampling entry points."""

    objective: str

    def __init__(self, config: DiffusionConfig):
        self.config = config.validate()
        self.objective = config.objective
        self.num_train_timesteps = config.num_train_timesteps

    # ---------------------------------------------------------------- the process (subclasses)
    def alpha_sigma(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(alpha, sigma)`` (fp32, same shape as ``t``) at model timesteps ``t``."""
        raise NotImplementedError

    def timesteps_from_unit(self, u: torch.Tensor) -> torch.Tensor:
        """Map training times ``u`` in (0, 1) to model timesteps."""
        raise NotImplementedError

    def sampling_grid(self, steps: int) -> list[tuple[float, float, float]]:
        """``steps + 1`` points ``(t_model, alpha, sigma)`` from noise to clean (last sigma = 0)."""
        raise NotImplementedError

    # ---------------------------------------------------------------- shared algebra
    def snr(self, t: torch.Tensor) -> torch.Tensor:
        a, s = self.alpha_sigma(t)
        return a**2 / s.clamp_min(1e-12) ** 2

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """``alpha(t) x0 + sigma(t) noise`` with ``t`` of shape [B] or [B, T]."""
        a, s = self.alpha_sigma(t)
        return _expand(a, x0).to(x0.dtype) * x0 + _expand(s, x0).to(x0.dtype) * noise

    def target(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """What the model is trained to predict at ``x_t = add_noise(x0, noise, t)`` (each objective's own)."""
        raise NotImplementedError

    def _invert(self, x: torch.Tensor, p: torch.Tensor, a: torch.Tensor, s: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x0, eps)`` from ``x_t`` and a target-space prediction ``p`` (each objective's own algebra)."""
        raise NotImplementedError

    def _min_snr_weight(self, snr: torch.Tensor, clipped: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        """The loss weight that makes the objective's loss ``min(SNR, gamma) * |x0_hat - x0|^2``."""
        raise NotImplementedError

    def prediction_to_target(self, x_t: torch.Tensor, t: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """The network's output in the space of :meth:`target` (identity unless flow with ``prediction="x0"``)."""
        if self.config.prediction == "velocity":
            return out
        dt = torch.promote_types(x_t.dtype, torch.float32)  # at least fp32 math
        u = _expand((t.to(dt) / self.num_train_timesteps).clamp_min(self.config.x0_min_u), x_t)
        return ((x_t.to(dt) - out.to(dt)) / u).to(out.dtype)

    def x0_eps(self, x_t: torch.Tensor, t: torch.Tensor, pred: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Invert a network output to ``(x0_hat, eps_hat)`` at ``x_t`` (fp32 math, result in x_t's dtype)."""
        a, s = (_expand(c, x_t) for c in self.alpha_sigma(t))
        x0, eps = self._invert(x_t.float(), self.prediction_to_target(x_t, t, pred).float(), a, s)
        return x0.to(x_t.dtype), eps.to(x_t.dtype)

    def loss_weight(self, t: torch.Tensor) -> torch.Tensor | None:
        """Min-SNR-gamma weights (Hang et al. 2023) in x0 space, or None when off.

        ``w * |pred - target|^2 == min(SNR, gamma) * |x0_hat - x0|^2`` for every objective:
        eps ``min(SNR, g) / SNR``, v ``min(SNR, g) / (SNR + 1)``, flow ``min(SNR, g) * u^2``.
        """
        gamma = self.config.min_snr_gamma
        if gamma is None:
            return None
        snr = self.snr(t)
        return self._min_snr_weight(snr, snr.clamp(max=gamma), self.alpha_sigma(t)[1])

    # ---------------------------------------------------------------- training
    def sample_timesteps(self, shape: tuple[int, ...], generator: torch.Generator | None = None,
                         device: torch.device | str = "cpu") -> torch.Tensor:
        """Training timesteps of ``shape`` ([B] or [B, T]) on the model scale."""
        c = self.config
        u = sample_unit_time(shape, c.timestep_sampling, c.logit_mean, c.logit_std, generator, device, c.mode_scale,
                             c.uniform_share)
        return self.timesteps_from_unit(u)

    def draw_cond_mask(self, global_batch: int, frames: int, generator: torch.Generator | None,
                       device) -> torch.Tensor | None:
        """The conditioning mask bool ``[global_batch, frames]`` (None when ``cond_frames == 0``): for a caller
        that needs to know which clips get given frames before the loss (the trainer's caption dropout)."""
        c = self.config
        return conditioning_mask(global_batch, frames, c.cond_frames, c.cond_prob, generator, device) \
            if c.cond_frames > 0 else None

    def training_loss(self, model_fn: ModelFn, x0: torch.Tensor, generator: torch.Generator | None = None,
                      batch_slice: tuple[int, int] | None = None,
                      cond_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, float]]:
        """One diffusion loss on clean latents ``x0`` [B, C, T, H, W].

        Draws t (per clip, or per frame with ``per_frame_timesteps``), the noise and the
        conditioning mask (first ``cond_frames`` frames clean with probability ``cond_prob``;
        those frames enter ``x_t`` as ``x0`` exactly, at timestep 0, and leave the loss), calls
        ``model_fn(x_t, t, cond_mask=mask)`` (``mask`` None when ``cond_frames == 0``) and returns
        the (min-SNR-weighted) MSE against the objective's target, averaged over noised frames,
        plus floats for logging: ``loss``, ``mse`` (unweighted), ``t_mean`` (mean model timestep
        of noised frames / N), ``cond_frac`` (fraction of clips with clean frames).

        ``batch_slice=(global_batch, offset)``: ``x0`` is rows ``offset : offset + B`` of a global batch
        split over data-parallel ranks; t, noise and mask are drawn for the whole global batch (the
        generator is the same on every rank) and sliced, so every clip gets the same randomness
        whatever the number of ranks (and ranks that share a clip get identical draws). ``cond_mask``: the
        global batch's mask [global_batch, T] from :meth:`draw_cond_mask`, used instead of drawing one here.

        The mean over noised frames is the global batch's: this rank's sum divided by its share
        (B / global_batch) of the global number of noised frames, so the mean of the ranks' losses (the
        data-parallel gradient) is one process's loss whatever the split, even when the ranks hold
        different numbers of clips with given frames.
        """
        if x0.dim() != 5:
            raise ValueError(f"x0 must be [B, C, T, H, W], got shape {tuple(x0.shape)}")
        c = self.config
        b, _, nt = x0.shape[:3]
        dev = x0.device
        gb, lo = (b, 0) if batch_slice is None else batch_slice
        if not 0 <= lo <= gb - b:
            raise ValueError(f"batch_slice {batch_slice} does not hold this rank's {b} clips")
        rows = slice(lo, lo + b)
        t = self.sample_timesteps((gb, nt) if c.per_frame_timesteps else (gb,), generator, dev)[rows]
        noise = randn((gb, *x0.shape[1:]), generator, dev, x0.dtype)[rows]
        if cond_mask is not None:
            if cond_mask.shape != (gb, nt) or c.cond_frames == 0:
                raise ValueError(f"cond_mask must be the global batch's [{gb}, T={nt}] from draw_cond_mask "
                                 f"(cond_frames > 0), got {tuple(cond_mask.shape)} with cond_frames={c.cond_frames}")
            full = cond_mask.to(dev)
        else:
            full = self.draw_cond_mask(gb, nt, generator, dev)
        mask = None if full is None else full[rows]

        x_t = self.add_noise(x0, noise, t)
        if mask is not None:
            x_t = torch.where(mask[:, None, :, None, None], x0, x_t)
            if t.dim() == 2:
                t = torch.where(mask, torch.zeros_like(t), t)
        pred = model_fn(x_t, t, cond_mask=mask)
        if pred.shape != x0.shape:
            raise ValueError(f"model_fn returned shape {tuple(pred.shape)}, expected x0's {tuple(x0.shape)} "
                             "(a learn_sigma model's extra channels must be dropped by the caller)")
        pred = self.prediction_to_target(x_t, t, pred)
        err = (pred.float() - self.target(x0, noise, t).float()).pow(2).mean(dim=(1, 3, 4))  # [B, T]
        valid = torch.ones_like(err, dtype=torch.bool) if mask is None else ~mask
        w = self.loss_weight(t)
        weighted = err if w is None else err * (w[:, None] if w.dim() == 1 else w)
        # this rank's share of the global batch's noised frames (b * nt with no given frames)
        denom = (b * nt if full is None else (~full).sum().clamp_min(1) * b / gb)
        # where, not a product: whatever the model predicts on clean frames (even inf) cannot reach the loss
        loss = torch.where(valid, weighted, 0.0).sum() / denom
        t_frames = (t[:, None].expand(b, nt) if t.dim() == 1 else t).float()
        with torch.no_grad():  # one device sync for all the logged scalars
            stats = torch.stack([loss.detach(), torch.where(valid, err, 0.0).sum() / denom,
                                 torch.where(valid, t_frames, 0.0).sum() / denom / self.num_train_timesteps,
                                 mask.any(1).float().mean() if mask is not None else torch.zeros((), device=dev)])
        logs = dict(zip(("loss", "mse", "t_mean", "cond_frac"), stats.tolist()))
        return loss, logs

    # ---------------------------------------------------------------- diagnostics
    @torch.no_grad()
    def x0_at_pure_noise(self, model_fn: ModelFn, shape, draws: int = 8, generator: torch.Generator | None = None,
                         device: torch.device | str = "cpu") -> torch.Tensor:
        """The model's x0 prediction at the noisiest training timestep, averaged over ``draws`` noises, [B, ...].

        Where the sampler starts, ``x_t`` is (almost) pure noise and the best x0 prediction is the data's
        conditional mean ``E[x0 | condition]``: whatever the condition decides about the layout of the clip
        (where the object is in each frame: its motion) must be there. ``model_fn(x_t, t)`` is called with
        the batch ``shape`` [B, C, T, H, W] once per draw; the mean is in fp32.
        """
        t_max = float(self.sampling_grid(1)[0][0])  # flow: N (u = 1); DDPM: the last step N - 1
        total = torch.zeros(shape, dtype=torch.float32, device=device)
        for _ in range(draws):
            x = randn(shape, generator, device)
            t = torch.full((shape[0],), t_max, device=device)
            total += self.x0_eps(x, t, model_fn(x, t))[0].float()
        return total / draws

    # ---------------------------------------------------------------- sampling
    @property
    def default_sampler(self) -> str:
        from .samplers import DEFAULT_SAMPLER

        return DEFAULT_SAMPLER[self.objective]

    def sample(self, model_fn: ModelFn, shape, **kwargs) -> torch.Tensor:
        """See :func:`dit_video.diffusion.sampling.sample`."""
        from .sampling import sample

        return sample(self, model_fn, shape, **kwargs)

    def sample_long(self, model_fn: ModelFn, shape, **kwargs) -> torch.Tensor:
        """See :func:`dit_video.diffusion.sampling.sample_long`."""
        from .sampling import sample_long

        return sample_long(self, model_fn, shape, **kwargs)


class FlowMatching(Diffusion):
    """Rectified flow: ``x_u = (1 - u) x0 + u eps``, model timestep ``u * N``, target ``eps - x0``."""

    def alpha_sigma(self, t):
        u = t.float() / self.num_train_timesteps
        return 1.0 - u, u

    def timesteps_from_unit(self, u):
        return shift_time(u, self.config.shift) * self.num_train_timesteps

    def target(self, x0, noise, t):
        return noise - x0  # the velocity

    def _invert(self, x, p, a, s):  # x = (1-u) x0 + u eps, p = eps - x0
        return x - s * p, x + a * p

    def _min_snr_weight(self, snr, clipped, s):
        return clipped * s**2

    def sampling_grid(self, steps):
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        n = self.num_train_timesteps
        us = [float(shift_time(1.0 - i / steps, self.config.shift)) for i in range(steps + 1)]
        us[-1] = 0.0
        return [(u * n, 1.0 - u, u) for u in us]


class GaussianDiffusion(Diffusion):
    """DDPM over ``num_train_timesteps`` discrete steps; :class:`EpsDiffusion` and :class:`VDiffusion` say what
    the model predicts."""

    def __init__(self, config: DiffusionConfig):
        super().__init__(config)
        self.alphas_cumprod = alphas_cumprod(config.schedule, config.num_train_timesteps, config.zero_terminal_snr)
        self._tables: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    def alpha_sigma(self, t):
        if t.device not in self._tables:  # fp32 sqrt tables per device, computed in fp64 once
            abar = self.alphas_cumprod
            self._tables[t.device] = (abar.sqrt().float().to(t.device), (1 - abar).sqrt().float().to(t.device))
        a, s = self._tables[t.device]
        k = t.round().long().clamp(0, self.num_train_timesteps - 1)
        return a[k], s[k]

    def timesteps_from_unit(self, u):
        n = self.num_train_timesteps
        return (u * n).floor().clamp(0, n - 1)

    def sampling_grid(self, steps):
        """"Trailing" spacing (Lin et al. 2024): starts at k = N-1, then a final step to clean."""
        n = self.num_train_timesteps
        if not 1 <= steps <= n:
            raise ValueError(f"steps must be in [1, {n}] for a {n}-step DDPM, got {steps}")
        ks = sorted({round(n - i * n / steps) - 1 for i in range(steps)}, reverse=True)
        abar = self.alphas_cumprod
        grid = [(float(k), float(abar[k].sqrt()), float((1 - abar[k]).sqrt())) for k in ks]
        return grid + [(0.0, 1.0, 0.0)]


class EpsDiffusion(GaussianDiffusion):
    """DDPM, the model predicts the noise."""

    def target(self, x0, noise, t):
        return noise

    def _invert(self, x, p, a, s):
        return (x - s * p) / a.clamp_min(1e-12), p

    def _min_snr_weight(self, snr, clipped, s):
        return clipped / snr.clamp_min(1e-12)


class VDiffusion(GaussianDiffusion):
    """DDPM, the model predicts ``v = alpha eps - sigma x0`` (Salimans & Ho 2022)."""

    def target(self, x0, noise, t):
        a, s = self.alpha_sigma(t)
        return _expand(a, x0).to(x0.dtype) * noise - _expand(s, x0).to(x0.dtype) * x0

    def _invert(self, x, p, a, s):  # a^2 + s^2 = 1
        return a * x - s * p, s * x + a * p

    def _min_snr_weight(self, snr, clipped, s):
        return clipped / (snr + 1)


OBJECTIVE_CLASSES: dict[str, type[Diffusion]] = {"flow": FlowMatching, "eps": EpsDiffusion, "v": VDiffusion}


def build_diffusion(config: DiffusionConfig | None = None, **overrides) -> Diffusion:
    """The process for ``config.objective``: :class:`FlowMatching`, :class:`EpsDiffusion` or :class:`VDiffusion`."""
    if config is None:
        config = DiffusionConfig()
    if not isinstance(config, DiffusionConfig):  # an omegaconf DictConfig or a plain mapping
        from omegaconf import OmegaConf

        if OmegaConf.is_config(config):
            config = OmegaConf.to_object(config)
        if not isinstance(config, DiffusionConfig):
            config = DiffusionConfig(**dict(config))
    if overrides:
        import dataclasses

        config = dataclasses.replace(config, **overrides)
    return OBJECTIVE_CLASSES[config.objective](config)
