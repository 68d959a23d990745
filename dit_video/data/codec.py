"""Encode and decode mp4 clips: PyAV h264 encoding, decord decoding with a PyAV fallback.

Imports no torch, so the decode sandbox (:mod:`dit_video.data.sandbox`) stays light. Every way a
decode can fail ends in :class:`DecodeFailure` with a short ``reason`` that the loader counts.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np

# Reasons a clip can be skipped here; the loader counts them as "skipped/<reason>".
EMPTY, DECODE_ERROR, UNSUPPORTED_CODEC, NO_VIDEO, TOO_SHORT = (
    "empty_file", "decode_error", "unsupported_codec", "no_video_stream", "too_short")


class DecodeFailure(Exception):
    """A clip that cannot be used; ``reason`` is one of the module's reason constants."""

    def __init__(self, reason: str, message: str = "") -> None:
        super().__init__(f"{reason}: {message}" if message else reason)
        self.reason = reason
        self.message = message


@dataclass
class ClipPlan:
    """How to cut one clip out of a video. ``u_start`` in [0, 1) picks the window (0.5: centred)."""

    num_frames: int
    frame_stride: int = 1
    fps: float | None = None  # target fps; overrides frame_stride when the source fps is known
    u_start: float = 0.5
    pad_short: bool = True
    threads: int = 1


