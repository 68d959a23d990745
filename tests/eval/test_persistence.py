"""Subject persistence on clips with a known answer, and on the project's own synthetic clips."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
from eval_clips import JUMP_AT, JUMP_TO, SPEED, T, colour_change, smooth, square_clip, static, teleport

from dit_video.data.synthetic import SHAPES, SPEEDS, make_clip
from dit_video.eval import subject_persistence
from dit_video.eval.persistence import FILL, MAX_ACCEL, parse_caption


def test_tables_match_the_synthetic_generator():
    assert set(FILL) == set(SHAPES)
    assert MAX_ACCEL > 2 * max(SPEEDS.values())  # a bounce at the fastest speed is smooth


def test_smoothly_moving_square_persists():
    p = subject_persistence(smooth(), "a red square moving right")
    assert p["persistent"] and p["present"] and p["one_blob"] and p["smooth"] and p["moves"]
    o = p["objects"][0]
    assert o["accel"] == 0.0 and o["shift"] == SPEED * (T - 1) and o["shape_ok"] is True
    wrong = subject_persistence(smooth(), "a red square moving left")
    assert wrong["moves"] is False and not wrong["persistent"] and wrong["present"]
    assert subject_persistence(smooth(), "a red circle moving right")["objects"][0]["shape_ok"] is False


def test_teleport_is_not_smooth():
    p = subject_persistence(teleport(), "a red square moving right")
    # centroids (cy - 1/2, cx - 1/2) of the square; the largest second difference is at the frame after the jump:
    # c[J+1] - 2 c[J] + c[J-1] = (JUMP_TO) - 2 (JUMP_TO) + (32, 12 + SPEED (J - 1))
    second = np.array([JUMP_TO[0] - 2 * JUMP_TO[0] + 32, JUMP_TO[1] - 2 * JUMP_TO[1] + 12 + SPEED * (JUMP_AT - 1)])
    assert p["accel"] == pytest.approx(float(np.linalg.norm(second)), abs=1e-9)
    assert p["present"] and p["one_blob"] and not p["smooth"] and not p["persistent"]


def test_colour_change_loses_the_subject():
    p = subject_persistence(colour_change(), "a red square moving right")
    assert not p["present"] and not p["persistent"] and p["objects"][0]["min_pixels_seen"] == 0
    assert subject_persistence(colour_change()[:8], "a red square moving right")["persistent"]


def test_static_square_does_not_move():
    assert subject_persistence(static(), "a red square moving right")["moves"] is False
    p = subject_persistence(static(), "a red square")  # no direction named: moving is not asked
    assert p["persistent"] and p["moves"] is None


def test_split_square_is_two_blobs():
    v = smooth()
    v[:, 30:34] = 10  # a dark band through the square: two pieces of 16 x 6 each
    p = subject_persistence(v, "a red square moving right")
    assert p["present"] and not p["one_blob"] and not p["persistent"]


def test_captions():
    objs = parse_caption("a red square moving down and bouncing back and an orange circle moving right")
    assert [(o["color"], o["shape"], o["direction"], o["bounce"]) for o in objs] == [
        ("red", "square", "down", True), ("orange", "circle", "right", False)]
    assert subject_persistence(static(), "a dog on a beach") is None
    two = square_clip([(16, 12 + SPEED * t) for t in range(T)])
    two[:, 40:56, 40:56] = (40, 70, 255)  # a blue square that stays put
    p = subject_persistence(two, "a red square moving right and a blue square moving left")
    assert p["objects"][0]["persistent"] and p["objects"][1]["moves"] is False and not p["persistent"]


@pytest.mark.parametrize("size", [32, 64])
def test_synthetic_clips_persist(size):
    # one object, no occluding bar, plain or textured background, with bounces: every clip passes
    for i in range(20):
        frames, caption, meta = make_clip(random.Random(i), size=size, num_frames=16, max_objects=1,
                                          occlusion_prob=0.0)
        p = subject_persistence(frames, caption)
        assert p["persistent"], (i, caption, p)
        if not meta["objects"][0]["bounced"]:
            assert p["objects"][0]["shift"] > 0 and not math.isnan(p["accel"])
