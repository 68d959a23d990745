"""``DiffusionConfig``: the noising process, training objective and its knobs (no torch here).

A plain dataclass, usable as an omegaconf structured config. Which fields matter for which
objective:

- ``objective="flow"`` (rectified flow, the default): ``x_t = (1 - u) x0 + u eps`` for ``u`` in
  [0, 1]; the model predicts the velocity ``eps - x0``; its timestep is ``u * num_train_timesteps``.
  ``shift`` warps ``u`` towards noise (``u' = shift u / (1 + (shift - 1) u)``, SD3) in training
  *and* sampling; use > 1 for longer or larger inputs. ``prediction="x0"`` makes the network
  output the clean clip instead (x-prediction, Li & He 2025 "Back to Basics: Let Denoising
  Generative Models Denoise"): the velocity is ``(x_t - out) / max(u, x0_min_u)``, the loss stays
  on the velocity. Meant for patches with about as many values as the model has channels (pixel
  space, large patches), where a velocity net must carry the noise through its width. The CPU demo uses
  it: on its task (32 captions, 24x24x8, 3000 steps, seeds 0 / 1) samples that pass every check went
  from 1 / - to 4 / 1 of 32 alone and to 10 / 11 with ``VideoDiTConfig.pooled_text`` (velocity + pooled
  text, seed 0: 4); measurements in ``python -m benchmarks quality``.
- ``objective="eps" | "v"`` (DDPM): ``x_t = sqrt(abar_k) x0 + sqrt(1 - abar_k) eps`` at discrete
  ``k`` in ``0..num_train_timesteps-1`` with betas from ``schedule``; ``zero_terminal_snr``
  rescales them so that the last step is pure noise (Lin et al. 2024; needs ``objective="v"``).
  ``shift`` is a flow-only option.

For all objectives: the training timestep is drawn from ``timestep_sampling`` (``uniform``
is the classic DDPM recipe, ``logit_normal`` with ``logit_mean``/``logit_std`` the SD3 one, ``mode``
SD3's mode sampling with ``mode_scale``) per clip, or per latent frame with ``per_frame_timesteps``;
``uniform_share`` of the draws are uniform instead, a floor under the ends that a leaning density leaves
almost empty (0.3 on the demo's task, seed 0: probe 0.90 -> 0.79, one solid shape 15 -> 4 of 32, so it is
off); ``min_snr_gamma`` turns on min-SNR-gamma weighting; the first ``cond_frames`` frames of a clip are
kept clean with probability ``cond_prob`` (video prediction; the loss skips them); ``cfg_dropout`` is the
probability with which the *trainer* drops the condition (text/label) for classifier-free guidance, and
``cond_cfg_dropout`` (None: ``cfg_dropout``) the same for the clips trained with given frames: continuing
given frames with no caption is a task of its own, which ``cfg_dropout x cond_prob`` (2.5% of clips at 0.1 x
0.25) trains rarely.

Why the default density leans to noise (``logit_normal``, mean **1.0**, std 1: 73% of draws have u > 0.5,
against 50% for SD3's image default, mean 0). In video, *where* the object is in each frame, i.e. the
motion, is decided at high noise: the sampler's first steps fix the layout of every frame. A model
trained with little weight near u = 1 learns the condition's uniform part there (colour) but not its
frame-dependent part: the samples' motion is left to the initial noise. Measured on the CPU demo's task
(the lab, ``python -m benchmarks quality``: the demo recipe, 32 captions, 3000 steps, seeds 0 / 1 / 2; probe =
the x0 prediction's motion at u = 1 over the data's conditional mean's; ok = samples passing every check of
32): logit-normal mean 0 probe 0.00 / 0.01 / 0.02, 0 / 0 / 0 ok; uniform -0.00 / -0.00 / -0.00, 0 / 0 / 0; mean 1.0
0.95 / 0.94 / 0.49, 10 / 11 / 2 (``python -m benchmarks quality --variants ln_m0,uniform,ln_m1 --steps 3000
--clips 1024``; the regression test ``tests/diffusion/test_motion_at_noise.py``). A wider std (1.6: the same 73%
above 0.5, 7% below 0.2 instead of 0.9%) to learn the squares' edges at low noise did worse: 6 against 16 of 64
samples passing every check (3000 steps, seed 0, sampling seeds 1000 / 1001; probe 0.90 vs 0.95).

The table of densities on today's demo recipe (x0 prediction, pooled text, video prediction; 3000 steps,
1024 clips, 1 thread each on a 2-core AMD EPYC Zen 3; ``python -m benchmarks quality --steps 3000 --clips 1024
--variants ...``; probe mean over seeds, ok per seed of 32; 2 seeds where only 2 are listed):

==============================  =====  ========  ================================================
variant                          probe  ok        note
==============================  =====  ========  ================================================
logit-normal mean 1 (default)    0.93   6/8/6     moves the captioned way 27 of 32 on average
logit-normal mean 1.5            0.97   8/2       the highest probe, fewer clean squares
logit-normal mean 0 (SD3)        0.02   0/0       motion left to the initial noise
SD3 mode sampling, scale 1.29    0.00   0/0       as mean 0: the density sits at mid noise
mean 0 + shift 3 (SD3 shift)     0.93   9/15/10   training density ~ mean ln 3; sampling steps moved to noise
DDPM eps, uniform k              0.01   0/0       3 of 32 plain backgrounds: eps cannot predict x0 at high noise
DDPM eps + min-SNR 5             0.00   0/0
DDPM v, zero-terminal SNR        0.45   0/0       probe 0.00 / 0.89: motion learnt by one seed, no clean sample
==============================  =====  ========  ================================================

So a density that leans to noise is what carries the motion (probe ~0.9 against ~0), whatever its form
(mean 1 to 1.5, or the shift). The shifted recipe passed more on each of 3 seeds (9/15/10 against 6/8/6, the
same probe): its sampling spends more of its steps at high noise. The default stays mean 1, shift 1 until a
full demo run confirms the shift (the demo's figures are measured with it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

OBJECTIVES = ("flow", "eps", "v")
PREDICTIONS = ("velocity", "x0")
SCHEDULES = ("linear", "cosine", "scaled_linear")
TIMESTEP_SAMPLING = ("logit_normal", "uniform", "mode")


@dataclass
class DiffusionConfig:
    """See the module docstring."""

    objective: str = "flow"
    schedule: str = "linear"
    num_train_timesteps: int = 1000
    zero_terminal_snr: bool = False
    timestep_sampling: str = "logit_normal"
    logit_mean: float = 1.0  # leans to noise, where video motion is decided: see the module docstring
    logit_std: float = 1.0
    mode_scale: float = 1.29
    uniform_share: float = 0.0
    shift: float = 1.0
    prediction: str = "velocity"
    x0_min_u: float = 0.05
    min_snr_gamma: float | None = None
    per_frame_timesteps: bool = False
    cond_frames: int = 0
    cond_prob: float = 0.0
    cfg_dropout: float = 0.1
    cond_cfg_dropout: float | None = None

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> DiffusionConfig:
        """Raise ``ValueError`` naming the field and the allowed values; returns self."""
        for key, allowed in (("objective", OBJECTIVES), ("schedule", SCHEDULES),
                             ("timestep_sampling", TIMESTEP_SAMPLING), ("prediction", PREDICTIONS)):
            if getattr(self, key) not in allowed:
                raise ValueError(f"DiffusionConfig.{key} must be one of {allowed}, got {getattr(self, key)!r}")
        if self.num_train_timesteps < 2:
            raise ValueError(f"DiffusionConfig.num_train_timesteps must be >= 2, got {self.num_train_timesteps}")
        if self.logit_std <= 0:
            raise ValueError(f"DiffusionConfig.logit_std must be > 0, got {self.logit_std}")
        if not -1.0 <= self.mode_scale <= 2 / (math.pi - 2):
            raise ValueError(f"DiffusionConfig.mode_scale must be in [-1, {2 / (math.pi - 2):.3f}] (beyond it the "
                             f"mode warp is not monotone), got {self.mode_scale}")
        if self.shift <= 0:
            raise ValueError(f"DiffusionConfig.shift must be > 0, got {self.shift}")
        if self.min_snr_gamma is not None and self.min_snr_gamma <= 0:
            raise ValueError(f"DiffusionConfig.min_snr_gamma must be > 0 or null, got {self.min_snr_gamma}")
        if self.cond_frames < 0:
            raise ValueError(f"DiffusionConfig.cond_frames must be >= 0, got {self.cond_frames}")
        for key in ("cond_prob", "cfg_dropout", "uniform_share"):
            if not 0.0 <= getattr(self, key) <= 1.0:
                raise ValueError(f"DiffusionConfig.{key} must be in [0, 1], got {getattr(self, key)}")
        if self.cond_cfg_dropout is not None and not 0.0 <= self.cond_cfg_dropout <= 1.0:
            raise ValueError(f"DiffusionConfig.cond_cfg_dropout must be in [0, 1] or null, got {self.cond_cfg_dropout}")
        if self.zero_terminal_snr and self.objective != "v":
            raise ValueError("DiffusionConfig.zero_terminal_snr=true needs objective='v': at the last timestep "
                             f"x_t is pure noise and an {self.objective!r} prediction cannot recover x0")
        if self.objective != "flow" and self.prediction != "velocity":
            raise ValueError(f"DiffusionConfig.prediction={self.prediction!r} is a rectified-flow option; "
                             f"objective={self.objective!r} predicts what its name says (use prediction='velocity')")
        if not 0.0 < self.x0_min_u < 1.0:
            raise ValueError(f"DiffusionConfig.x0_min_u must be in (0, 1), got {self.x0_min_u}")
        if self.objective != "flow" and self.shift != 1.0:
            raise ValueError(f"DiffusionConfig.shift is a rectified-flow option; objective={self.objective!r} "
                             "needs shift=1.0")
        return self
