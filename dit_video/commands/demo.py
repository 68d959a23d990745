"""``dit-video demo [--minutes M] [--steps N] [--out runs/demo]``: the whole pipeline on a CPU, no downloads.

Synthetic captioned clips (:data:`dit_video.data.synthetic.DEMO_CLIPS`: one square or circle of 4 colours
moving quickly left, right, up or down on a plain dark background; 32 captions) -> webdataset shards ->
train the ``tiny`` text-conditioned VideoDiT in pixel space with the learned TinyTextEncoder
(``configs/train/demo.yaml``, DeepSpeed engine, one process; the time budget ends the run and drives the LR
schedule) -> export the EMA weights -> sample one clip per caption -> ``OUT/`` holds the sample mp4/gif
files, a filmstrip PNG (rows = captions, columns = frames), the loss plot and ``summary.txt``: per caption,
whether the sample shows one solid shape of the captioned colour and shape moving the captioned way on the
plain background (:func:`dit_video.data.synthetic.check_clip`), and the high-noise probe (how far the
model's x0 prediction at pure noise moves the captioned way, against the data's mean clip).
"""

from __future__ import annotations

import argparse
import re
import shutil
import time
from pathlib import Path

import numpy as np


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ..data.codec import PIX_FMTS

    p.add_argument("--minutes", type=float, default=12.0,
                   help="wall-time budget for training (default 12; data, export and sampling take ~1 more)")
    p.add_argument("--steps", type=int, default=None, help="training steps (default: the recipe's, cut by --minutes)")
    p.add_argument("--out", default="runs/demo", help="output directory (default runs/demo; replaced)")
    p.add_argument("--clips", type=int, default=1024, help="synthetic clips to generate (default 1024)")
    p.add_argument("--size", type=int, default=None, help="frame size (default: the recipe's data.size)")
    p.add_argument("--frames", type=int, default=None, help="frames per clip (default: the recipe's model.num_frames)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--pix-fmt", default="yuv444p", choices=PIX_FMTS,
                   help="the shards' mp4 pixel format (default yuv444p: full-resolution colour; yuv420p halves it "
                        "and blurs the shapes' edges)")
    p.add_argument("--config", default=None, help="recipe (default configs/train/demo.yaml)")
    p.add_argument("overrides", nargs="*", help="recipe overrides, e.g. model.hidden_size=96 data.batch_size=8")


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def caption_check(frames: np.ndarray, caption: str, size: int, min_shift: float = 0.25) -> dict:
    """The demo's one check of a clip against its caption (every count in ``summary.txt`` uses it):
    :func:`~dit_video.data.synthetic.check_clip` on the demo's background, moving ``min_shift`` x the frame side."""
    from ..data.synthetic import DEMO_BACKGROUND, check_clip

    return check_clip(frames, caption, background=DEMO_BACKGROUND, min_shift=min_shift * size)


def judge(frames: list[np.ndarray], prompts: list[str], pipe, size: int, seed: int) -> list[dict]:
    """Per caption: :func:`~dit_video.data.synthetic.check_clip` of its sample, and the high-noise probe (how
    far the model's x0 prediction at pure noise moves the captioned way, against the data's mean clip)."""
    from ..data.synthetic import DEMO_CLIPS, caption_mean_shifts, colour_shift
    from ..pipeline.video import to_uint8_frames

    t = frames[0].shape[0]
    want = caption_mean_shifts(max(512, 24 * len(prompts)), size=size, num_frames=t, seed=seed, **DEMO_CLIPS)
    x0 = pipe.x0_at_noise(prompts, draws=8, seed=seed)
    rows = []
    for f, p, x in zip(frames, prompts, x0):
        r = caption_check(f, p, size)
        got = colour_shift(to_uint8_frames(x), p)
        rows.append({**r, "caption": p, "probe_px": got, "data_px": want.get(p, float("nan")),
                     "probe_ratio": got / want[p] if want.get(p) else float("nan")})
    return rows


