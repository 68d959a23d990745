"""Clips built to have a known answer for the eval metrics: 16 frames, 64 x 64, a red 16 x 16 square."""

from __future__ import annotations

import numpy as np

from dit_video.data.synthetic import COLORS

T, S, R = 16, 64, 8  # frames, side, half side of the square
BG = (10, 10, 12)
RED, BLUE = np.array(COLORS["red"]), np.array(COLORS["blue"])
SPEED = 2  # px per frame of the smoothly moving square
JUMP_AT, JUMP_TO = 8, (16, 48)  # the teleporting square's frame and new centre (y, x)
FLASH_AT, FLASH = 7, 40  # the flickering frame and its brightness step


def square_clip(centres, colors=None) -> np.ndarray:
    """uint8 [T, S, S, 3]: a 2R x 2R square (rows cy-R..cy+R-1) of ``colors[t]`` at ``centres[t]`` on BG."""
    v = np.empty((len(centres), S, S, 3), np.uint8)
    v[:] = BG
    for t, (cy, cx) in enumerate(centres):
        v[t, cy - R:cy + R, cx - R:cx + R] = COLORS[(colors or ["red"] * len(centres))[t]]
    return v


def static() -> np.ndarray:
    return square_clip([(32, 32)] * T)


def flickering() -> np.ndarray:
    """The static clip with frame FLASH_AT brightened by FLASH levels (the red channel clips at 255)."""
    v = static()
    v[FLASH_AT] = np.clip(v[FLASH_AT].astype(int) + FLASH, 0, 255).astype(np.uint8)
    return v


def smooth(speed: int = SPEED) -> np.ndarray:
    return square_clip([(32, 12 + speed * t) for t in range(T)])


def teleport() -> np.ndarray:
    return square_clip([(32, 12 + SPEED * t) if t < JUMP_AT else JUMP_TO for t in range(T)])


def colour_change() -> np.ndarray:
    """The smooth clip, the square red for 8 frames and then blue."""
    return square_clip([(32, 12 + SPEED * t) for t in range(T)], ["red"] * 8 + ["blue"] * 8)
