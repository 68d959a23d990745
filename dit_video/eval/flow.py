"""Dense optical flow between consecutive frames (OpenCV Farneback), shared by warping error and motion.

::

    frames uint8 [T, H, W, 3] --grey--> [T, H, W]
    forward[t]  = flow(frame t -> frame t+1)   [T-1, H, W, 2]  (dx, dy) in pixels
    backward[t] = flow(frame t+1 -> frame t)   [T-1, H, W, 2]

``forward[t][y, x] = (dx, dy)`` says the content at (x, y) in frame t is at (x + dx, y + dy) in frame
t+1. The Farneback parameters are OpenCV's documented example values (pyramid scale 0.5, 3 levels,
15-pixel window, 3 iterations, polynomial neighbourhood 5 with sigma 1.2); they are fixed so that
figures from different runs compare.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FARNEBACK = dict(pyr_scale=0.5, levels=3, winsize=15, iterations=3, poly_n=5, poly_sigma=1.2, flags=0)


@dataclass
class Flows:
    """Forward and backward flow of a clip, each ``[T-1, H, W, 2]`` float32 (dx, dy) in pixels."""

    forward: np.ndarray
    backward: np.ndarray


def check_frames(frames: np.ndarray) -> np.ndarray:
    """Validate a clip: uint8 ``[T, H, W, 3]``; returns it as a contiguous array."""
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"a clip must be uint8 [T, H, W, 3], got {frames.dtype} {frames.shape}")
    if frames.shape[0] < 2:
        raise ValueError(f"a clip needs at least 2 frames for temporal metrics, got {frames.shape[0]}")
    return np.ascontiguousarray(frames)


def farneback_flows(frames: np.ndarray) -> Flows:
    """Forward and backward Farneback flow of every consecutive pair of ``frames`` (uint8 [T, H, W, 3])."""
    import cv2

    frames = check_frames(frames)
    grey = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames]
    fwd = [cv2.calcOpticalFlowFarneback(a, b, None, **FARNEBACK) for a, b in zip(grey[:-1], grey[1:])]
    bwd = [cv2.calcOpticalFlowFarneback(b, a, None, **FARNEBACK) for a, b in zip(grey[:-1], grey[1:])]
    return Flows(np.stack(fwd).astype(np.float32), np.stack(bwd).astype(np.float32))
