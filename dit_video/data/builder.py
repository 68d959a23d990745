"""``make_shards``: a folder of videos -> webdataset shards in the video2dataset layout.

Each video becomes one sample (or, with ``clip_frames``, one sample per consecutive clip):
``{key}.mp4`` (h264; the original bytes when the source is already h264 mp4 and no clipping, fps
change or resizing is asked), ``{key}.txt`` (caption, when known) and ``{key}.json`` (source path,
fps, frames, width, height, duration). A video that cannot be read is written as a json-only sample
with ``status`` and ``error_message``, as video2dataset does for failed downloads, and counted in
its shard's ``{shard}_stats.json``.
"""

from __future__ import annotations

import csv
import json
import logging
import os
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor

import numpy as np

from . import codec
from .writer import StagedOutput, shard_name, write_shard, write_stats

log = logging.getLogger(__name__)
VIDEO_SUFFIXES = {".mp4", ".m4v", ".mkv", ".webm", ".mov", ".avi", ".mpg", ".mpeg", ".flv", ".wmv", ".ts",
                  ".3gp", ".ogv", ".gif"}
_PATH_COLUMNS = ("file", "path", "video", "filename", "key", "name", "videoid")
_CAPTION_COLUMNS = ("caption", "text", "name", "title")


def find_videos(src: str) -> list[str]:
    """Video files under ``src`` (recursively, by extension), sorted; errors name the folder."""
    if not os.path.exists(src):
        raise FileNotFoundError(f"source folder {src!r} does not exist")
    if os.path.isfile(src):
        return [src]
    out = []
    for root, dirs, files in os.walk(src):
        dirs.sort()
        out.extend(os.path.join(root, f) for f in sorted(files) if os.path.splitext(f)[1].lower() in VIDEO_SUFFIXES)
    if not out:
        raise FileNotFoundError(f"no video files ({', '.join(sorted(VIDEO_SUFFIXES))}) under {src!r}")
    return out


