"""``dit-video demo [--minutes M] [--steps N] [--out runs/demo]``: the whole pipeline on a CPU, no downloads.

Synthetic captioned clips (one large coloured square moving quickly left or right on a dark background) ->
webdataset shards -> train the ``tiny`` text-conditioned VideoDiT in pixel space with the learned
TinyTextEncoder (``configs/train/demo.yaml``, DeepSpeed engine, one process) -> export the EMA
weights -> sample one clip per caption -> ``OUT/`` holds the sample mp4/gif files, a filmstrip PNG
(rows = captions, columns = frames) and the loss plot. ``summary.txt`` says how many samples show
one solid shape of the captioned colour and how many move the captioned way
(:func:`dit_video.data.synthetic.check_clip`).
"""

from __future__ import annotations

import argparse
import re
import shutil
import time
from pathlib import Path

DEMO_COLORS = ["red", "green", "blue", "yellow"]
DEMO_DIRECTIONS = ["left", "right"]
# Large, fast squares (side ~ 40% of the frame, ~2 px per frame): one object that a model trained
# for minutes on a CPU places as a whole (squares 30% smaller come out as scattered patch-sized
# pieces at this budget), moving far enough that the motion carries weight in the loss.
DEMO_RADIUS = (0.18, 0.22)
DEMO_SPEED = "quickly"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--minutes", type=float, default=12.0,
                   help="wall-time budget for training (default 12; data, export and sampling take ~1 more)")
    p.add_argument("--steps", type=int, default=None, help="training steps (default: the recipe's, cut by --minutes)")
    p.add_argument("--out", default="runs/demo", help="output directory (default runs/demo; replaced)")
    p.add_argument("--clips", type=int, default=1024, help="synthetic clips to generate (default 1024)")
    p.add_argument("--size", type=int, default=None, help="frame size (default: the recipe's data.size)")
    p.add_argument("--frames", type=int, default=None, help="frames per clip (default: the recipe's model.num_frames)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--config", default=None, help="recipe (default configs/train/demo.yaml)")
    p.add_argument("overrides", nargs="*", help="recipe overrides, e.g. model.hidden_size=96 data.batch_size=8")


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


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

    if out.exists():
        for sub in ("shards", "train", "weights", "samples"):
            shutil.rmtree(out / sub, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    print(f"[demo] writing {args.clips} synthetic clips ({size}x{size}, {frames} frames) to {out / 'shards'}")
    write_synthetic_shards(str(out / "shards"), args.clips, size=size, num_frames=frames, fps=8, seed=args.seed,
                           samples_per_shard=256, shapes=["square"], colors=DEMO_COLORS, directions=DEMO_DIRECTIONS,
                           speeds=[DEMO_SPEED], backgrounds=["plain"], max_objects=1, occlusion_prob=0.0,
                           bounce=False, radius=DEMO_RADIUS)

    from ..pipeline.plots import filmstrip
    from ..pipeline.sampling import SamplingPipeline
    from ..pipeline.video import to_uint8_frames, write_video
    from ..train.export import export_checkpoint
    from ..train.trainer import train

    print(f"[demo] training (budget {args.minutes:g} min, at most {cfg.train.steps} steps) in {out / 'train'}")
    result = train(cfg, recipe_dir=recipe.parent)
    t_train = result.seconds
    weights = export_checkpoint(result.out_dir, out / "weights")
    print(f"[demo] trained {result.step} steps in {t_train / 60:.1f} min; EMA weights in {weights}")

    pipe = SamplingPipeline.from_pretrained(weights)
    s = cfg.sample
    prompts = list(s.prompts) or [f"a {c} square moving {d}" for c in DEMO_COLORS for d in DEMO_DIRECTIONS][:4]
    videos = pipe.generate(prompts, steps=s.steps, sampler=s.sampler, guidance_scale=s.guidance_scale,
                           seed=args.seed)
    samples = out / "samples"
    scale = max(1, 128 // size)
    for i, (v, prompt) in enumerate(zip(videos, prompts)):
        write_video(v, samples / f"{i}_{slug(prompt)}.mp4", fps=s.fps, scale=scale)
    from ..data.synthetic import check_clip

    frames = [to_uint8_frames(v) for v in videos]
    strip = filmstrip(frames, prompts, out / "filmstrip.png")
    more = pipe.generate(prompts, steps=s.steps, sampler=s.sampler, guidance_scale=s.guidance_scale,
                         seed=args.seed + 1)  # a second draw per caption, for the check only
    frames += [to_uint8_frames(v) for v in more]
    checks = [check_clip(f, p) for f, p in zip(frames, prompts + prompts)]
    n_shape, n_moves = sum(c["one_shape"] for c in checks), sum(c["moves"] for c in checks)
    shutil.copyfile(result.out_dir / "loss.png", out / "loss.png")
    wall = time.monotonic() - t0
    (out / "summary.txt").write_text(
        f"steps {result.step}\ntrain_seconds {t_train:.1f}\nwall_seconds {wall:.1f}\n"
        f"last_loss {result.losses.get(result.step, float('nan')):.5f}\nprompts {prompts}\n"
        f"one_shape {n_shape}/{len(checks)}\nmoves_as_captioned {n_moves}/{len(checks)}\n")
    print(f"[demo] of {len(checks)} samples (2 per caption), {n_shape} show one solid shape of the captioned "
          f"colour and {n_moves} of those move the captioned way")
    # --- eval (issue 15, dit_video.eval): the samples' flicker / warping / persistence -> OUT/eval.json ---
    from ..eval import evaluate_clips, to_json

    ev = evaluate_clips(frames, prompts + prompts, fps=s.fps)
    (out / "eval.json").write_text(to_json(ev))
    for i, prompt in enumerate(prompts):  # captions beside the videos, for `dit-video eval OUT/samples`
        (samples / f"{i}_{slug(prompt)}.txt").write_text(prompt + "\n")
    a = ev["aggregate"]
    n_pers = sum(bool(r["persistent"]) for r in ev["videos"])
    print(f"[demo] eval: flicker {a['flicker_mae']:.2f}/255 (VBench score {a['flicker_score']:.4f}), warp error "
          f"{a['warp_error']:.4g}, motion {a['motion']:.3g} px/frame, dynamic {a['dynamic_degree']:.2f}, "
          f"persistent {n_pers}/{a['n_persistence']} ({out / 'eval.json'})")
    # --- end eval ---
    print(f"[demo] done in {wall / 60:.1f} min: {strip} (rows = captions, columns = frames), {out / 'loss.png'}, "
          f"videos in {samples}")
    return 0
