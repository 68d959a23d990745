"""Sampling: classifier-free guidance, continuation from given frames, sliding-window extension.

``sample`` integrates from pure noise with one of :data:`~dit_video.diffusion.samplers.SAMPLERS`.
Continuation: the first k frames of ``cond_video`` are written into the state before every
model call, announced with ``cond_mask`` (the model sees them at timestep 0), and written into
the output at the end, so they come back bit for bit. ``sample_long`` extends past the
training length: each new window is conditioned on the previous window's last ``overlap`` frames.
"""

from __future__ import annotations

import torch

from .guidance import guided
from .objectives import Diffusion, ModelFn
from .samplers import check_sampler
from .timesteps import randn


def _device(device, cond_video, generator):
    if device is not None:
        return torch.device(device)
    if cond_video is not None:
        return cond_video.device
    if generator is not None:
        return generator.device
    return torch.device("cpu")


@torch.no_grad()
def sample(diffusion: Diffusion, model_fn: ModelFn, shape, *, sampler: str | None = None, steps: int = 50,
           generator: torch.Generator | None = None, cond_video: torch.Tensor | None = None, cond_frames: int = 0,
           guidance_scale: float = 1.0, uncond_model_fn: ModelFn | None = None, progress: bool = False,
           device: torch.device | str | None = None, dtype: torch.dtype | None = None,
           noise: torch.Tensor | None = None, guidance_interval: tuple[float, float] | None = None) -> torch.Tensor:
    """Draw samples of ``shape`` [B, C, T, H, W].

    - ``sampler``: a name in ``SAMPLERS`` valid for the objective (None: ``euler`` for flow,
      ``ddim`` for eps/v); ``ValueError`` for an unknown name or a sampler/objective mismatch.
    - ``guidance_scale`` s != 1 needs ``uncond_model_fn``: ``pred = uncond + s (cond - uncond)``;
      at s == 1 only ``model_fn`` runs and its prediction is used as is. ``guidance_interval`` (lo, hi):
      guide only at noise levels ``t / num_train_timesteps`` in [lo, hi] (flow: ``u``), elsewhere one
      conditional call (Kynkaanniemi et al. 2024, "Applying guidance in a limited interval"); None: everywhere.
    - ``cond_video`` [B or 1, C, k', H, W]: its first ``cond_frames`` frames (all k' when 0) are
      the output's first frames, exactly; the model gets ``cond_mask`` [B, T] (True on them).
    - ``device``: default ``cond_video``'s, else the generator's, else CPU (pass the model's device
      when its generator lives elsewhere); ``dtype`` of the sampler state: default ``cond_video``'s
      (so that the given frames come back bit-exact), else float32; ``noise`` replaces the initial draw.
    """
    spec = check_sampler(sampler or diffusion.default_sampler, diffusion.objective)
    if len(shape) != 5:
        raise ValueError(f"shape must be [B, C, T, H, W], got {tuple(shape)}")
    if guidance_scale != 1.0 and uncond_model_fn is None:
        raise ValueError(f"guidance_scale={guidance_scale} needs uncond_model_fn (the unconditional model)")
    if guidance_interval is not None:
        lo, hi = (float(v) for v in guidance_interval)
        if not 0.0 <= lo <= hi <= 1.0:
            raise ValueError(f"guidance_interval must be (lo, hi) with 0 <= lo <= hi <= 1 (noise levels), "
                             f"got {tuple(guidance_interval)}")
    b, c, t_len, h, w = shape
    dev = _device(device, cond_video, generator)
    if dtype is None:
        dtype = cond_video.dtype if cond_video is not None and cond_video.is_floating_point() else torch.float32
    grid = diffusion.sampling_grid(steps)

    cond_mask, cond_full = None, None
    if cond_video is not None:
        k = cond_frames or cond_video.shape[2]
        if cond_video.dim() != 5 or cond_video.shape[1] != c or tuple(cond_video.shape[3:]) != (h, w) \
                or cond_video.shape[0] not in (1, b) or k > cond_video.shape[2]:
            raise ValueError(f"cond_video must be [B or 1, C, >= cond_frames, H, W] matching shape {tuple(shape)} "
                             f"with cond_frames={cond_frames}, got {tuple(cond_video.shape)}")
        if not 0 < k < t_len:
            raise ValueError(f"cond_frames={k} must be in [1, T={t_len}) (at least one frame has to be generated)")
        cond_full = torch.zeros(shape, device=dev, dtype=dtype)
        cond_full[:, :, :k] = cond_video[:, :, :k].to(device=dev, dtype=dtype)
        cond_mask = torch.zeros(b, t_len, dtype=torch.bool, device=dev)
        cond_mask[:, :k] = True
    elif cond_frames:
        raise ValueError(f"cond_frames={cond_frames} given without cond_video")
    frame_mask = None if cond_mask is None else cond_mask[:, None, :, None, None]

    predict = guided(model_fn, uncond_model_fn, guidance_scale)
    n_train = diffusion.num_train_timesteps

    def denoise(x: torch.Tensor, t: float) -> tuple[torch.Tensor, torch.Tensor]:
        if frame_mask is not None:
            x = torch.where(frame_mask, cond_full, x)
        tt = torch.full((b,), t, device=dev, dtype=torch.float32)
        inside = guidance_interval is None or lo <= float(t) / n_train <= hi
        pred = (predict if inside else model_fn)(x, tt, cond_mask=cond_mask)
        return diffusion.x0_eps(x, tt, pred)

    x = randn(shape, generator, dev, dtype) if noise is None else noise.to(device=dev, dtype=dtype)
    x = spec.fn(denoise, x, grid, progress=progress)
    if frame_mask is not None:
        x = torch.where(frame_mask, cond_full, x)
    return x


@torch.no_grad()
def sample_long(diffusion: Diffusion, model_fn: ModelFn, shape, *, window: int, overlap: int,
                cond_video: torch.Tensor | None = None, cond_frames: int = 0, progress: bool = False,
                **kwargs) -> torch.Tensor:
    """Sample ``shape`` [B, C, T, H, W] with T beyond the model's length, ``window`` frames at a time.

    The first window is :func:`sample` (continuing ``cond_video`` if given); every further window
    keeps the last ``overlap`` frames generated so far as clean conditioning frames and adds
    ``window - overlap`` new ones; the result is cut to T. Train with ``cond_frames >= overlap``
    (and ``cond_prob > 0``) for the model to know what clean frames mean. Other keyword
    arguments (sampler, steps, generator, guidance_scale, ...) go to :func:`sample`.
    """
    b, c, total, h, w = shape
    if not 0 < overlap < window:
        raise ValueError(f"sample_long needs 0 < overlap < window, got overlap={overlap}, window={window}")
    first = min(window, total)
    video = sample(diffusion, model_fn, (b, c, first, h, w), cond_video=cond_video, cond_frames=cond_frames,
                   **kwargs)
    n_windows = 1 + max(0, -(-(total - first) // (window - overlap)))
    rng = range(1, n_windows)
    if progress:
        from tqdm.auto import tqdm

        rng = tqdm(rng, desc="windows", leave=False)
    for _ in rng:
        ctx = video[:, :, -overlap:]
        new = sample(diffusion, model_fn, (b, c, window, h, w), cond_video=ctx, cond_frames=overlap, **kwargs)
        video = torch.cat([video, new[:, :, overlap:]], dim=2)
    return video[:, :, :total]