def read_captions(path: str) -> dict[str, str]:
    """A csv (``file,caption`` columns, header optional) or jsonl (``{"file": ..., "caption": ...}``) mapping."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"captions file {path!r} does not exist")
    ext = os.path.splitext(path)[1].lower()
    out: dict[str, str] = {}
    if ext in (".jsonl", ".json"):
        with open(path, encoding="utf-8") as f:
            for i, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except ValueError as e:
                    raise ValueError(f"captions file {path!r} line {i} is not JSON: {e}") from None
                k = next((row[c] for c in _PATH_COLUMNS if c in row), None)
                v = next((row[c] for c in ("caption", "text") if c in row), None)
                if k is None or v is None:
                    raise ValueError(f"captions file {path!r} line {i} needs a file key ({'/'.join(_PATH_COLUMNS)}) "
                                     f"and a 'caption' (or 'text'), got keys {sorted(row)}")
                out[str(k)] = str(v)
    elif ext in (".csv", ".tsv"):
        with open(path, encoding="utf-8", newline="") as f:
            rows = list(csv.reader(f, delimiter="\t" if ext == ".tsv" else ","))
        if rows and len(rows[0]) >= 2:
            head = [c.strip().lower() for c in rows[0]]
            if any(c in head for c in _PATH_COLUMNS) and any(c in head for c in ("caption", "text")):
                ki = next(head.index(c) for c in _PATH_COLUMNS if c in head)
                vi = next(head.index(c) for c in ("caption", "text") if c in head)
                rows = rows[1:]
            else:
                ki, vi = 0, 1
            out = {r[ki]: r[vi] for r in rows if len(r) > max(ki, vi)}
    else:
        raise ValueError(f"captions file {path!r}: use .csv/.tsv (file,caption) or .jsonl "
                         "({\"file\": ..., \"caption\": ...})")
    if not out:
        raise ValueError(f"captions file {path!r} holds no captions")
    return out


def match_captions(videos: list[str], src: str, captions: dict[str, str], path: str) -> dict[str, str]:
    """Caption per video, matched by path relative to ``src``, file name, or file stem."""
    out = {}
    for v in videos:
        rel = os.path.relpath(v, src) if os.path.isdir(src) else os.path.basename(v)
        name = os.path.basename(v)
        for k in (rel, rel.replace(os.sep, "/"), name, os.path.splitext(name)[0], v):
            if k in captions:
                out[v] = captions[k]
                break
    if not out:
        raise ValueError(f"no key of captions file {path!r} ({len(captions)} entries, e.g. {next(iter(captions))!r}) "
                         f"matches a video under {src!r} (e.g. {os.path.basename(videos[0])!r}); keys must be file "
                         "names, stems or paths relative to the folder")
    return out


def _even(x: float) -> int:
    return max(2, int(round(x / 2)) * 2)


def _convert(path: str, clip_frames: int | None, fps: float | None, size: int | None) -> list[tuple[bytes, dict]]:
    """Transcode one video to h264 mp4 clips: ``[(mp4 bytes, metadata)]``."""
    import av

    out: list[tuple[bytes, dict]] = []
    with av.open(path) as container:
        if not container.streams.video:
            reason = codec.NO_VIDEO if (container.streams.audio or container.streams.subtitles) else codec.DECODE_ERROR
            raise codec.DecodeFailure(reason, "no video stream (truncated or not a video)")
        stream = container.streams.video[0]
        if stream.codec_context is None:
            raise codec.DecodeFailure(codec.UNSUPPORTED_CODEC, "FFmpeg has no decoder for the video stream's codec")
        src_fps = float(stream.average_rate or stream.guessed_rate or 25)
        out_fps = fps or src_fps
        frames: list[np.ndarray] = []
        start_frame = [0]
        next_t, n_src = 0.0, 0

        def flush() -> None:
            data = codec.encode_mp4(np.stack(frames), out_fps)
            h, w = frames[0].shape[:2]
            out.append((data, {"fps": out_fps, "frames": len(frames), "width": w, "height": h,
                               "duration": len(frames) / out_fps, "clip_index": len(out),
                               "start_time": start_frame[0] / out_fps}))
            start_frame[0] += len(frames)
            frames.clear()

        for frame in container.decode(stream):
            t = float(frame.time) if frame.time is not None else n_src / src_fps
            n_src += 1
            if fps is not None:
                if t + 1e-6 < next_t:
                    continue
                next_t += 1.0 / fps
            w, h = frame.width, frame.height
            if size is not None:
                scale = size / min(w, h)
                w, h = _even(w * scale), _even(h * scale)
            else:
                w, h = _even(w - 1) if w % 2 else w, _even(h - 1) if h % 2 else h
            frames.append(frame.to_ndarray(format="rgb24", width=w, height=h))
            if clip_frames and len(frames) == clip_frames:
                flush()
        if frames and (not clip_frames or not out):  # a whole video, or one shorter than a clip
            flush()
    if not out:
        raise codec.DecodeFailure(codec.DECODE_ERROR, "no frames decoded")
    return out


def process_video(path: str, clip_frames: int | None = None, fps: float | None = None,
                  size: int | None = None) -> tuple[list[tuple[bytes, dict]], str | None, str]:
    """One source video -> ``(samples, failure reason or None, error message)``; never raises on bad media."""
    try:
        with open(path, "rb") as f:
            data = f.read()
        if not data:
            raise codec.DecodeFailure(codec.EMPTY, "zero-byte file")
        meta = codec.probe(data)
        keep = clip_frames is None and fps is None and size is None
        if keep and meta["codec"] == "h264" and path.lower().endswith((".mp4", ".m4v")):
            return [(data, {k: meta[k] for k in ("fps", "frames", "width", "height", "duration")})], None, ""
        return _convert(path, clip_frames, fps, size), None, ""
    except codec.DecodeFailure as e:
        return [], e.reason, e.message
    except Exception as e:  # PyAV errors on broken media: a failed sample, not a crash
        return [], codec.DECODE_ERROR, f"{type(e).__name__}: {e}"


def _process(args: tuple) -> tuple[list[tuple[bytes, dict]], str | None, str]:
    return process_video(*args)


def make_shards(src: str, out: str, *, captions: str | None = None, clip_frames: int | None = None,
                fps: float | None = None, size: int | None = None, samples_per_shard: int = 1000,
                workers: int = 1, overwrite: bool = False, progress: bool = True) -> list[str]:
    """Write the videos under ``src`` as shards in ``out``; returns the shard paths. See the module doc."""
    if samples_per_shard < 1:
        raise ValueError(f"--samples-per-shard must be >= 1, got {samples_per_shard}")
    if clip_frames is not None and clip_frames < 1:
        raise ValueError(f"--clip-frames must be >= 1, got {clip_frames}")
    if size is not None and size < 2:
        raise ValueError(f"--size must be >= 2, got {size}")
    if fps is not None and fps <= 0:
        raise ValueError(f"--fps must be > 0, got {fps}")
    videos = find_videos(src)
    caps = match_captions(videos, src, read_captions(captions), captions) if captions else {}
    staged = StagedOutput(out, overwrite)  # new shards appear (and old ones of ours go) only once all are written
    digits = max(4, len(str(samples_per_shard - 1)))
    jobs = [(v, clip_frames, fps, size) for v in videos]
    state = {"shard": 0, "buf": [], "failures": {}, "ok": 0, "paths": []}

    def close_shard() -> None:
        if not state["buf"]:
            return
        path = staged.path(shard_name(state["shard"]))
        n = write_shard(path, state["buf"])
        write_stats(path, count=n, successes=state["ok"], failures=state["failures"])
        state["paths"].append(path)
        state.update(shard=state["shard"] + 1, buf=[], failures={}, ok=0)

    def add(members: dict, failure: str | None) -> None:
        key = f"{state['shard']:05d}{len(state['buf']):0{digits}d}"
        members["json"]["key"] = key
        state["buf"].append((key, members))
        if failure:
            state["failures"][failure] = state["failures"].get(failure, 0) + 1
        else:
            state["ok"] += 1
        if len(state["buf"]) == samples_per_shard:
            close_shard()

    def _add_video(video: str, samples: list, reason: str | None, message: str) -> None:
        source = os.path.relpath(video, src) if os.path.isdir(src) else video
        caption = caps.get(video)
        if reason is not None:
            log.warning("skipping %s: %s %s", video, reason, message)
            add({"json": {"source": source, "status": f"failed_{reason}", "error_message": message,
                          **({"caption": caption} if caption is not None else {})}}, reason)
            return
        for data, meta in samples:
            members: dict = {"mp4": data, "json": {"source": source, "status": "success", **meta}}
            if caption is not None:
                members["txt"] = caption
                members["json"]["caption"] = caption
            add(members, None)

    pool = ProcessPoolExecutor(workers) if workers > 1 else None
    results: Iterator = pool.map(_process, jobs, chunksize=4) if pool else map(_process, jobs)
    from tqdm import tqdm

    bar = tqdm(total=len(jobs), unit="video", desc="make-shards", disable=not progress)
    try:
        for video, (samples, reason, message) in zip(videos, results):
            bar.update(1)
            _add_video(video, samples, reason, message)
        close_shard()
    except BaseException:
        staged.abort()
        raise
    finally:
        bar.close()
        if pool:
            pool.shutdown(cancel_futures=True)
    final = staged.commit()
    return [p for p in final if p.endswith(".tar")]


def describe(paths: list[str]) -> str:
    """One line per run: shards, samples, failures by reason (from the stats files)."""
    total, ok, failures = 0, 0, {}
    for p in paths:
        with open(p[: -len(".tar")] + "_stats.json") as f:
            s = json.load(f)
        total, ok = total + s["count"], ok + s["successes"]
        for k, v in s["failures"].items():
            failures[k] = failures.get(k, 0) + v
    return f"{len(paths)} shard(s), {total} samples, {ok} ok, failures: {failures or 'none'}"


