"""Motion magnitude and VBench's dynamic degree, from the same Farneback flow as the warping error.

::

    f = forward flow [T-1, H, W, 2] -> |f| [T-1, H, W] (pixels per frame)
    motion      = mean of |f| over pairs and pixels                          (px / frame)
    motion_top5 = per pair, the mean of the largest 5% of |f|; then mean over pairs (px / frame)
    dynamic     = at least round(4 T / 16) pairs have top-5% mean > 6 * max(1, 8 / fps) * min(H, W) / 256

``dynamic`` is VBench's "dynamic_degree" rule (``dynamic_degree.py``: per pair the mean of the top 5%
flow magnitudes; the threshold 6 px at 256 px and 8 fps, scaled by the shorter side and by 8 / fps;
the count scaled from 4 of 16 frames) with Farneback in place of RAFT; over a set of videos the
dynamic degree is the fraction of dynamic ones. Neither figure is "better" alone: a model that
outputs still frames wins flicker and warping error and scores 0 here, which is what this figure is for.
"""

from __future__ import annotations

import numpy as np

from .flow import Flows, check_frames, farneback_flows


def dynamic_threshold(height: int, width: int, fps: float) -> float:
    """VBench's per-pair threshold on the top-5% flow magnitude, in pixels per frame."""
    return 6.0 * max(1.0, 8.0 / fps) * min(height, width) / 256.0


def dynamic_count(num_frames: int) -> int:
    """How many pairs must pass the threshold (VBench: round(4 * T / 16), at least 1)."""
    return max(1, round(4 * num_frames / 16))


def motion(frames: np.ndarray, flows: Flows | None = None, fps: float = 8.0) -> dict[str, float | bool]:
    """``motion`` and ``motion_top5`` (px/frame), ``dynamic`` (bool), ``dynamic_pairs`` (pairs over threshold)."""
    frames = check_frames(frames)
    if fps <= 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    flows = flows if flows is not None else farneback_flows(frames)
    t, h, w, _ = frames.shape
    mag = np.linalg.norm(flows.forward, axis=-1).reshape(t - 1, -1)
    k = max(1, int(h * w * 0.05))
    top = -np.sort(-mag, axis=1)[:, :k].mean(axis=1)
    passed = int((top > dynamic_threshold(h, w, fps)).sum())
    return {"motion": float(mag.mean()), "motion_top5": float(top.mean()), "dynamic_pairs": passed,
            "dynamic": passed >= dynamic_count(t)}
