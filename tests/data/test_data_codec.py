"""Frame sampling plans and decoding (decord and the PyAV fallback agree)."""

from __future__ import annotations

import numpy as np
import pytest
from data_media import audio_only_mp4, clip_bytes, unsupported_codec_mp4

from dit_video.data import codec
from dit_video.data.codec import ClipPlan, DecodeFailure, plan_indices


def test_plan_stride_and_start():
    assert plan_indices(10, 8, ClipPlan(num_frames=3, frame_stride=2, u_start=0.0)) == ([0, 2, 4], False)
    assert plan_indices(10, 8, ClipPlan(num_frames=3, frame_stride=2, u_start=0.999)) == ([5, 7, 9], False)
    assert plan_indices(10, 8, ClipPlan(num_frames=3, frame_stride=2, u_start=0.5)) == ([3, 5, 7], False)


def test_plan_target_fps_overrides_stride():
    idx, padded = plan_indices(100, 30, ClipPlan(num_frames=4, frame_stride=7, fps=10, u_start=0.0))
    assert idx == [0, 3, 6, 9] and not padded
    idx, _ = plan_indices(100, 25, ClipPlan(num_frames=3, fps=10, u_start=0.0))  # step 2.5
    assert idx == [0, 2, 5]


def test_plan_short_pad_or_skip():
    assert plan_indices(3, 8, ClipPlan(num_frames=5)) == ([0, 1, 2, 2, 2], True)
    with pytest.raises(DecodeFailure) as e:
        plan_indices(3, 8, ClipPlan(num_frames=5, pad_short=False))
    assert e.value.reason == codec.TOO_SHORT


def _frames(t=8, h=16, w=32, seed=0):
    # smooth content so that h264 at crf 0 would be exact and crf 18 is close
    rng = np.random.default_rng(seed)
    base = rng.integers(40, 215, (1, 1, 1, 3))
    ramp = np.arange(t)[:, None, None, None] * 12
    return np.broadcast_to(base + ramp, (t, h, w, 3)).astype(np.uint8)


def test_decord_and_pyav_decode_the_same_frames(monkeypatch):
    x = _frames()
    data = codec.encode_mp4(x, fps=8)
    plan = ClipPlan(num_frames=4, frame_stride=2, u_start=0.0)
    a, info_a = codec.decode_clip(data, plan)
    assert info_a["decoder"] == "decord" and a.shape == (4, 16, 32, 3)
    b, info_b = codec._decode_pyav(data, plan)
    assert info_b["decoder"] == "pyav"
    assert np.abs(a.astype(int) - b.astype(int)).max() <= 2
    assert np.abs(a.astype(int) - x[[0, 2, 4, 6]].astype(int)).max() <= 6  # the frames that were encoded


def test_pyav_fallback_when_decord_fails(monkeypatch):
    def broken(*a, **k):
        raise RuntimeError("decord exploded")

    monkeypatch.setattr(codec, "_decode_decord", broken)
    frames, info = codec.decode_clip(clip_bytes(t=5), ClipPlan(num_frames=5))
    assert frames.shape == (5, 24, 32, 3) and info["decoder"] == "pyav" and "exploded" in info["decord_error"]


def test_a_size_decord_cannot_copy_goes_to_pyav_first_afterwards(monkeypatch):
    """decord 0.6 fails on e.g. 24-pixel-wide frames ("The size must exactly match"); the first such
    failure is remembered, so later clips skip the costly failed attempt but are still reported."""
    calls = []

    def decord_size_bug(*a, **k):
        calls.append(1)
        raise RuntimeError("Check failed: from_size == to_size (2304 vs. 1728) DECORDArrayCopyFromTo: "
                           "The size must exactly match")

    monkeypatch.setattr(codec, "_decode_decord", decord_size_bug)
    x = _frames(t=4, h=24, w=24)
    data = codec.encode_mp4(x, fps=8)
    plan = ClipPlan(num_frames=4, u_start=0.0)
    first, info1 = codec.decode_clip(data, plan)
    assert info1["decoder"] == "pyav" and "size must exactly match" in info1["decord_error"]
    assert codec._DECORD_BAD_SIZES == {(24, 24)} and len(calls) == 1
    second, info2 = codec.decode_clip(data, plan)
    assert len(calls) == 1  # decord not tried again
    assert info2["decoder"] == "pyav" and info2["decord_error"].startswith("skipped: decord cannot copy out 24x24")
    assert np.array_equal(first, second)
    ok, info3 = codec.decode_clip(codec.encode_mp4(_frames(), fps=8), plan)  # another size: PyAV, no error
    assert info3["decoder"] == "pyav" and info3["decord_error"] is None and ok.shape == (4, 16, 32, 3)
    with pytest.raises(DecodeFailure):  # PyAV-first still reports what is wrong with a broken file
        codec.decode_clip(b"\x00garbage" * 300, plan)


@pytest.mark.parametrize("data,reason", [
    (b"", codec.EMPTY),
    (b"\x00garbage" * 300, codec.DECODE_ERROR),
    (clip_bytes()[:900], codec.DECODE_ERROR),
    (audio_only_mp4(), codec.NO_VIDEO),
    (unsupported_codec_mp4(), codec.UNSUPPORTED_CODEC),
])
def test_bad_media_reasons(data, reason):
    with pytest.raises(DecodeFailure) as e:
        codec.decode_clip(data, ClipPlan(num_frames=2))
    assert e.value.reason == reason


def test_sandbox_matches_in_process_and_grows_its_buffer():
    from dit_video.data.sandbox import DecodeSandbox

    data = clip_bytes(t=6, h=32, w=64)
    plan = ClipPlan(num_frames=4, frame_stride=1, u_start=0.0)
    want, _ = codec.decode_clip(data, plan)
    box = DecodeSandbox(timeout_s=20, capacity=1000)  # smaller than one clip: the child asks for more room
    try:
        got, info = box.decode(data, plan)
        assert np.array_equal(got, want) and box.capacity >= want.nbytes
        box.submit(b"\x00junk" * 50, plan)
        with pytest.raises(DecodeFailure) as e:
            box.collect()
        assert e.value.reason == codec.DECODE_ERROR
        got2, _ = box.decode(data, plan)  # the same child goes on after a failed clip
        assert np.array_equal(got2, want) and box.restarts == 0
    finally:
        box.close()
    assert box.pid is None
