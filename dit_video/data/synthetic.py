"""Procedurally generated, captioned clips: coloured shapes moving over plain or textured backgrounds.

The demo's and the tests' data; nothing is downloaded. Each clip shows one or more shapes of named,
strongly distinct colours moving in a named direction at a slow or fast speed, bouncing off the
walls, sometimes behind an occluding bar; the caption says what moves where ("a red square moving
right"). Every choice is a keyword argument, so a small vocabulary (one shape, a dark plain
background, three colours, two directions) makes data a tiny model learns in minutes on a CPU.
"""

from __future__ import annotations

import os
import random
import re
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor

import numpy as np

from .codec import PIX_FMTS, encode_mp4
from .writer import prepare_out_dir, shard_name, write_shard, write_stats

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (230, 25, 25), "green": (25, 210, 40), "blue": (40, 70, 255), "yellow": (250, 230, 20),
    "magenta": (235, 30, 235), "cyan": (20, 230, 235), "white": (245, 245, 245), "orange": (255, 135, 0),
}
SHAPES = ("square", "circle", "triangle")
DIRECTIONS: dict[str, tuple[float, float]] = {  # (dy, dx), image coordinates (y down)
    "right": (0.0, 1.0), "left": (0.0, -1.0), "up": (-1.0, 0.0), "down": (1.0, 0.0),
}
SPEEDS = {"slowly": 0.035, "quickly": 0.08}  # fraction of the frame side per frame
BACKGROUNDS = ("plain", "textured")
DARK = [(10, 10, 12), (30, 20, 40), (15, 35, 30), (40, 35, 25)]  # background base colours (one per clip)

# The demo's clips (``dit-video demo``, ``python -m benchmarks quality``): one shape, a square or a circle
# about 40% of the frame across, in one of 4 colours, moving one of 4 ways "quickly" (about half the frame
# in 8 frames) without leaving the frame, on one plain near-black background: 32 captions.
DEMO_BACKGROUND = (10, 10, 12)
DEMO_CLIPS: dict = dict(colors=["red", "green", "blue", "yellow"], shapes=["square", "circle"],
                        directions=["left", "right", "up", "down"], speeds=["quickly"], backgrounds=["plain"],
                        max_objects=1, occlusion_prob=0.0, bounce=False, radius=(0.19, 0.21),
                        background_colors=[DEMO_BACKGROUND])


def demo_captions(spec: dict | None = None) -> list[str]:
    """The 32 captions of :data:`DEMO_CLIPS` (or of ``spec``'s colours, shapes and directions), colour-major
    (``a red square moving left``, ...)."""
    d = {**DEMO_CLIPS, **(spec or {})}
    return [f"{_article(c)} {c} {s} moving {m}" for c in d["colors"] for s in d["shapes"] for m in d["directions"]]


def two_object_captions(n: int = 32, seed: int = 0, spec: dict | None = None) -> list[str]:
    """``n`` distinct captions of two objects of different colours from :data:`DEMO_CLIPS`'s words (or
    ``spec``'s), as :func:`make_clip` writes them ("a red square moving left and a blue circle moving up")."""
    d = {**DEMO_CLIPS, **(spec or {})}
    rng, out = random.Random(f"two:{seed}"), []
    if len(d["colors"]) < 2:
        raise ValueError(f"two objects need two colours, got {d['colors']}")
    limit = (len(d["colors"]) * (len(d["colors"]) - 1) * (len(d["shapes"]) * len(d["directions"])) ** 2)
    if n > limit:
        raise ValueError(f"only {limit} such captions exist, asked for {n}")
    while len(out) < n:
        a, b = rng.sample(list(d["colors"]), 2)
        cap = " and ".join(f"{_article(c)} {c} {rng.choice(d['shapes'])} moving {rng.choice(d['directions'])}"
                           for c in (a, b))
        if cap not in out:
            out.append(cap)
    return out


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _mask(shape: str, yy: np.ndarray, xx: np.ndarray, cy: np.ndarray, cx: np.ndarray, r: float) -> np.ndarray:
    """Boolean masks [T, H, W] of a shape of radius ``r`` centred at (cy[t], cx[t])."""
    dy = yy[None] - cy[:, None, None]
    dx = xx[None] - cx[:, None, None]
    if shape == "square":
        return (np.abs(dy) <= r) & (np.abs(dx) <= r)
    if shape == "circle":
        return dy * dy + dx * dx <= r * r
    if shape == "triangle":  # apex up
        return (dy >= -r) & (dy <= r) & (np.abs(dx) <= (dy + r) / 2)
    raise ValueError(f"unknown shape {shape!r}; choose from {SHAPES}")


