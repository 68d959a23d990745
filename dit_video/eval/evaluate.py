"""All metrics over a set of clips: per-video rows, an aggregate, flat scalars for logging, a markdown table.

::

    clips  [uint8 [T, H, W, 3]] x N, captions [str] x N (optional)
      per clip: flow (Farneback, once) -> flicker, warping error, motion / dynamic
                caption                -> subject persistence (synthetic captions), CLIP score (--clip)
      over the set: means of the per-clip figures, dynamic degree = fraction dynamic,
                    persistence = fraction persistent; FVD / KVD against real clips (--i3d, --real)

A figure that cannot be computed for a clip (no caption, a caption naming no palette colour, a
pair with no consistent flow) is left out of its mean, and the aggregate says over how many clips
each mean was taken (``n_<figure>``).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from .flicker import temporal_flicker
from .flow import check_frames, farneback_flows
from .motion import motion
from .persistence import subject_persistence
from .warping import warping_error

# per-video figure -> (column title, direction: +1 higher is better, -1 lower is better, 0 neither)
FIGURES: dict[str, tuple[str, int]] = {
    "flicker_mae": ("flicker (0-255)", -1),
    "flicker_score": ("flicker score (VBench)", +1),
    "warp_error": ("warp error", -1),
    "warp_coverage": ("warp coverage", 0),
    "motion": ("motion px/frame", 0),
    "dynamic": ("dynamic", 0),
    "persistent": ("persistent", +1),
    "clip_score": ("CLIP score", +1),
}
# scalar name for logging -> aggregate key
SCALARS = {"eval/flicker": "flicker_mae", "eval/flicker_score": "flicker_score", "eval/warp_error": "warp_error",
           "eval/motion": "motion", "eval/dynamic_degree": "dynamic_degree", "eval/persistence": "persistence",
           "eval/clip_score": "clip_score", "eval/fvd": "fvd", "eval/kvd": "kvd"}


def evaluate_clip(frames: np.ndarray, caption: str | None = None, *, fps: float = 8.0, clip: Any = None,
                  seconds: dict[str, float] | None = None) -> dict[str, Any]:
    """One clip's row: flicker, warping error, motion, persistence (when captioned), CLIP score (``clip``)."""
    seconds = seconds if seconds is not None else {}

    def timed(name: str, fn, *a, **kw):
        t0 = time.perf_counter()
        out = fn(*a, **kw)
        seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - t0
        return out

    frames = check_frames(frames)
    t, h, w, _ = frames.shape
    row: dict[str, Any] = {"caption": caption, "frames": t, "height": h, "width": w}
    row.update(timed("flicker", temporal_flicker, frames))
    flows = timed("flow", farneback_flows, frames)
    row.update(timed("warping", warping_error, frames, flows))
    row.update(timed("motion", motion, frames, flows, fps=fps))
    pers = timed("persistence", subject_persistence, frames, caption) if caption else None
    row["persistence"] = pers
    row["persistent"] = None if pers is None else pers["persistent"]
    if clip is not None and caption:
        row["clip_score"] = timed("clip_score", clip.score, frames, caption)
    return row


def _mean(rows: list[dict], key: str) -> tuple[float, int]:
    vals = [float(r[key]) for r in rows if r.get(key) is not None and not math.isnan(float(r[key]))]
    return (float(np.mean(vals)) if vals else float("nan")), len(vals)


