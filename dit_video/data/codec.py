"""Encode and decode mp4 clips: PyAV h264 encoding, decord decoding with a PyAV fallback.

Imports no torch, so the decode sandbox (:mod:`dit_video.data.sandbox`) stays light. Every way a
decode can fail ends in :class:`DecodeFailure` with a short ``reason`` that the loader counts.
"""

from __future__ import annotations

import io
import math
import re
from dataclasses import dataclass

import numpy as np

# Reasons a clip can be skipped here; the loader counts them as "skipped/<reason>".
EMPTY, DECODE_ERROR, UNSUPPORTED_CODEC, NO_VIDEO, TOO_SHORT, CORRUPT = (
    "empty_file", "decode_error", "unsupported_codec", "no_video_stream", "too_short", "corrupt_frames")
# A message FFmpeg's decoders print while concealing damage: "[h264 @ 0x55d0...] error while decoding MB 3 1".
# Demuxers print under their format list ("[mov,mp4,m4a,3gp,3g2,mj2 @ 0x...]"), which this does not match.
_DECODER_LOG = re.compile(rb"^\[(\w+) @ 0x[0-9a-f]+\] (.+)$", re.MULTILINE)


def decoder_errors(log: bytes) -> str | None:
    """The first decoder error in FFmpeg's stderr output of one decode (decord leaves FFmpeg at level
    ERROR, so every decoder line there reports damaged frames that FFmpeg concealed), or None."""
    m = _DECODER_LOG.search(log)
    return None if m is None else f"{m.group(1).decode(errors='replace')}: {m.group(2).decode(errors='replace')}"


class DecodeFailure(Exception):
    """A clip that cannot be used; ``reason`` is one of the module's reason constants."""

    def __init__(self, reason: str, message: str = "") -> None:
        super().__init__(f"{reason}: {message}" if message else reason)
        self.reason = reason
        self.message = message
        self.src_frames: int | None = None  # set by too_short: the frames the source has


@dataclass
class ClipPlan:
    """How to cut one clip out of a video. ``u_start`` in [0, 1) picks the window (0.5: centred)."""

    num_frames: int
    frame_stride: int = 1
    fps: float | None = None  # target fps; overrides frame_stride when the source fps is known
    u_start: float = 0.5
    pad_short: bool = True
    threads: int = 1
    decoder: str = "decord"  # "decord" (PyAV where it fails) or "pyav"
    strict: bool = False  # PyAV: FFmpeg's err_detect=explode, damaged frames raise DecodeFailure(CORRUPT)
    # buckets: ((frames, height, width, weight), ...) and one uniform draw per bucket; the clip's bucket is
    # chosen from the source's size (dit_video.data.buckets.choose) and its frames replace num_frames
    buckets: tuple = ()
    draws: tuple = ()
    hint: tuple | None = None  # (frames, fps, height, width) from the sample's metadata, if it has them


PIX_FMTS = ("yuv420p", "yuv444p")


def encode_mp4(frames: np.ndarray, fps: float = 8, *, crf: int = 18, preset: str = "ultrafast",
               codec: str = "libx264", pix_fmt: str = "yuv420p") -> bytes:
    """Encode uint8 RGB frames ``[T, H, W, 3]`` (H, W even) as an h264 mp4 in memory.

    ``pix_fmt``: ``"yuv420p"`` (what cameras and the web use: colour at half the resolution) or
    ``"yuv444p"`` (h264's High 4:4:4 profile, full-resolution colour; decord and PyAV decode it).
    """
    if pix_fmt not in PIX_FMTS:
        raise ValueError(f"pix_fmt must be one of {PIX_FMTS}, got {pix_fmt!r}")
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be uint8 [T, H, W, 3], got {frames.dtype} {frames.shape}")
    import av

    t, h, w, _ = frames.shape
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as container:
        stream = container.add_stream(codec, rate=_rate(fps))
        stream.width, stream.height, stream.pix_fmt = w, h, pix_fmt
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
            e = DecodeFailure(TOO_SHORT, f"{n} frames, clip needs {span}")
            e.src_frames = n
            raise e
        return [min(o, n - 1) for o in offsets], True
    start = min(int(plan.u_start * (n - span + 1)), n - span)
    return [start + o for o in offsets], False


