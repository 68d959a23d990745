"""Buckets of (frames, height, width): clips of every shape, each batch of one shape.

The rule (torch-free; the decoder applies it to each clip's source size and frame count):

1. A clip *fits* a bucket when it needs no upscaling (``height <= source height`` and
   ``width <= source width``: it is resized to cover the bucket, then cropped to the bucket's aspect)
   and has the frames (``(frames - 1) * step + 1 <= source frames``, ``step`` being
   ``data.frame_stride`` or ``source fps / data.fps``). Buckets never pad a short clip.
2. Aspect first: bucket aspect ratios (H/W) within 5% of each other form one group; the clip tries
   the groups nearest its own ratio first (in log space) and uses the first group it fits at all.
3. Largest first, kept with probability ``weight`` (Open-Sora's rule): in that group the buckets it
   fits are walked from the most pixels (frames x height x width) down; at each the clip stays with
   probability ``weight`` (one seeded uniform draw per bucket, so a resumed stream draws the same).
   With every weight 1 a clip goes to the largest bucket it fits. A clip that fits none is counted
   as ``skipped/no_bucket``; one that every draw passed on, as ``skipped/bucket_dropped``.

Batch size per bucket (unless the bucket gives ``batch_size``): ``max(1, round(data.batch_size *
data.num_frames * data.size**2 / (frames * height * width)))`` -- every batch holds about as many
pixels, hence latent tokens (the VAE and patch sizes are the same for all buckets), as
``data.batch_size`` clips of the base shape.

Several ranks: every rank's loader yields exactly one batch per ``next()``, whatever its bucket, so
every rank runs the same number of micro-batches (``train.grad_accum``) per optimizer step and
DeepSpeed's collectives stay in step; ranks may hold different buckets at one step (gradients are
averaged per rank, and tokens per batch are about equal). Sequence-parallel groups, whose ranks
must share one clip, are not bucketed here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

RATIO_TOLERANCE = 0.05  # log-ratio distance within which two bucket aspect ratios are one group
NO_BUCKET, DROPPED = "no_bucket", "bucket_dropped"


@dataclass(frozen=True)
class Bucket:
    """A resolved bucket: its shape, keep probability and batch size."""

    frames: int
    height: int
    width: int
    weight: float
    batch_size: int

    @property
    def pixels(self) -> int:
        return self.frames * self.height * self.width

    @property
    def name(self) -> str:
        return f"{self.frames}x{self.height}x{self.width}"

    def plan(self) -> tuple[int, int, int, float]:
        return (self.frames, self.height, self.width, self.weight)


def _get(entry: Any, key: str, default: Any = None) -> Any:
    if isinstance(entry, dict):
        return entry.get(key, default)
    return getattr(entry, key, default)


def _ratio(text: str) -> float:
    try:
        h, w = (float(x) for x in str(text).split(":"))
        if h <= 0 or w <= 0:
            raise ValueError
    except ValueError:
        raise ValueError(f"data.bucket_table.aspect_ratios: {text!r} is not 'H:W' (e.g. '9:16')") from None
    return h / w


def table_buckets(table: Any) -> list[dict]:
    """An Open-Sora-style table (``BucketTable`` or a dict) -> explicit bucket entries."""
    res, frames = list(_get(table, "resolutions", [])), list(_get(table, "frames", []))
    ratios = [_ratio(r) for r in _get(table, "aspect_ratios", ["1:1"])]
    weights = list(_get(table, "weights", []) or [])
    m = int(_get(table, "multiple", 16))
    if not res or not frames or not ratios:
        raise ValueError("data.bucket_table needs resolutions, frames and aspect_ratios")
    if weights and len(weights) != len(res) * len(frames):
        raise ValueError(f"data.bucket_table.weights needs {len(res) * len(frames)} entries (one per resolution x "
                         f"frames, row-major), got {len(weights)}")
    if m < 1:
        raise ValueError(f"data.bucket_table.multiple must be >= 1, got {m}")
    out = []
    for i, r in enumerate(res):
        for j, f in enumerate(frames):
            w = float(weights[i * len(frames) + j]) if weights else 1.0
            for a in ratios:
                h = max(m, int(round(r * math.sqrt(a) / m)) * m)
                wd = max(m, int(round(r / math.sqrt(a) / m)) * m)
                out.append({"frames": int(f), "height": h, "width": wd, "weight": w})
    return out


def parse_buckets(text: str) -> list[dict]:
    """``"16x256x256,16x192x336:0.5,8x512x512:1:2"`` -> entries ``FxHxW[:weight[:batch_size]]`` (the CLI form)."""
    out = []
    for item in (x.strip() for x in text.split(",")):
        if not item:
            continue
        parts = item.split(":")
        try:
            f, h, w = (int(v) for v in parts[0].lower().split("x"))
            entry: dict[str, Any] = {"frames": f, "height": h, "width": w}
            if len(parts) > 1:
                entry["weight"] = float(parts[1])
            if len(parts) > 2:
                entry["batch_size"] = int(parts[2])
            if len(parts) > 3:
                raise ValueError
        except ValueError:
            raise ValueError(f"bucket {item!r}: write FRAMESxHEIGHTxWIDTH[:weight[:batch_size]], "
                             "e.g. 16x256x256:0.5") from None
        out.append(entry)
    if not out:
        raise ValueError(f"no buckets in {text!r}")
    return out


def batch_size_for(frames: int, height: int, width: int, batch_size: int, num_frames: int, size: int) -> int:
    """The documented rule: about ``batch_size * num_frames * size**2`` pixels per batch."""
    return max(1, int(round(batch_size * num_frames * size * size / (frames * height * width))))


def resolve_buckets(cfg: Any) -> list[Bucket]:
    """``data.buckets`` or ``data.bucket_table`` -> buckets sorted by pixels, largest first; [] when neither."""
    entries = list(_get(cfg, "buckets", []) or [])
    table = _get(cfg, "bucket_table", None)
    if table is not None:
        entries = table_buckets(table)
    out: list[Bucket] = []
    for i, e in enumerate(entries):
        try:
            f, h, w = int(_get(e, "frames")), int(_get(e, "height")), int(_get(e, "width"))
        except (TypeError, ValueError):
            raise ValueError(f"data.buckets[{i}]: needs integer frames, height and width, got {e!r}") from None
        weight = float(_get(e, "weight", 1.0) if _get(e, "weight", None) is not None else 1.0)
        if min(f, h, w) < 1:
            raise ValueError(f"data.buckets[{i}]: frames, height and width must be >= 1, got {f}x{h}x{w}")
        if not 0.0 < weight <= 1.0:
            raise ValueError(f"data.buckets[{i}] ({f}x{h}x{w}): weight is a keep probability in (0, 1], got {weight}")
        bs = _get(e, "batch_size", None)
        if bs is None:
            bs = batch_size_for(f, h, w, int(_get(cfg, "batch_size", 1)), int(_get(cfg, "num_frames", f)),
                                int(_get(cfg, "size", h)))
        elif int(bs) < 1:
            raise ValueError(f"data.buckets[{i}] ({f}x{h}x{w}): batch_size must be >= 1, got {bs}")
        out.append(Bucket(f, h, w, weight, int(bs)))
    names = [b.name for b in out]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"data.buckets: {dup} listed twice")
    return sorted(out, key=lambda b: (-b.pixels, -b.frames, b.height / b.width))


def span(frames: int, step: float) -> int:
    """Source frames a clip of ``frames`` covers at ``step`` source frames per output frame."""
    return int(round((frames - 1) * step)) + 1


def ratio_groups(plans: tuple) -> list[tuple[float, list[int]]]:
    """``[(mean log ratio, [bucket indices])]``: aspect ratios within RATIO_TOLERANCE are one group."""
    order = sorted(range(len(plans)), key=lambda i: math.log(plans[i][1] / plans[i][2]))
    groups: list[list[int]] = []
    for i in order:
        r = math.log(plans[i][1] / plans[i][2])
        if groups and r - math.log(plans[groups[-1][-1]][1] / plans[groups[-1][-1]][2]) <= RATIO_TOLERANCE:
            groups[-1].append(i)
        else:
            groups.append([i])
    return [(sum(math.log(plans[i][1] / plans[i][2]) for i in g) / len(g), g) for g in groups]


def choose(plans: tuple, frames: int, step: float, height: int, width: int,
           draws: tuple) -> tuple[int | None, str | None]:
    """The bucket (index into ``plans``, sorted largest first) for a source clip; ``(None, reason)`` if none.

    ``plans``: ``(frames, height, width, weight)`` per bucket; ``draws``: one uniform in [0, 1) per bucket.
    """
    if height < 1 or width < 1:
        return None, NO_BUCKET
    r = math.log(height / width)
    for _, group in sorted(ratio_groups(plans), key=lambda g: abs(g[0] - r)):
        fits = [i for i in sorted(group) if plans[i][1] <= height and plans[i][2] <= width
                and span(plans[i][0], step) <= frames]
        if not fits:
            continue
        for i in fits:  # plans are sorted largest first, so is `fits`
            if plans[i][3] >= 1.0 or draws[i] < plans[i][3]:
                return i, None
        return None, DROPPED
    return None, NO_BUCKET


def crop_box(height: int, width: int, out_h: int, out_w: int, u: tuple[float, float]) -> tuple[int, int, int, int]:
    """``(y0, x0, h, w)``: the largest region of the output's aspect inside the frame, placed by ``u`` in [0, 1)^2."""
    scale = max(out_h / height, out_w / width)
    h = min(height, max(1, int(round(out_h / scale))))
    w = min(width, max(1, int(round(out_w / scale))))
    y0 = min(int(u[0] * (height - h + 1)), height - h)
    x0 = min(int(u[1] * (width - w + 1)), width - w)
    return y0, x0, h, w