def continuation(pipe, size: int, num_frames: int, k: int, sample_cfg, seed: int, n: int = 16) -> dict:
    """Video prediction on ``n`` held-out clips (drawn with another seed than the training shards): the model
    gets each clip's first ``k`` frames and generates the rest, with no caption and with a caption that
    contradicts the given motion (the opposite direction). Per case, by :func:`~dit_video.data.synthetic.check_clip`
    of the whole clip against the clip's own caption: how many continue the given motion (one solid shape moving
    the given way) and how many pass every check (also its shape and the plain background); for the contradicting
    caption also how many turn the caption's way after the given frames; the clips for a filmstrip."""
    import random

    import torch

    from ..data.pipeline import to_float
    from ..data.synthetic import DEMO_CLIPS, make_clip
    from ..pipeline.video import to_uint8_frames

    made = [make_clip(random.Random(f"continue:{seed}:{i}"), size=size, num_frames=num_frames, **DEMO_CLIPS)
            for i in range(n)]
    given = to_float(torch.from_numpy(np.stack([f for f, _, _ in made])).permute(0, 4, 1, 2, 3))
    caps = [c for _, c, _ in made]
    opposite = {"left": "right", "right": "left", "up": "down", "down": "up"}
    contra = [" ".join(opposite.get(w, w) for w in c.split()) for c in caps]
    out: dict = {"captions": caps}
    for case, prompts, scale in (("no_caption", [""] * n, 1.0), ("contradicting", contra, sample_cfg.guidance_scale)):
        v = pipe.generate(prompts, steps=sample_cfg.steps, sampler=sample_cfg.sampler, guidance_scale=scale,
                          seed=seed, cond_video=given[:, :, :k], cond_frames=k,
                          guidance_interval=tuple(sample_cfg.guidance_interval))
        clips = [to_uint8_frames(x) for x in v]
        given_way = [caption_check(f, c, size) for f, c in zip(clips, caps)]
        out[case] = {"clips": clips, "continues": sum(r["moves"] for r in given_way),
                     "all_checks": sum(r["ok"] for r in given_way),
                     "turns": sum(caption_check(f[k - 1:], c, size, min_shift=0.1)["moves"]
                                  for f, c in zip(clips, contra))}
    return out


def seam_jump(clip: np.ndarray, boundaries: list[int]) -> float:
    """How much larger the frame-to-frame change is where a window starts (frame ``b`` of ``boundaries``)
    than elsewhere: mean over the boundaries of mean|f[b] - f[b-1]| / the median of the other consecutive
    pairs' (1: no seam)."""
    d = np.abs(np.diff(clip.astype(np.float32), axis=0)).mean(axis=(1, 2, 3))  # [T-1]: pair (i, i+1)
    at = [b - 1 for b in boundaries]
    rest = np.delete(d, at)
    return float(np.mean(d[at]) / max(float(np.median(rest)), 1e-6))


def longer(pipe, prompts: list[str], trained: int, sample_cfg, seed: int, size: int) -> dict:
    """Every caption at twice the trained length (windows of the trained length, each continuing the last
    ``diffusion.cond_frames`` of the one before): :func:`~dit_video.data.synthetic.check_clip` of the whole clip
    against its caption (same thresholds), and the frame-difference jump at the window boundaries."""
    from ..pipeline.video import to_uint8_frames

    total = 2 * trained
    window, overlap = pipe.windows(total)
    v = pipe.generate(prompts, num_frames=total, steps=sample_cfg.steps, sampler=sample_cfg.sampler,
                      guidance_scale=sample_cfg.guidance_scale, seed=seed,
                      guidance_interval=tuple(sample_cfg.guidance_interval))
    clips = [to_uint8_frames(x) for x in v]
    bounds = list(range(window, total, window - overlap))
    checks = [caption_check(f, p, size) for f, p in zip(clips, prompts)]
    jumps = [seam_jump(f, bounds) for f in clips]
    return {"clips": clips, "frames": total, "boundaries": bounds, "checks": checks,
            "seam_jump": float(np.mean(jumps)), "seam_jump_max": float(np.max(jumps))}