def _decode_decord(data: bytes, plan: ClipPlan) -> tuple[np.ndarray, dict]:
    import decord

    decord.bridge.set_bridge("native")  # per thread: set where decoding runs (docs/design.md, known traps)
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
        if plan.strict:  # damaged frames raise instead of being concealed
            stream.codec_context.options = {"err_detect": "explode"}
        fps = float(stream.average_rate or stream.guessed_rate or 0)
        n_hint = stream.frames
        frames: dict[int, np.ndarray] = {}
        count = 0
        try:
            if n_hint > 0:  # decode only up to the last frame needed; convert only the frames taken
                idx, padded = plan_indices(n_hint, fps, plan)
                want, last = set(idx), max(idx)
                for frame in container.decode(stream):
                    if count in want:
                        frames[count] = frame.to_ndarray(format="rgb24")
                    count += 1
                    if count > last:
                        break
                if count > last:
                    out = np.stack([frames[i] for i in idx])
                    return out, {"decoder": "pyav", "padded": padded, "src_frames": n_hint, "src_fps": fps}
                frames = {}  # the header's count was wrong: decode everything below
                container.seek(0)
            all_frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
        except av.error.FFmpegError as e:
            if plan.strict and (count or frames):
                raise DecodeFailure(CORRUPT, f"PyAV: damaged frame after {count} good ones: {e}") from None
            if plan.strict and isinstance(e, av.error.InvalidDataError):
                raise DecodeFailure(CORRUPT, f"PyAV: damaged frame: {e}") from None
            raise DecodeFailure(DECODE_ERROR, f"PyAV decode: {e}") from None
        if not all_frames:
            raise DecodeFailure(DECODE_ERROR, "PyAV decoded no frame")
        # frame count unknown or wrong in the header: sample from what decoded
        idx, padded = plan_indices(len(all_frames), fps, plan)
        return np.stack([all_frames[i] for i in idx]), {"decoder": "pyav", "padded": padded,
                                                          "src_frames": len(all_frames), "src_fps": fps}


# Frame sizes decord 0.6 cannot copy out (it pads rows to an alignment and then refuses the copy:
# "The size must exactly match", e.g. a width of 24). A failed decord attempt costs ~10x a decode, so
# once this has happened in a process, PyAV decodes first there (its frames are the same); decord
# still serves any clip PyAV cannot decode.
_DECORD_BAD_SIZES: set[tuple[int, int]] = set()


def decode_clip(data: bytes, plan: ClipPlan) -> tuple[np.ndarray, dict]:
    """Decode ``plan``'s clip from mp4 bytes: uint8 ``[T, H, W, 3]`` and an info dict.

    ``plan.decoder="decord"`` tries decord first (absent on some platforms, and it fails on some
    files), then PyAV; info says which decoder served (``"pyav"`` after a decord failure is counted
    as a fallback). After decord has failed on a frame size in this process (``_DECORD_BAD_SIZES``),
    PyAV goes first. ``"pyav"`` decodes with PyAV only. With ``plan.buckets`` the clip's bucket is
    chosen first (info ``"bucket"``: its index) and the clip has that bucket's frames.
    """
    if len(data) == 0:
        raise DecodeFailure(EMPTY, "zero-byte file")
    if plan.buckets:
        return _decode_bucketed(data, plan)
    if plan.decoder == "pyav":
        frames, info = _decode_pyav(data, plan)
        info["decord_error"] = None
        return frames, info
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


def _step(plan: ClipPlan, src_fps: float) -> float:
    if plan.fps is not None and src_fps and math.isfinite(src_fps) and src_fps > 0:
        return src_fps / plan.fps
    return float(plan.frame_stride)


def _decode_bucketed(data: bytes, plan: ClipPlan) -> tuple[np.ndarray, dict]:
    """Choose the clip's bucket from its size (the sample's metadata, else a PyAV probe), then decode
    that bucket's frames; if the decoded clip contradicts the metadata, choose again from the truth."""
    from dataclasses import replace

    from . import buckets

    hinted = plan.hint is not None
    if hinted:
        n, fps, h, w = plan.hint
    else:
        meta = probe(data)
        n, fps, h, w = meta["frames"], meta["fps"], meta["height"], meta["width"]
    for attempt in range(2):
        idx, reason = buckets.choose(plan.buckets, n, _step(plan, fps), h, w, plan.draws)
        if idx is None:
            if hinted and attempt == 0:  # the metadata may be wrong: check with a probe before skipping
                meta = probe(data)
                if (meta["frames"], meta["height"], meta["width"]) != (n, h, w):
                    n, fps, h, w, hinted = meta["frames"], meta["fps"], meta["height"], meta["width"], False
                    continue
            raise DecodeFailure(reason, f"{w}x{h}, {n} frames at {fps:g} fps fit no bucket"
                                + (" that the draws kept" if reason == buckets.DROPPED else ""))
        sub = replace(plan, num_frames=plan.buckets[idx][0], pad_short=False, buckets=(), draws=(), hint=None)
        try:
            frames, info = decode_clip(data, sub)
        except DecodeFailure as e:
            if e.reason != TOO_SHORT or attempt == 1:
                raise
            n, hinted = getattr(e, "src_frames", 0), False  # fewer frames than the metadata or header said
            continue
        got_h, got_w = int(frames.shape[1]), int(frames.shape[2])
        if (got_h, got_w) != (h, w) or info["src_frames"] != n:
            again, _ = buckets.choose(plan.buckets, info["src_frames"], _step(plan, info["src_fps"]), got_h, got_w,
                                      plan.draws)
            info["bucket_metadata_mismatch"] = True
            if again != idx and attempt == 0:
                n, fps, h, w, hinted = info["src_frames"], info["src_fps"], got_h, got_w, False
                continue
        info["bucket"] = idx
        return frames, info
    raise DecodeFailure(DECODE_ERROR, "the clip's size changed between probe and decode")


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
