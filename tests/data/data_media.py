"""Media for the data tests, made with PyAV in memory (no files shipped, nothing downloaded)."""

from __future__ import annotations

import io

import av
import numpy as np

from dit_video.data.codec import encode_mp4


def solid_clip(color, t: int = 6, h: int = 24, w: int = 32) -> np.ndarray:
    """Frames of one flat colour."""
    x = np.empty((t, h, w, 3), np.uint8)
    x[:] = np.asarray(color, np.uint8)
    return x


def clip_bytes(color=(200, 40, 40), t: int = 6, h: int = 24, w: int = 32, fps: float = 8) -> bytes:
    return encode_mp4(solid_clip(color, t, h, w), fps)


def audio_only_mp4() -> bytes:
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as c:
        s = c.add_stream("aac", rate=16000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        frame.sample_rate = 16000
        for p in s.encode(frame):
            c.mux(p)
        for p in s.encode():
            c.mux(p)
    return buf.getvalue()


def unsupported_codec_mp4() -> bytes:
    """A valid mp4 whose video sample entry names a codec FFmpeg has no decoder for."""
    data = clip_bytes()
    at = data.index(b"avc1", data.index(b"stsd"))  # the sample entry, not the ftyp brand list
    return data[:at] + b"zzz9" + data[at + 4:]
