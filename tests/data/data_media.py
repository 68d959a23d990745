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


def atoms(data: bytes) -> dict[bytes, tuple[int, int]]:
    """Top-level mp4 boxes: ``{type: (offset, size)}``."""
    out, i = {}, 0
    while i + 8 <= len(data):
        n = int.from_bytes(data[i:i + 4], "big")
        out[data[i + 4:i + 8]] = (i, n)
        if n < 8:
            break
        i += n
    return out


def no_moov_mp4(data: bytes) -> bytes:
    """The clip without its ``moov`` box (the index: a download cut before it, or a faststart gone wrong)."""
    at, n = atoms(data)[b"moov"]
    return data[:at] + data[at + n:]


def idr_slices(data: bytes) -> list[tuple[int, int]]:
    """``(offset, length)`` of the IDR slice NAL units (type 5) in the mdat of an avc1 mp4 (4-byte lengths)."""
    at, n = atoms(data)[b"mdat"]
    i, end, out = at + 8, at + n, []
    while i + 5 <= end:
        length = int.from_bytes(data[i:i + 4], "big")
        if data[i + 4] & 0x1F == 5:
            out.append((i + 4, length))
        i += 4 + length
    return out


def bit_flipped_mp4(data: bytes, seed: int, flips: int = 16) -> bytes:
    """Flip ``flips`` bits in the payload of the first keyframe's slice (always decoded, so always seen)."""
    import random

    off, length = idr_slices(data)[0]
    rng = random.Random(seed)
    out = bytearray(data)
    for _ in range(flips):
        p = off + 8 + rng.randrange(length - 8)  # past the NAL and slice headers' first bytes
        out[p] ^= 1 << rng.randrange(8)
    return bytes(out)
