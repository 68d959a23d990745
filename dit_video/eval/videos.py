"""Reading the videos to evaluate: a folder (or one file) of mp4 / gif files or webdataset shards (.tar).

Captions come from, in order of precedence: a CSV (``--captions``: a ``caption`` column and a
``video`` / ``file`` / ``name`` / ``path`` column matched by file name or stem), the shard's ``key.txt``,
or a ``<stem>.txt`` beside the video. A folder holding ``x.mp4`` and ``x.gif`` (as ``dit-video
sample`` and the demo write them) is read once, from the mp4 (gifs are palette-quantized and Pillow
merges their repeated frames; see :func:`decode_gif`). Shards are read member by member with
:mod:`tarfile` (nothing is extracted to disk). A video that cannot be decoded is skipped and counted.
"""

from __future__ import annotations

import csv
import io
import logging
import tarfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)
VIDEO_EXTS = (".mp4", ".gif")
DEFAULT_FPS = 8.0


@dataclass
class Video:
    """One decoded video: uint8 frames ``[T, H, W, 3]``, its caption (or None) and frame rate."""

    name: str
    frames: np.ndarray
    caption: str | None
    fps: float


def decode_mp4(data: bytes) -> tuple[np.ndarray, float]:
    """All frames of an mp4 (PyAV) as uint8 ``[T, H, W, 3]`` and its fps."""
    import av

    with av.open(io.BytesIO(data)) as container:
        if not container.streams.video:
            raise ValueError("no video stream")
        stream = container.streams.video[0]
        fps = float(stream.average_rate or stream.guessed_rate or 0) or DEFAULT_FPS
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
    if not frames:
        raise ValueError("no frames decoded")
    return np.stack(frames), fps


def decode_gif(data: bytes) -> tuple[np.ndarray, float]:
    """All frames of a gif (Pillow) as uint8 ``[T, H, W, 3]`` and its fps.

    Pillow writes consecutive identical frames as one frame with their durations added (a still clip
    becomes one frame), so each frame is repeated round(duration / shortest duration) times; the fps is
    1000 / shortest duration (ms). A gif that is one frame throughout cannot be told from a still image.
    """
    from PIL import Image, ImageSequence

    frames, durations = [], []
    with Image.open(io.BytesIO(data)) as im:
        for f in ImageSequence.Iterator(im):
            frames.append(np.asarray(f.convert("RGB")))
            durations.append(float(f.info.get("duration") or 0))
    base = min((d for d in durations if d > 0), default=0.0)
    if base > 0:
        reps = [max(1, round(d / base)) if d > 0 else 1 for d in durations]
        frames = [f for f, r in zip(frames, reps) for _ in range(r)]
    return np.stack(frames), (1000.0 / base if base else DEFAULT_FPS)


def _decode(name: str, data: bytes) -> tuple[np.ndarray, float]:
    return decode_gif(data) if name.lower().endswith(".gif") else decode_mp4(data)


def read_captions_csv(path: str | Path) -> dict[str, str]:
    """``{file name and stem: caption}`` from a CSV with a ``caption`` column and a video-name column."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--captions: no CSV file at {path}")
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        cols = {c.strip().lower(): c for c in (reader.fieldnames or [])}
        key = next((cols[c] for c in ("video", "file", "name", "path") if c in cols), None)
        if "caption" not in cols or key is None:
            raise ValueError(f"--captions: {path} needs a header with a 'caption' column and one of "
                             f"video/file/name/path; got {reader.fieldnames}")
        out = {}
        for row in reader:
            name = Path((row[key] or "").strip()).name
            if name:
                out[name] = out[Path(name).stem] = row[cols["caption"]]
    return out


def _shard_videos(path: Path, skipped: Counter, max_frames: int | None) -> list[Video]:
    groups: dict[str, dict[str, bytes]] = {}
    with tarfile.open(path) as tar:
        for member in tar:
            if not member.isfile():
                continue
            base = member.name.rsplit("/", 1)[-1]
            if "." not in base:
                continue
            key, ext = base.split(".", 1)
            if ext.lower() in ("mp4", "gif", "txt"):
                groups.setdefault(member.name[: len(member.name) - len(base)] + key, {})[ext.lower()] = (
                    tar.extractfile(member).read())
    videos = []
    for key, parts in groups.items():
        ext = "mp4" if "mp4" in parts else "gif" if "gif" in parts else None
        if ext is None:
            continue
        caption = parts["txt"].decode("utf-8", "replace").strip() if "txt" in parts else None
        v = _try(f"{path.name}/{key}.{ext}", parts[ext], caption, skipped, max_frames)
        if v is not None:
            videos.append(v)
    return videos


def _try(name: str, data: bytes, caption: str | None, skipped: Counter, max_frames: int | None) -> Video | None:
    try:
        frames, fps = _decode(name, data)
    except Exception as e:  # noqa: BLE001 - any decoder error: skip the video, count it, say why
        skipped["undecodable"] += 1
        log.warning("skipping %s: cannot decode (%s: %s)", name, type(e).__name__, str(e).splitlines()[0][:200]
                    if str(e) else "")
        return None
    if frames.shape[0] < 2:
        skipped["one_frame"] += 1
        log.warning("skipping %s: one frame (temporal metrics need two; a gif of one repeated frame is stored as one)",
                    name)
        return None
    return Video(name, frames[:max_frames] if max_frames else frames, caption, fps)


def read_videos(path: str | Path, *, flag: str = "VIDEOS", captions: dict[str, str] | None = None,
                max_frames: int | None = None) -> tuple[list[Video], Counter]:
    """The videos at ``path`` (a folder, an mp4 / gif file or a .tar shard) and the counts of those skipped.

    ``flag`` names the argument in errors. ``captions`` (from :func:`read_captions_csv`) overrides
    shard and sidecar captions. ``max_frames`` keeps the first frames of each video.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{flag}: no such file or folder: {path}")
    skipped: Counter = Counter()
    files = sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]
    stems_mp4 = {p.stem for p in files if p.suffix.lower() == ".mp4"}
    videos: list[Video] = []
    for p in files:
        ext = p.suffix.lower()
        if ext == ".tar":
            videos += _shard_videos(p, skipped, max_frames)
        elif ext in VIDEO_EXTS:
            if ext == ".gif" and p.stem in stems_mp4:
                skipped["gif_beside_mp4"] += 1
                continue
            side = p.with_suffix(".txt")
            caption = side.read_text(encoding="utf-8").strip() if side.is_file() else None
            v = _try(p.name, p.read_bytes(), caption, skipped, max_frames)
            if v is not None:
                videos.append(v)
    if captions is not None:
        for v in videos:
            base = v.name.rsplit("/", 1)[-1]
            c = captions.get(base, captions.get(Path(base).stem))
            if c is not None:
                v.caption = c
    if not videos:
        raise ValueError(f"{flag}: no readable mp4 / gif / .tar shard in {path} "
                         f"({sum(skipped.values())} skipped: {dict(skipped)})")
    return videos, skipped
