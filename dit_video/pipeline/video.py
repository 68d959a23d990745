"""Video files in and out of inference.

Writing: [C, T, H, W] in [-1, 1] -> uint8 frames -> mp4 (PyAV, H.264) and gif (Pillow).
Reading: a conditioning clip (any file the loader's decoders read: decord, PyAV fallback) ->
[1, C, k, H, W] in [-1, 1] at the model's pixel size.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch


def to_uint8_frames(video: torch.Tensor) -> np.ndarray:
    """[C, T, H, W] in [-1, 1] -> [T, H, W, 3] uint8 (one channel is repeated to RGB)."""
    if video.dim() != 4:
        raise ValueError(f"video must be [C, T, H, W], got shape {tuple(video.shape)}")
    x = ((video.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    x = x.permute(1, 2, 3, 0).cpu().numpy()
    if x.shape[-1] == 1:
        x = np.repeat(x, 3, axis=-1)
    return x[..., :3]


def upscale(frames: np.ndarray, factor: int) -> np.ndarray:
    """Nearest-neighbour upscaling so that tiny clips are viewable."""
    if factor <= 1:
        return frames
    return frames.repeat(factor, axis=-3).repeat(factor, axis=-2)


def write_mp4(frames: np.ndarray, path: str | Path, fps: int = 8) -> Path:
    """[T, H, W, 3] uint8 -> H.264 mp4 (sizes rounded up to even by edge padding)."""
    import av

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    t, h, w, _ = frames.shape
    ph, pw = h % 2, w % 2
    if ph or pw:
        frames = np.pad(frames, ((0, 0), (0, ph), (0, pw), (0, 0)), mode="edge")
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264" if "libx264" in av.codecs_available else "mpeg4", rate=fps)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "12"} if stream.codec_context.name == "libx264" else {}
        for f in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_gif(frames: np.ndarray, path: str | Path, fps: int = 8) -> Path:
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    images = [Image.fromarray(f) for f in frames]
    images[0].save(path, save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0)
    return path


def write_video(video: torch.Tensor, path: str | Path, fps: int = 8, scale: int = 1) -> tuple[Path, Path]:
    """[C, T, H, W] in [-1, 1] -> ``path`` (.mp4) and the same name with .gif; returns both paths."""
    frames = upscale(to_uint8_frames(video), scale)
    path = Path(path)
    mp4 = write_mp4(frames, path.with_suffix(".mp4"), fps)
    gif = write_gif(frames, path.with_suffix(".gif"), fps)
    return mp4, gif


def read_video(path: str | Path, frames: int, size: tuple[int, int] | None = None) -> torch.Tensor:
    """The first ``frames`` frames of a video file -> [1, 3, frames, H, W] in [-1, 1], resized to ``size``.

    Decoded by :func:`dit_video.data.codec.decode_clip` (decord, PyAV fallback), like training data.
    """
    import torch.nn.functional as F

    from ..data import codec

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"video {p} not found")
    if frames < 1:
        raise ValueError(f"frames must be >= 1, got {frames}")
    try:
        x, _ = codec.decode_clip(p.read_bytes(), codec.ClipPlan(num_frames=frames, u_start=0.0, pad_short=False))
    except codec.DecodeFailure as e:
        if e.reason == codec.TOO_SHORT:
            raise ValueError(f"{p} has fewer than the {frames} frames asked for ({e.message})") from None
        raise ValueError(f"{p}: cannot decode it ({e})") from None
    v = torch.from_numpy(np.ascontiguousarray(x)).permute(0, 3, 1, 2).float() / 127.5 - 1  # [k, C, H, W]
    if size is not None and tuple(v.shape[-2:]) != tuple(size):
        v = F.interpolate(v, size=tuple(size), mode="bilinear", align_corners=False, antialias=True)
    return v.permute(1, 0, 2, 3)[None]