def _background(kind: str, size: int, rng: random.Random,
                colors: Sequence[tuple[int, int, int]] | None = None) -> np.ndarray:
    base = np.array(rng.choice(list(colors or DARK)), np.float32)
    img = np.broadcast_to(base, (size, size, 3)).copy()
    if kind == "textured":
        nrng = np.random.default_rng(rng.getrandbits(32))
        period = rng.choice([4, 6, 8])
        yy, xx = np.mgrid[:size, :size]
        pattern = ((yy // period + xx // period) % 2 if rng.random() < 0.5 else (yy + xx) // period % 2)
        img += 35 * pattern[..., None] + nrng.normal(0, 10, (size, size, 1))
    elif kind != "plain":
        raise ValueError(f"unknown background {kind!r}; choose from {BACKGROUNDS}")
    return img


def make_clip(rng: random.Random, *, size: int = 32, num_frames: int = 8, colors: Sequence[str] | None = None,
              shapes: Sequence[str] | None = None, directions: Sequence[str] | None = None,
              speeds: Sequence[str] | None = None, backgrounds: Sequence[str] | None = None,
              max_objects: int = 2, bounce: bool = True, occlusion_prob: float = 0.2,
              speed_in_caption: bool = False, radius: tuple[float, float] = (0.12, 0.18),
              background_colors: Sequence[tuple[int, int, int]] | None = None, path_frames: int | None = None,
              apart: bool = False) -> tuple[np.ndarray, str, dict]:
    """One clip: uint8 frames ``[T, size, size, 3]``, its caption, and what was drawn (for the json).

    ``radius``: the range of a shape's radius (half the side of a square), as a fraction of ``size``.
    ``background_colors``: RGB base colours the background is drawn from (default :data:`DARK`).
    Without ``bounce`` a shape starts where its path of ``path_frames`` frames (default ``num_frames``)
    stays inside the frame when that path is short enough (else as close to the opposite wall as it can),
    so it stays whole to the last frame; a ``path_frames`` beyond ``num_frames`` leaves room to go on.
    ``apart``: every object keeps >= 2 px from the earlier ones in every frame (no occlusion between them, so
    each one is whole in every frame; its start and direction are redrawn, up to 100 times).
    """
    colors = list(colors or COLORS)
    shapes, directions = list(shapes or SHAPES), list(directions or DIRECTIONS)
    speeds, backgrounds = list(speeds or SPEEDS), list(backgrounds or BACKGROUNDS)
    for name, chosen, known in (("color", colors, COLORS), ("shape", shapes, SHAPES),
                                ("direction", directions, DIRECTIONS), ("speed", speeds, SPEEDS),
                                ("background", backgrounds, BACKGROUNDS)):
        bad = [c for c in chosen if c not in known]
        if bad:
            raise ValueError(f"unknown {name}(s) {bad}; choose from {list(known)}")
    if background_colors is not None and (not background_colors or any(
            len(c) != 3 or not all(0 <= v <= 255 for v in c) for c in background_colors)):
        raise ValueError(f"background_colors must be RGB triples in 0..255, got {background_colors}")
    if not 0 < radius[0] <= radius[1] < 0.5:
        raise ValueError(f"radius must be a range (lo, hi) with 0 < lo <= hi < 0.5 (fractions of size), got {radius}")
    bg_kind = rng.choice(backgrounds)
    video = np.broadcast_to(_background(bg_kind, size, rng, background_colors),
                            (num_frames, size, size, 3)).copy()
    yy, xx = np.mgrid[:size, :size].astype(np.float32)
    t = np.arange(num_frames, dtype=np.float32)
    n_obj = rng.randint(1, max(1, min(max_objects, len(colors))))
    objects, phrases, bounced_any = [], [], False
    taken = np.zeros((num_frames, size, size), bool)  # where earlier objects are, 2 px grown (``apart``)
    for color in rng.sample(colors, n_obj):
        shape, direction, speed = rng.choice(shapes), rng.choice(directions), rng.choice(speeds)
        for attempt in range(100 if apart else 1):
            if attempt:  # a path that crosses an earlier one: another start, and another direction too
                direction = rng.choice(directions)
            r = size * rng.uniform(*radius)
            lo, hi = r, size - 1 - r
            v = SPEEDS[speed] * size
            dy, dx = DIRECTIONS[direction]
            # start away from the wall it moves towards, so the named direction is what one sees first
            start = [rng.uniform(lo, hi), rng.uniform(lo, hi)]
            room = 0.35 * (hi - lo) if bounce else max(0.0, hi - lo - v * ((path_frames or num_frames) - 1))
            for axis, d in ((0, dy), (1, dx)):
                if d > 0:
                    start[axis] = rng.uniform(lo, lo + room)
                elif d < 0:
                    start[axis] = rng.uniform(hi - room, hi)
            path = []
            bounced = False
            for start_a, d in ((start[0], dy), (start[1], dx)):
                p = start_a + d * v * t
                if bounce:  # reflect off the walls: fold the path into [lo, hi]
                    span = hi - lo
                    q = np.mod(p - lo, 2 * span)
                    folded = lo + np.where(q > span, 2 * span - q, q)
                    bounced = bounced or bool(np.any(np.abs(folded - p) > 1e-3))
                    p = folded
                path.append(p)
            mask = _mask(shape, yy, xx, path[0], path[1], r)
            if not (apart and (mask & taken).any()):
                break
        else:
            raise ValueError(f"apart: found no path for object {len(objects) + 1} of {n_obj} that keeps 2 px from "
                             f"the others in {size}x{size} frames: lower radius or max_objects, or raise size")
        if apart:
            from scipy.ndimage import binary_dilation

            taken |= binary_dilation(mask, structure=np.ones((1, 3, 3), bool), iterations=2)
        video[mask] = COLORS[color]
        bounced_any = bounced_any or bounced
        phrase = f"{_article(color)} {color} {shape} moving {direction}" + (f" {speed}" if speed_in_caption else "")
        phrases.append(phrase + (" and bouncing back" if bounced else ""))
        objects.append({"color": color, "shape": shape, "direction": direction, "speed": speed,
                        "bounced": bounced})
    occluded = rng.random() < occlusion_prob
    if occluded:  # a grey bar in front of everything
        w = max(2, size // 8)
        if rng.random() < 0.5:
            x0 = rng.randint(0, size - w)
            video[:, :, x0:x0 + w] = 128
        else:
            y0 = rng.randint(0, size - w)
            video[:, y0:y0 + w, :] = 128
    meta = {"objects": objects, "background": bg_kind, "occluded": occluded}
    return np.clip(video, 0, 255).astype(np.uint8), " and ".join(phrases), meta


def _write_one_shard(args: tuple) -> tuple[str, int]:
    out_dir, shard, start, count, size, num_frames, fps, seed, clip_kw, pix_fmt = args
    samples = []
    for i in range(start, start + count):
        rng = random.Random(f"{seed}:{i}")
        frames, caption, meta = make_clip(rng, size=size, num_frames=num_frames, **clip_kw)
        key = f"{shard:05d}{i - start:04d}"
        info = {"key": key, "caption": caption, "status": "success", "fps": fps, "frames": num_frames,
                "width": size, "height": size, "duration": num_frames / fps, "source": "synthetic", **meta}
        samples.append((key, {"mp4": encode_mp4(frames, fps, pix_fmt=pix_fmt), "txt": caption, "json": info}))
    path = os.path.join(out_dir, shard_name(shard))
    n = write_shard(path, samples)
    write_stats(path, count=n, successes=n, failures={})
    return path, n


def write_synthetic_shards(out_dir: str, num: int, *, size: int = 32, num_frames: int = 8, fps: float = 8,
                           seed: int = 0, samples_per_shard: int = 256, workers: int = 1, overwrite: bool = False,
                           colors: Sequence[str] | None = None, shapes: Sequence[str] | None = None,
                           directions: Sequence[str] | None = None, speeds: Sequence[str] | None = None,
                           backgrounds: Sequence[str] | None = None, max_objects: int = 2, bounce: bool = True,
                           occlusion_prob: float = 0.2, speed_in_caption: bool = False,
                           radius: tuple[float, float] = (0.12, 0.18),
                           background_colors: Sequence[tuple[int, int, int]] | None = None,
                           path_frames: int | None = None, pix_fmt: str = "yuv420p", apart: bool = False) -> list[str]:
    """Write ``num`` synthetic clips as shards ``00000.tar, ...`` in ``out_dir``; returns the shard paths.

    ``apart``: objects never touch (:func:`make_clip`).
    ``pix_fmt``: the mp4s' pixel format (:func:`dit_video.data.codec.encode_mp4`). ``"yuv420p"``, what real
    videos use, stores colour at half the resolution, which smears these clips' hard, saturated edges over
    ~2 px: at 24 px frames 4 of 64 demo clips fail :func:`check_clip` after decoding (10 of 64 at 32 px),
    mean error 3.1 / 255; ``"yuv444p"`` keeps full-resolution colour: 0 of 64 fail, error 0.6 / 255.

    Clip ``i`` depends only on ``(seed, i)``, so the same arguments give the same data. Defaults are
    the rich mix; for easy data pass e.g. ``shapes=["square"], colors=["red", "green", "blue"],
    directions=["left", "right"], backgrounds=["plain"], max_objects=1, occlusion_prob=0``.
    """
    if num < 1 or samples_per_shard < 1:
        raise ValueError(f"num ({num}) and samples_per_shard ({samples_per_shard}) must be >= 1")
    if size < 8 or size % 2 or num_frames < 1:
        raise ValueError(f"size must be even and >= 8 (h264 needs even sides), got {size}; num_frames >= 1")
    clip_kw = dict(colors=colors, shapes=shapes, directions=directions, speeds=speeds, backgrounds=backgrounds,
                   max_objects=max_objects, bounce=bounce, occlusion_prob=occlusion_prob,
                   speed_in_caption=speed_in_caption, radius=tuple(radius),
                   background_colors=None if background_colors is None else [tuple(c) for c in background_colors],
                   path_frames=path_frames, apart=apart)
    make_clip(random.Random(0), size=size, num_frames=1, **clip_kw)  # validate names before any work
    prepare_out_dir(out_dir, overwrite)
    if pix_fmt not in PIX_FMTS:
        raise ValueError(f"pix_fmt must be one of {PIX_FMTS}, got {pix_fmt!r}")
    jobs = [(out_dir, s, start, min(samples_per_shard, num - start), size, num_frames, fps, seed, clip_kw, pix_fmt)
            for s, start in enumerate(range(0, num, samples_per_shard))]
    if workers > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(workers) as pool:
            results = list(pool.map(_write_one_shard, jobs))
    else:
        results = [_write_one_shard(j) for j in jobs]
    return [p for p, _ in results]


def colour_shift(video: np.ndarray, caption: str, background: Sequence[float] = DEMO_BACKGROUND) -> float:
    """Pixels the centroid of the caption colour's mass moves along the caption's direction, first -> last frame.

    ``video``: float or uint8 ``[T, H, W, 3]`` in 0..255; soft values are fine (a mean image, an x0
    prediction): a pixel's mass is its projection on (caption colour - ``background``), clipped to [0, 1].
    Captions name a colour and a direction as :func:`make_clip` writes them.
    """
    ws = caption.lower().split()
    name = next((w for w in ws if w in COLORS), None)
    way = next((w for w in ws if w in DIRECTIONS), None)
    if name is None or way is None:
        raise ValueError(f"caption {caption!r} must name a colour ({list(COLORS)}) and a direction "
                         f"({list(DIRECTIONS)})")
    bg = np.asarray(background, np.float32)
    axis = np.asarray(COLORS[name], np.float32) - bg
    mass = np.clip((np.asarray(video, np.float32) - bg) @ axis / float(axis @ axis), 0.0, 1.0)  # [T, H, W]
    yy, xx = np.mgrid[: mass.shape[1], : mass.shape[2]]
    tot = mass.sum((1, 2)) + 1e-6
    cy, cx = (mass * yy).sum((1, 2)) / tot, (mass * xx).sum((1, 2)) / tot
    dy, dx = DIRECTIONS[way]
    return float((cy[-1] - cy[0]) * dy + (cx[-1] - cx[0]) * dx)


def caption_mean_shifts(num: int, *, size: int, num_frames: int, seed: int = 0, **clip_kw) -> dict[str, float]:
    """:func:`colour_shift` of the data's conditional mean ``E[x0 | caption]``, per caption, over ``num`` fresh
    :func:`make_clip` clips (``clip_kw``: its options, e.g. ``**DEMO_CLIPS``): the motion a model's
    prediction at pure noise should carry (``SamplingPipeline.x0_at_noise``)."""
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, int] = {}
    for i in range(num):
        frames, caption, _ = make_clip(random.Random(f"mean:{seed}:{i}"), size=size, num_frames=num_frames,
                                       **clip_kw)
        sums[caption] = sums.get(caption, 0.0) + frames.astype(np.float32)
        counts[caption] = counts.get(caption, 0) + 1
    return {c: colour_shift(sums[c] / counts[c], c) for c in sums}


# Which quarter-corners of its bounding box a shape fills (top-left, top-right, bottom-left, bottom-right):
# a square all four, a circle none, an apex-up triangle the bottom two. Measured on make_clip's pixel
# masks: exact for shapes >= 10 px across (radius >= 0.16 of a 32 px frame); smaller ones blur it.
CORNERS = {"square": (1.0, 1.0, 1.0, 1.0), "circle": (0.0, 0.0, 0.0, 0.0), "triangle": (0.0, 0.0, 1.0, 1.0)}


def corner_fill(mask: np.ndarray) -> np.ndarray:
    """Filled fraction of each corner triangle (legs a quarter of the sides) of ``mask``'s bounding box, [4]."""
    ys, xs = np.nonzero(mask)
    y0, x0 = ys.min(), xs.min()
    h, w = ys.max() - y0 + 1, xs.max() - x0 + 1
    sub = mask[y0:y0 + h, x0:x0 + w]
    iy, ix = np.arange(h)[:, None] + 0.5, np.arange(w)[None, :] + 0.5
    out = []
    for dy in (iy, h - iy):
        for dx in (ix, w - ix):
            corner = np.broadcast_to(dy / h + dx / w < 0.25, sub.shape)
            out.append(float(sub[corner].mean()) if corner.any() else 0.0)
    return np.array(out)


def nearest_shape(mask: np.ndarray) -> str:
    """The shape in :data:`CORNERS` whose corner pattern is closest to ``mask``'s."""
    got = corner_fill(mask)
    return min(CORNERS, key=lambda k: float(np.square(got - np.array(CORNERS[k])).sum()))


def check_clip(frames: np.ndarray, caption: str, *, color_tol: float = 90.0, min_pixels: int = 9,
               min_compactness: float = 0.6, min_shift: float = 1.5,
               background: tuple[int, int, int] | None = None, bg_tol: float = 40.0, bg_share: float = 0.97,
               bg_margin: int = 2) -> dict:
    """Does a clip (uint8 ``[T, H, W, 3]``, e.g. a generated sample) show what a one-object caption says?

    Finds the pixels within ``color_tol`` (RGB distance) of the caption's colour in every frame and
    reports ``present`` (every frame has >= ``min_pixels`` of them), ``one_shape`` (present, and in
    every frame they fill >= ``min_compactness`` of their bounding box, i.e. one solid blob rather
    than scattered pieces), ``moves`` (one shape whose centroid moves >= ``min_shift`` pixels from
    the first to the last frame in the caption's direction) and the measured ``shift`` (dy, dx).
    ``shape_ok`` (None when the caption names no shape): one shape that is, in every frame, the
    captioned one by its corners (:func:`nearest_shape`); ``shapes`` lists what each frame showed, and
    ``corner_fill`` is the mean :func:`corner_fill` over the frames that show the colour (~1 square, ~0 circle).
    With ``background`` (the RGB colour the clips were drawn on): ``background_ok`` says that in
    every frame >= ``bg_share`` of the pixels farther than ``bg_margin`` from the shape are within
    ``bg_tol`` of it (plain, not tinted, no stray blobs); ``background_dist`` is the worst frame's
    mean distance. ``ok``: every check that applies passed.
    Captions name a colour, a shape and a direction as :func:`make_clip` writes them. A caption of several
    objects ("a red square moving left and a blue circle moving up", one colour each) is checked object by
    object (``objects``: each one's result, without the background) and its ``present``, ``one_shape``,
    ``moves``, ``shape_ok`` and ``ok`` hold for all of them; the background is what no object covers.
    """
    phrases = object_phrases(caption)
    if len(phrases) > 1:
        return _check_objects(frames, phrases, color_tol=color_tol, min_pixels=min_pixels,
                              min_compactness=min_compactness, min_shift=min_shift, background=background,
                              bg_tol=bg_tol, bg_share=bg_share, bg_margin=bg_margin)
    ws = caption.lower().split()
    color = next((w for w in ws if w in COLORS), None)
    direction = next((w for w in ws if w in DIRECTIONS), None)
    shape = next((w for w in ws if w in CORNERS), None)
    if color is None:
        raise ValueError(f"caption {caption!r} names no known colour ({list(COLORS)})")
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be uint8 [T, H, W, 3], got shape {frames.shape}")
    pixels = frames.astype(np.float32)
    near = np.linalg.norm(pixels - np.array(COLORS[color], np.float32), axis=-1) < color_tol
    counts = near.sum((1, 2))
    present = bool((counts >= min_pixels).all())
    compact, centres, shapes, fills = [], [], [], []
    for m in near:
        ys, xs = np.nonzero(m)
        if len(ys) < min_pixels:
            compact.append(0.0)
            centres.append((np.nan, np.nan))
            shapes.append(None)
            continue
        box = (ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1)
        compact.append(len(ys) / box)
        centres.append((ys.mean(), xs.mean()))
        shapes.append(nearest_shape(m))
        fills.append(float(corner_fill(m).mean()))
    one_shape = present and min(compact) >= min_compactness
    shift = (float(centres[-1][0] - centres[0][0]), float(centres[-1][1] - centres[0][1]))
    moves = False
    if one_shape and direction is not None:
        dy, dx = DIRECTIONS[direction]
        moves = shift[0] * dy + shift[1] * dx >= min_shift
    shape_ok = None if shape is None else bool(one_shape and all(s == shape for s in shapes))
    result = {"color": color, "direction": direction, "shape": shape, "present": present,
              "one_shape": bool(one_shape), "moves": bool(moves), "shape_ok": shape_ok, "shapes": shapes,
              "shift": shift, "compactness": float(np.mean(compact)),
              "corner_fill": float(np.mean(fills)) if fills else float("nan")}
    background_ok = None
    if background is not None:
        background_ok, result["background_dist"] = _background_check(pixels, near, background, bg_tol, bg_share,
                                                                      bg_margin)
    result["background_ok"] = background_ok
    result["ok"] = bool(one_shape and (direction is None or moves) and shape_ok is not False
                        and background_ok is not False)
    return result


def object_phrases(caption: str) -> list[str]:
    """The object phrases of a :func:`make_clip` caption: "a red square moving left and a blue circle moving up"
    -> ["a red square moving left", "a blue circle moving up"] ("and bouncing back" stays in its phrase)."""
    return [p for p in re.split(r" and (?=an? )", caption.strip()) if p]


def _background_check(pixels: np.ndarray, near: np.ndarray, background, bg_tol: float, bg_share: float,
                      bg_margin: int) -> tuple[bool, float]:
    """(every frame has >= ``bg_share`` of its pixels farther than ``bg_margin`` from ``near`` within ``bg_tol``
    of ``background``, the worst frame's mean distance there)."""
    from scipy.ndimage import binary_dilation

    grown = binary_dilation(near, structure=np.ones((1, 3, 3), bool), iterations=bg_margin)
    dist = np.linalg.norm(pixels - np.array(background, np.float32), axis=-1)
    shares, means = [], []
    for d, g in zip(dist, grown):
        rest = d[~g]
        shares.append(float((rest < bg_tol).mean()) if rest.size else 0.0)
        means.append(float(rest.mean()) if rest.size else float("inf"))
    return min(shares) >= bg_share, max(means)


def _check_objects(frames: np.ndarray, phrases: list[str], *, background, bg_tol: float, bg_share: float,
                   bg_margin: int, color_tol: float, **kw) -> dict:
    """:func:`check_clip` of a caption of several objects, one colour each."""
    per = [check_clip(frames, p, color_tol=color_tol, **kw) for p in phrases]
    colours = [r["color"] for r in per]
    if len(set(colours)) != len(colours):
        raise ValueError(f"the objects of a caption must have different colours to be told apart, got {colours}")
    result: dict = {"objects": per}
    for key in ("present", "one_shape", "moves"):
        result[key] = all(r[key] for r in per)
    shapes = [r["shape_ok"] for r in per if r["shape_ok"] is not None]
    result["shape_ok"] = all(shapes) if shapes else None
    background_ok = None
    if background is not None:
        pixels = frames.astype(np.float32)
        near = np.zeros(frames.shape[:3], bool)
        for c in colours:
            near |= np.linalg.norm(pixels - np.array(COLORS[c], np.float32), axis=-1) < color_tol
        background_ok, result["background_dist"] = _background_check(pixels, near, background, bg_tol, bg_share,
                                                                      bg_margin)
    result["background_ok"] = background_ok
    result["ok"] = all(r["ok"] for r in per) and background_ok is not False
    return result