def evaluate_clips(frames: Sequence[np.ndarray], captions: Sequence[str | None] | None = None, *,
                   names: Sequence[str] | None = None, fps: float | Sequence[float] = 8.0, clip: Any = None,
                   i3d: Any = None,
                   real: Sequence[np.ndarray] | None = None, device: str = "cpu", progress: bool = False,
                   kvd: bool = True) -> dict[str, Any]:
    """Evaluate clips (uint8 ``[T, H, W, 3]`` each): ``{"videos": [row, ...], "aggregate": {...}}``.

    ``fps`` (one, or one per clip) scales the dynamic-degree threshold. ``captions`` (one per clip, None
    for none) enable subject persistence and, with ``clip`` (a
    :class:`~dit_video.eval.clip_score.ClipScorer`), the CLIP score. ``i3d`` (a TorchScript I3D,
    :func:`~dit_video.eval.i3d.load_i3d`) with ``real`` clips adds FVD (and KVD unless ``kvd=False``).
    """
    n = len(frames)
    if n == 0:
        raise ValueError("no clips to evaluate")
    captions = list(captions) if captions is not None else [None] * n
    if len(captions) != n:
        raise ValueError(f"{n} clips but {len(captions)} captions")
    if (i3d is None) != (real is None):
        raise ValueError("FVD needs both an I3D model (--i3d) and real videos (--real)")
    names = list(names) if names is not None else [str(i) for i in range(n)]
    fpss = [float(fps)] * n if isinstance(fps, (int, float)) else [float(f) for f in fps]
    seconds: dict[str, float] = {}
    rows = []
    it = range(n)
    if progress:
        from tqdm import tqdm

        it = tqdm(it, desc="eval", unit="video")
    for i in it:
        row = {"name": names[i], **evaluate_clip(frames[i], captions[i], fps=fpss[i], clip=clip, seconds=seconds)}
        rows.append(row)
    agg: dict[str, Any] = {"videos": n}
    for key in ("flicker_mae", "flicker_score", "flicker_max", "warp_error", "warp_error_max", "warp_coverage",
                "warp_coverage_min", "motion", "motion_top5", "clip_score"):
        agg[key], agg[f"n_{key}"] = _mean(rows, key)
    agg["warp_pairs_empty"] = int(sum(r["warp_pairs_empty"] for r in rows))
    agg["dynamic_degree"] = float(np.mean([r["dynamic"] for r in rows]))
    pers = [r["persistence"] for r in rows if r["persistence"] is not None]
    agg["n_persistence"] = len(pers)
    for flag in ("persistent", "present", "one_blob", "smooth", "moves"):
        vals = [p[flag] for p in pers if p[flag] is not None]
        agg["persistence" if flag == "persistent" else f"persistence_{flag}"] = (
            float(np.mean(vals)) if vals else float("nan"))
    if i3d is not None:
        from .frechet import frechet_from_features
        from .i3d import i3d_features
        from .kvd import polynomial_mmd2

        t0 = time.perf_counter()
        fake_f = i3d_features(i3d, [check_frames(f) for f in frames], device=device)
        real_f = i3d_features(i3d, [check_frames(f) for f in real], device=device)
        agg["fvd"] = frechet_from_features(fake_f, real_f)
        if kvd:
            agg["kvd"] = polynomial_mmd2(fake_f, real_f)
        agg["n_real"] = len(real)
        seconds["i3d_fvd"] = time.perf_counter() - t0
    agg["seconds"] = {k: round(v, 4) for k, v in seconds.items()}
    return {"videos": rows, "aggregate": agg}


def scalars(result: dict[str, Any]) -> dict[str, float]:
    """Flat float figures of an :func:`evaluate_clips` result for tensorboard / metrics.jsonl (``eval/flicker``, ...).

    Only figures that were computed and are finite appear.
    """
    agg = result["aggregate"]
    out = {}
    for name, key in SCALARS.items():
        v = agg.get(key)
        if v is not None and math.isfinite(float(v)):
            out[name] = float(v)
    return out


def _json_safe(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def to_json(result: dict[str, Any]) -> str:
    """A result as strict JSON (NaN -> null: a figure that could not be computed)."""
    return json.dumps(_json_safe(result), indent=1)


def _cell(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.4g}"
    return str(v)


def markdown(result: dict[str, Any]) -> str:
    """A markdown table: one row per video and an aggregate row (plus FVD / KVD lines when computed)."""
    rows, agg = result["videos"], result["aggregate"]
    keys = [k for k in FIGURES if any(k in r for r in rows)]
    arrows = {+1: " (higher better)", -1: " (lower better)", 0: ""}
    head = ["video", "caption"] + [FIGURES[k][0] + arrows[FIGURES[k][1]] for k in keys]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["name"], (r.get("caption") or "-").replace("|", "/")] + [_cell(r.get(k)) for k in keys]
        lines.append("| " + " | ".join(cells) + " |")
    agg_key = {"dynamic": "dynamic_degree", "persistent": "persistence"}
    cells = [f"**aggregate ({agg['videos']})**", ""] + [_cell(agg.get(agg_key.get(k, k))) for k in keys]
    lines.append("| " + " | ".join(cells) + " |")
    for k in ("fvd", "kvd"):
        if k in agg:
            lines.append(f"\n{k.upper()} (lower better, {agg['videos']} generated vs {agg['n_real']} real): "
                         f"{_cell(agg[k])}")
    return "\n".join(lines) + "\n"


def summary_line(result: dict[str, Any]) -> str:
    """One line: the aggregate figures a user reads first."""
    a = result["aggregate"]
    parts = [f"{a['videos']} videos", f"flicker {a['flicker_mae']:.2f}/255 (score {a['flicker_score']:.4f})",
             f"warp error {a['warp_error']:.4g}", f"motion {a['motion']:.3g} px/frame",
             f"dynamic {a['dynamic_degree']:.2f}"]
    if a["n_persistence"]:
        parts.append(f"persistent {a['persistence']:.2f} of {a['n_persistence']}")
    if a["n_clip_score"]:
        parts.append(f"CLIP {a['clip_score']:.4f}")
    for k in ("fvd", "kvd"):
        if k in a:
            parts.append(f"{k.upper()} {a[k]:.4g}")
    return ", ".join(parts)
