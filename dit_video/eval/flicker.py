"""Temporal flicker: how much consecutive frames differ, pixel by pixel (VBench "temporal_flickering").

::

    frames [T, H, W, 3] uint8 -> |frame[t+1] - frame[t]|  [T-1, H, W, 3] -> mean over H, W, 3 -> [T-1]
    flicker_mae   = mean over the T-1 pairs                 (0..255, lower = steadier)
    flicker_score = (255 - flicker_mae) / 255               (0..1, VBench's score, higher = steadier)

VBench computes exactly this (``temporal_flickering.cal_score``: the mean of ``cv2.absdiff`` of
consecutive frames as float32, then ``(255 - mean) / 255``) and applies it to prompts of static scenes;
on videos that are meant to move, motion counts as flicker too, so read it next to the motion
figures (:mod:`.motion`): a still video scores 1.0 here and 0 in dynamic degree. ``flicker_max`` is
the largest pair's difference (a single flickering frame shows there).
"""

from __future__ import annotations

import numpy as np

from .flow import check_frames


def pair_differences(frames: np.ndarray) -> np.ndarray:
    """Mean absolute difference of each consecutive pair, ``[T-1]`` float64 on the 0..255 scale."""
    f = check_frames(frames).astype(np.float32)
    return np.abs(f[1:] - f[:-1]).mean(axis=(1, 2, 3), dtype=np.float64)


def temporal_flicker(frames: np.ndarray) -> dict[str, float]:
    """``flicker_mae`` (0..255, lower is better), ``flicker_score`` (VBench 0-1, higher is better), ``flicker_max``."""
    d = pair_differences(frames)
    mae = float(d.mean())
    return {"flicker_mae": mae, "flicker_score": (255.0 - mae) / 255.0, "flicker_max": float(d.max())}