def encode_mp4(frames: np.ndarray, fps: float = 8, *, crf: int = 18, preset: str = "ultrafast",
               codec: str = "libx264") -> bytes:
    """Encode uint8 RGB frames ``[T, H, W, 3]`` (H, W even) as an h264 mp4 in memory."""
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be uint8 [T, H, W, 3], got {frames.dtype} {frames.shape}")
    import av

    t, h, w, _ = frames.shape
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as container:
        stream = container.add_stream(codec, rate=_rate(fps))
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        if codec == "libx264":
            stream.options = {"crf": str(crf), "preset": preset}
        for i in range(t):
            for packet in stream.encode(av.VideoFrame.from_ndarray(frames[i], format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buf.getvalue()


def _rate(fps: float):
    from fractions import Fraction

    return Fraction(fps).limit_denominator(1001)


def plan_indices(n: int, src_fps: float, plan: ClipPlan) -> tuple[list[int], bool]:
    """Frame indices of a clip of ``plan.num_frames`` from ``n`` source frames; ``(indices, padded)``.

    The step between frames is ``src_fps / plan.fps`` when a target fps is asked (fractional steps
    are rounded per frame) and ``plan.frame_stride`` otherwise. A source shorter than the window is
    padded by repeating its last frame, or raises ``DecodeFailure(TOO_SHORT)`` when not ``pad_short``.
    """
    if n <= 0:
        raise DecodeFailure(DECODE_ERROR, "video has no frames")
    step = float(plan.frame_stride)
    if plan.fps is not None and src_fps and math.isfinite(src_fps) and src_fps > 0:
        step = src_fps / plan.fps
    offsets = [int(round(i * step)) for i in range(plan.num_frames)]
    span = offsets[-1] + 1
    if span > n:
        if not plan.pad_short:
            raise DecodeFailure(TOO_SHORT, f"{n} frames, clip needs {span}")
        return [min(o, n - 1) for o in offsets], True
    start = min(int(plan.u_start * (n - span + 1)), n - span)
    return [start + o for o in offsets], False


def _decode_decord(data: bytes, plan: ClipPlan) -> tuple[np.ndarray, dict]:
    import decord

    decord.bridge.set_bridge("native")  # per thread: set where decoding runs (see DESIGN.md, known traps)
    vr = decord.VideoReader(io.BytesIO(data), ctx=decord.cpu(0), num_threads=plan.threads)
    n, fps = len(vr), float(vr.get_avg_fps())
    idx, padded = plan_indices(n, fps, plan)
    frames = vr.get_batch(sorted(set(idx))).asnumpy()
    if len(set(idx)) != len(idx):  # padded: repeat frames
        pos = {j: k for k, j in enumerate(sorted(set(idx)))}
        frames = frames[[pos[j] for j in idx]]
    return frames, {"decoder": "decord", "padded": padded, "src_frames": n, "src_fps": fps}


def _decode_pyav(data: bytes, plan: ClipPlan) -> tuple[np.ndarray, dict]:
    import av

    try:
        container = av.open(io.BytesIO(data))
    except av.error.FFmpegError as e:
        raise DecodeFailure(DECODE_ERROR, f"PyAV cannot open: {e}") from None
    with container:
        if not (container.streams.video or container.streams.audio or container.streams.subtitles):
            raise DecodeFailure(DECODE_ERROR, "no decodable streams (truncated or not a video)")
        if not container.streams.video:
            raise DecodeFailure(NO_VIDEO, "container has no video stream")
        stream = container.streams.video[0]
        if stream.codec_context is None:
            raise DecodeFailure(UNSUPPORTED_CODEC, "FFmpeg has no decoder for the video stream's codec")
        stream.thread_count = plan.threads
        fps = float(stream.average_rate or stream.guessed_rate or 0)
        n_hint = stream.frames
        frames: list[np.ndarray] = []
        try:
            if n_hint > 0:  # decode only up to the last frame needed
                idx, padded = plan_indices(n_hint, fps, plan)
                last = max(idx)
                for frame in container.decode(stream):
                    frames.append(frame.to_ndarray(format="rgb24"))
                    if len(frames) > last:
                        break
                if len(frames) > last:
                    out = np.stack([frames[i] for i in idx])
                    return out, {"decoder": "pyav", "padded": padded, "src_frames": n_hint, "src_fps": fps}
            else:
                frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
        except av.error.FFmpegError as e:
            if not frames:
                raise DecodeFailure(DECODE_ERROR, f"PyAV decode: {e}") from None
        # frame count unknown or wrong in the header: sample from what decoded
        idx, padded = plan_indices(len(frames), fps, plan)
        return np.stack([frames[i] for i in idx]), {"decoder": "pyav", "padded": padded,
                                                      "src_frames": len(frames), "src_fps": fps}


# Frame sizes decord 0.6 cannot copy out (it pads rows to an alignment and then refuses the copy:
# "The size must exactly match", e.g. a width of 24). A failed decord attempt costs ~10x a decode, so
# once this has happened in a process, PyAV decodes first there (its frames are the same); decord
# still serves any clip PyAV cannot decode.
_DECORD_BAD_SIZES: set[tuple[int, int]] = set()


def decode_clip(data: bytes, plan: ClipPlan) -> tuple[np.ndarray, dict]:
    """Decode ``plan``'s clip from mp4 bytes: uint8 ``[T, H, W, 3]`` and an info dict.

    Tries decord first (absent on some platforms, and it fails on some files), then PyAV; info
    says which decoder served (``"pyav"`` after a decord failure is counted as a fallback). After
    decord has failed on a frame size in this process (``_DECORD_BAD_SIZES``), PyAV goes first.
    """
    if len(data) == 0:
        raise DecodeFailure(EMPTY, "zero-byte file")
    decord_error = None
    if _DECORD_BAD_SIZES:
        try:
            frames, info = _decode_pyav(data, plan)
        except Exception:  # noqa: BLE001 - decord may still decode it; errors are reported below
            pass
        else:
            size = (int(frames.shape[1]), int(frames.shape[2]))
            info["decord_error"] = (f"skipped: decord cannot copy out {size[1]}x{size[0]} frames (seen earlier in "
                                    "this process)") if size in _DECORD_BAD_SIZES else None
            return frames, info
    try:
        frames, info = _decode_decord(data, plan)
        return frames, info
    except DecodeFailure as e:
        if e.reason == TOO_SHORT:
            raise
        decord_error = e.message
    except ImportError:
        decord_error = None
    except Exception as e:  # decord raises DECORDError / RuntimeError on broken or odd files
        decord_error = f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
    try:
        frames, info = _decode_pyav(data, plan)
    except DecodeFailure as e:
        if decord_error and e.reason == DECODE_ERROR:
            raise DecodeFailure(e.reason, f"{e.message}; decord: {decord_error}") from None
        raise
    except Exception as e:
        raise DecodeFailure(DECODE_ERROR, f"PyAV {type(e).__name__}: {e}; decord: {decord_error}") from None
    if decord_error and "size must exactly match" in decord_error:
        _DECORD_BAD_SIZES.add((int(frames.shape[1]), int(frames.shape[2])))
    info["decord_error"] = decord_error
    return frames, info


def probe(data: bytes) -> dict:
    """Metadata of a video in memory: fps, frames, width, height, duration (seconds), codec."""
    import av

    try:
        container = av.open(io.BytesIO(data))
    except av.error.FFmpegError as e:
        raise DecodeFailure(DECODE_ERROR if data else EMPTY, f"cannot open: {e}") from None
    with container:
        if not (container.streams.video or container.streams.audio or container.streams.subtitles):
            raise DecodeFailure(DECODE_ERROR, "no decodable streams (truncated or not a video)")
        if not container.streams.video:
            raise DecodeFailure(NO_VIDEO, "container has no video stream")
        s = container.streams.video[0]
        if s.codec_context is None:
            raise DecodeFailure(UNSUPPORTED_CODEC, "FFmpeg has no decoder for the video stream's codec")
        fps = float(s.average_rate or s.guessed_rate or 0)
        frames = int(s.frames)
        duration = float(s.duration * s.time_base) if s.duration is not None and s.time_base else None
        if duration is None and container.duration is not None:
            duration = container.duration / 1e6
        if frames <= 0 and duration and fps:
            frames = int(round(duration * fps))
        return {"fps": fps, "frames": frames, "width": s.codec_context.width, "height": s.codec_context.height,
                "duration": duration, "codec": s.codec_context.name}
