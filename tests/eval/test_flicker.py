"""Temporal flicker on clips with a known answer (the difference of consecutive frames, counted by hand)."""

from __future__ import annotations

import numpy as np
import pytest
from eval_clips import BG, FLASH, FLASH_AT, RED, SPEED, R, S, T, colour_change, flickering, smooth, static, teleport

from dit_video.eval import temporal_flicker
from dit_video.eval.flicker import pair_differences

AREA, SQ = S * S, (2 * R) ** 2


def test_static_clip_does_not_flicker():
    assert temporal_flicker(static()) == {"flicker_mae": 0.0, "flicker_score": 1.0, "flicker_max": 0.0}


def test_one_flickering_frame():
    # the flash raises every channel by FLASH except red's 230, which clips at 255 (+25)
    step_sq = (min(255, RED[0] + FLASH) - RED[0] + 2 * FLASH) / 3
    pair = ((AREA - SQ) * FLASH + SQ * step_sq) / AREA  # mean |difference| of the two pairs touching the flash
    d = pair_differences(flickering())
    assert np.nonzero(d)[0].tolist() == [FLASH_AT - 1, FLASH_AT]
    f = temporal_flicker(flickering())
    assert f["flicker_max"] == pytest.approx(pair, rel=1e-9)
    assert f["flicker_mae"] == pytest.approx(2 * pair / (T - 1), rel=1e-9)
    assert f["flicker_score"] == pytest.approx((255 - 2 * pair / (T - 1)) / 255, rel=1e-12)  # VBench's score


def test_moving_square_flickers_by_the_pixels_it_uncovers():
    # each step uncovers SPEED columns of the square's height on one side and covers as many on the other
    changed = 2 * SPEED * 2 * R
    per_pair = changed * np.abs(RED - np.array(BG)).sum() / (AREA * 3)
    f = temporal_flicker(smooth())
    assert f["flicker_mae"] == pytest.approx(per_pair, rel=1e-9)
    assert f["flicker_max"] == pytest.approx(per_pair, rel=1e-9)


def test_teleport_and_colour_change_show_in_the_worst_pair():
    for clip in (teleport(), colour_change()):
        d = pair_differences(clip)
        worst = int(d.argmax())
        assert worst == 7 and d[worst] > 3 * np.median(d)


def test_rejects_bad_input():
    with pytest.raises(ValueError, match="uint8"):
        temporal_flicker(static().astype(np.float32))
    with pytest.raises(ValueError, match="2 frames"):
        temporal_flicker(static()[:1])
