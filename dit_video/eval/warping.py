"""Warping error: does frame t, moved along the optical flow, reproduce frame t+1?

::

    b = backward flow (t+1 -> t) [H, W, 2]     f = forward flow (t -> t+1) [H, W, 2]
    p = x + b(x)                               where pixel x of frame t+1 came from in frame t
    warped(x) = frame_t(p)                     (bilinear, cv2.remap)                  [H, W, 3]
    valid(x)  = p inside the frame
                and |b(x) + f(p)|^2 < 0.01 (|b(x)|^2 + |f(p)|^2) + 0.5   (forward-backward consistency)
    E_t = sum_x valid(x) * ||frame_{t+1}(x) - warped(x)||^2 / sum_x valid(x)   (RGB in [0, 1], summed over channels)
    warp_error = mean_t E_t                    (lower = more temporally consistent)

This is the warping error of Lai et al. (ECCV 2018, "Learning Blind Video Temporal Consistency") with
OpenCV Farneback flow instead of FlowNet2, and the occlusion test of Sundaram et al. (ECCV 2010):
pixels whose forward and backward flows disagree (occluded, or the flow failed) are left out, so what
remains measures change that motion does not explain: flicker, colour drift, objects that morph.
``warp_coverage`` is the mean fraction of pixels kept; a pair with no pixel kept is left out of the
mean and counted in ``warp_pairs_empty`` (its figure would be undefined). ``warp_error_max`` and
``warp_coverage_min`` are the worst pair's: an object that jumps leaves flow that fails the consistency
test over both of its places, so a teleport shows as a low ``warp_coverage_min`` more than as error.

A still video has warp error 0, so read it with the motion figures (:mod:`.motion`).
"""

from __future__ import annotations

import numpy as np

from .flow import Flows, check_frames, farneback_flows

ALPHA, BETA = 0.01, 0.5  # Sundaram et al.'s consistency test (squared pixels)


def _sample(img: np.ndarray, mx: np.ndarray, my: np.ndarray) -> np.ndarray:
    import cv2

    return cv2.remap(img, mx, my, interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def warp_pair(frame_t: np.ndarray, frame_t1: np.ndarray, fwd: np.ndarray, bwd: np.ndarray
              ) -> tuple[np.ndarray, np.ndarray]:
    """Frame t warped onto frame t+1 (float32 [H, W, 3] on 0..1) and the valid mask [H, W] bool."""
    h, w = frame_t1.shape[:2]
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    mx, my = xx + bwd[..., 0], yy + bwd[..., 1]
    warped = _sample(frame_t.astype(np.float32) / 255.0, mx, my)
    f_at = _sample(np.ascontiguousarray(fwd), mx, my)
    inside = (mx >= 0) & (mx <= w - 1) & (my >= 0) & (my <= h - 1)
    gap = ((bwd + f_at) ** 2).sum(-1)
    consistent = gap < ALPHA * ((bwd ** 2).sum(-1) + (f_at ** 2).sum(-1)) + BETA
    return warped, inside & consistent


def warping_error(frames: np.ndarray, flows: Flows | None = None) -> dict[str, float]:
    """``warp_error`` / ``warp_error_max`` (lower is better), ``warp_coverage`` / ``warp_coverage_min`` (fraction
    of pixels compared), ``warp_pairs_empty``."""
    frames = check_frames(frames)
    flows = flows if flows is not None else farneback_flows(frames)
    errors, coverage, empty = [], [], 0
    for t in range(len(frames) - 1):
        warped, valid = warp_pair(frames[t], frames[t + 1], flows.forward[t], flows.backward[t])
        coverage.append(float(valid.mean()))
        if not valid.any():
            empty += 1
            continue
        sq = ((frames[t + 1].astype(np.float32) / 255.0 - warped) ** 2).sum(-1)
        errors.append(float(sq[valid].mean()))
    nan = float("nan")
    return {"warp_error": float(np.mean(errors)) if errors else nan,
            "warp_error_max": float(np.max(errors)) if errors else nan,
            "warp_coverage": float(np.mean(coverage)), "warp_coverage_min": float(np.min(coverage)),
            "warp_pairs_empty": empty}
