"""Warping error and motion / dynamic degree (Farneback flow) on clips with a known answer."""

from __future__ import annotations

import numpy as np
import pytest
from eval_clips import BG, BLUE, FLASH, RED, SPEED, R, S, T, colour_change, flickering, smooth, static, teleport

from dit_video.eval import motion, warping_error
from dit_video.eval.flow import farneback_flows
from dit_video.eval.motion import dynamic_count, dynamic_threshold

AREA, SQ = S * S, (2 * R) ** 2


def test_static_clip_has_no_warp_error_and_no_motion():
    w = warping_error(static())
    assert w["warp_error"] == 0.0 and w["warp_coverage"] == 1.0 and w["warp_pairs_empty"] == 0
    m = motion(static())
    assert m["motion"] == 0.0 and m["motion_top5"] == 0.0 and m["dynamic"] is False


def test_flickering_frame_is_warp_error_not_motion():
    # a brightness step has no flow: the error is the step itself, squared and summed over RGB, on the
    # two pairs that touch the flashed frame (red clips at 255: +25 instead of +FLASH)
    step_bg = 3 * (FLASH / 255) ** 2
    step_sq = ((min(255, RED[0] + FLASH) - RED[0]) ** 2 + 2 * FLASH ** 2) / 255 ** 2
    pair = ((AREA - SQ) * step_bg + SQ * step_sq) / AREA
    w = warping_error(flickering())
    # the flow Farneback finds on a brightness step is < 0.05 px, which shifts edge pixels by < 5% of the step
    assert w["warp_error"] == pytest.approx(2 * pair / (T - 1), rel=0.05)
    assert w["warp_error_max"] == pytest.approx(pair, rel=0.05)
    m = motion(flickering())
    assert m["motion"] < 0.05 and m["dynamic"] is False


def test_smoothly_moving_square_is_explained_by_its_flow():
    flows = farneback_flows(smooth())
    inner = flows.forward[:, 32 - R + 2:32 + R - 2]  # rows inside the square; its columns move right
    w = warping_error(smooth(), flows)
    # Farneback recovers the 2 px step: 1e-3 is the error of a uniform change of 255 * sqrt(1e-3 / 3) = 4.7
    # levels, 1/8 of the flash above; the pixels left out lie along the square's edges (less than a square)
    assert w["warp_error"] < 1e-3 and w["warp_coverage_min"] > 1 - SQ / AREA
    m = motion(smooth(), flows)
    assert m["motion_top5"] == pytest.approx(SPEED, rel=0.05)  # the top 5% (204 px) lie inside the 256-px square
    assert m["dynamic"] is True and m["dynamic_pairs"] == T - 1
    assert np.abs(inner[..., 0]).max() <= SPEED * 1.05


def test_slow_square_is_not_dynamic():
    # 1 px / frame is under VBench's threshold at 64 px and 8 fps (6 * 64 / 256 = 1.5 px), 2 px is over
    assert dynamic_threshold(S, S, 8.0) == 1.5
    m = motion(smooth(speed=1))
    assert m["motion_top5"] == pytest.approx(1.0, rel=0.05) and m["dynamic"] is False
    assert motion(smooth(speed=1), fps=2.0)["dynamic"] is False  # lower fps raises the bar (x 8 / fps)


def test_vbench_dynamic_rule():
    assert dynamic_threshold(256, 256, 8.0) == 6.0 and dynamic_threshold(256, 512, 4.0) == 12.0
    assert dynamic_threshold(256, 256, 30.0) == 6.0  # max(1, 8 / fps)
    assert [dynamic_count(t) for t in (2, 8, 16, 32)] == [1, 2, 4, 8]


def test_teleport_breaks_flow_consistency():
    # the jumping pair's flow fails the forward-backward test over both of the square's places, so
    # coverage drops below 1 - 2 squares; the smooth clip's never does
    w = warping_error(teleport())
    assert w["warp_coverage_min"] < 1 - 2 * SQ / AREA
    assert warping_error(smooth())["warp_coverage_min"] > 1 - 2 * SQ / AREA


def test_colour_change_is_warp_error():
    # the square's pixels change from red to blue; all else is explained by the 2 px motion
    jump = ((RED - BLUE) ** 2).sum() / 255 ** 2
    w = warping_error(colour_change())
    # the pair's error is SQ * jump over the pixels kept (between 90% and 100% of the frame)
    assert SQ * jump / AREA <= w["warp_error_max"] <= SQ * jump / (0.9 * AREA)
    assert w["warp_error"] == pytest.approx(w["warp_error_max"] / (T - 1), rel=0.05)
    assert warping_error(smooth())["warp_error_max"] < 0.02 * w["warp_error_max"]
    assert np.all(np.array(BG) < 20)  # the clips' background is dark: no palette colour near it