def summary_table(rows: list[dict]) -> str:
    """The per-caption table of ``summary.txt``."""
    out = ["caption | ok | one shape | shape seen | moved px (dy, dx) | plain bg | probe px / data px"]
    for r in rows:
        seen = "/".join(sorted({s for s in r["shapes"] if s})) or "-"
        out.append(f"{r['caption']} | {'yes' if r['ok'] else 'no'} | {'yes' if r['one_shape'] else 'no'} | {seen} | "
                   f"({r['shift'][0]:+.1f}, {r['shift'][1]:+.1f}) | {'yes' if r['background_ok'] else 'no'} | "
                   f"{r['probe_px']:+.1f} / {r['data_px']:+.1f}")
    return "\n".join(out) + "\n"


def run(args: argparse.Namespace) -> int:
    from ..train.config import CONFIG_ROOT, load_train_config

    t0 = time.monotonic()
    if args.minutes <= 0:
        raise ValueError(f"--minutes must be > 0, got {args.minutes}")
    if args.steps is not None and args.steps < 1:
        raise ValueError(f"--steps must be >= 1, got {args.steps}")
    out = Path(args.out)
    recipe = Path(args.config) if args.config else CONFIG_ROOT / "train" / "demo.yaml"
    base = load_train_config(recipe)  # the recipe's own size/frames, before the demo's overrides
    size = args.size or base.data.size
    frames = args.frames or base.model.num_frames
    overrides = [
        f"data.shards={out / 'shards'}", f"train.out_dir={out / 'train'}", f"train.seed={args.seed}",
        f"model.sample_size=[{size},{size}]", f"model.num_frames={frames}", f"train.max_minutes={args.minutes}",
    ]
    if args.steps is not None:
        overrides.append(f"train.steps={args.steps}")
    cfg = load_train_config(recipe, overrides + list(args.overrides))  # config errors before any work
    from ..data import write_synthetic_shards
    from ..data.synthetic import DEMO_CLIPS, demo_captions

    if out.exists():
        for sub in ("shards", "train", "weights", "samples"):
            shutil.rmtree(out / sub, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    print(f"[demo] writing {args.clips} synthetic clips ({size}x{size}, {frames} frames) to {out / 'shards'}")
    write_synthetic_shards(str(out / "shards"), args.clips, size=size, num_frames=frames, fps=8, seed=args.seed,
                           samples_per_shard=256, pix_fmt=args.pix_fmt, **DEMO_CLIPS)

    from ..pipeline.plots import filmstrip
    from ..pipeline.sampling import SamplingPipeline
    from ..pipeline.video import to_uint8_frames, write_video
    from ..train.export import export_checkpoint
    from ..train.trainer import train

    print(f"[demo] training for {args.minutes:g} min (the LR schedule follows the time; at most "
          f"{cfg.train.steps} steps) in {out / 'train'}")
    result = train(cfg, recipe_dir=recipe.parent)
    t_train = result.seconds
    weights = export_checkpoint(result.out_dir, out / "weights")
    print(f"[demo] trained {result.step} steps in {t_train / 60:.1f} min; EMA weights in {weights}")

    pipe = SamplingPipeline.from_pretrained(weights)
    s = cfg.sample
    prompts = demo_captions()  # every caption of the clips, whatever the recipe's periodic-sample prompts
    videos = pipe.generate(prompts, steps=s.steps, sampler=s.sampler, guidance_scale=s.guidance_scale,
                           seed=args.seed, guidance_interval=tuple(s.guidance_interval))
    samples = out / "samples"
    scale = max(1, 128 // size)
    for i, (v, prompt) in enumerate(zip(videos, prompts)):
        write_video(v, samples / f"{i:02d}_{slug(prompt)}.mp4", fps=s.fps, scale=scale)
    frames = [to_uint8_frames(v) for v in videos]
    strip = filmstrip(frames, prompts, out / "filmstrip.png")
    rows = judge(frames, prompts, pipe, size, args.seed)
    shutil.copyfile(result.out_dir / "loss.png", out / "loss.png")
    k = cfg.diffusion.cond_frames
    cont_lines = ""
    if k > 0:  # the recipe trains video prediction: continue held-out clips' first k frames
        cont = continuation(pipe, size, cfg.model.num_frames, k, s, args.seed)
        n = len(cont["captions"])
        filmstrip(cont["no_caption"]["clips"], [f"{c} (first {k} given)" for c in cont["captions"]],
                  out / "continuation.png")
        cont_lines = (f"continuation_no_caption {cont['no_caption']['continues']}/{n}\n"
                      f"continuation_no_caption_all_checks {cont['no_caption']['all_checks']}/{n}\n"
                      f"continuation_contradicting_caption_continues {cont['contradicting']['continues']}/{n}\n"
                      f"continuation_contradicting_caption_turns {cont['contradicting']['turns']}/{n}\n")
        print(f"[demo] continuation of {n} held-out clips from their first {k} frames: "
              f"{cont['no_caption']['continues']}/{n} continue the given motion with no caption "
              f"({cont['no_caption']['all_checks']}/{n} pass every check); with a contradicting "
              f"caption {cont['contradicting']['continues']}/{n} continue, {cont['contradicting']['turns']}/{n} turn "
              f"({out / 'continuation.png'})")
        lg = longer(pipe, prompts, cfg.model.num_frames, s, args.seed, size)
        filmstrip(lg["clips"], prompts, out / "longer.png")
        n = len(prompts)
        counts = {key: sum(bool(r[key]) for r in lg["checks"]) for key in ("ok", "one_shape", "shape_ok", "moves")}
        cont_lines += "".join(f"longer_{key} {c}/{n}\n" for key, c in counts.items()) + (
            f"longer_frames {lg['frames']} (window starts at {lg['boundaries']})\n"
            f"longer_seam_jump {lg['seam_jump']:.2f} (max {lg['seam_jump_max']:.2f})\n")
        print(f"[demo] {lg['frames']} frames (twice the trained length, windows starting at {lg['boundaries']}): "
              f"{counts['ok']}/{n} pass every check ({counts['one_shape']}/{n} one solid shape, {counts['moves']}/{n} "
              f"moving the captioned way); frame change at a window start {lg['seam_jump']:.2f}x the median "
              f"elsewhere ({out / 'longer.png'})")
    wall = time.monotonic() - t0
    ok = sum(r["ok"] for r in rows)
    probe = float(np.mean([r["probe_ratio"] for r in rows]))
    (out / "summary.txt").write_text(
        f"steps {result.step}\ntrain_seconds {t_train:.1f}\nwall_seconds {wall:.1f}\n"
        f"last_loss {result.losses.get(result.step, float('nan')):.5f}\n"
        f"ok {ok}/{len(rows)}\n" + "".join(f"{k} {sum(bool(r[k]) for r in rows)}/{len(rows)}\n"
                                            for k in ("one_shape", "shape_ok", "moves", "background_ok"))
        + f"high_noise_probe {probe:.2f}\n" + cont_lines + "\n" + summary_table(rows))
    print(f"[demo] {ok} of {len(rows)} captions give one solid shape of the captioned colour and shape moving "
          f"the captioned way on the plain background; at pure noise the model's prediction moves "
          f"{probe:.2f}x as far as the data's mean ({out / 'summary.txt'})")
    # --- eval (issue 15, dit_video.eval): the samples' flicker / warping / persistence -> OUT/eval.json ---
    from ..eval import evaluate_clips, to_json

    ev = evaluate_clips(frames, prompts, fps=s.fps)
    (out / "eval.json").write_text(to_json(ev))
    for i, prompt in enumerate(prompts):  # captions beside the videos, for `dit-video eval OUT/samples`
        (samples / f"{i:02d}_{slug(prompt)}.txt").write_text(prompt + "\n")
    a = ev["aggregate"]
    n_pers = sum(bool(r["persistent"]) for r in ev["videos"])
    print(f"[demo] eval: flicker {a['flicker_mae']:.2f}/255 (VBench score {a['flicker_score']:.4f}), warp error "
          f"{a['warp_error']:.4g}, motion {a['motion']:.3g} px/frame, dynamic {a['dynamic_degree']:.2f}, "
          f"persistent {n_pers}/{a['n_persistence']} ({out / 'eval.json'})")
    # --- end eval ---
    print(f"[demo] done in {wall / 60:.1f} min: {strip} (rows = captions, columns = frames), {out / 'loss.png'}, "
          f"videos in {samples}")
    return 0
