"""``dit-video sample WEIGHTS --prompt "..." [--cond-video F --cond-frames k] [--steps N --guidance S
--sampler NAME --seed N] --out out.mp4``: sample clips from exported weights (mp4 + gif)."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("weights", help="an export directory (dit-video export) or VideoDiT.save_pretrained directory")
    p.add_argument("--prompt", action="append", default=None, help="caption (repeat for several clips; \"\" is no "
                                                                   "caption, the default with --cond-video)")
    p.add_argument("--label", type=int, action="append", default=None, help="class id of a class-conditioned model")
    p.add_argument("--cond-video", default=None, help="video file whose first frames are continued")
    p.add_argument("--cond-frames", type=int, default=0, help="how many frames of --cond-video to keep")
    p.add_argument("--frames", type=int, default=None,
                   help="frames to generate (default: the model's; more than it from a model trained with "
                        "diffusion.cond_frames=k: windows of the trained length, each continuing the last k frames)")
    p.add_argument("--steps", type=int, default=None, help="sampling steps (default: the recipe's sample.steps)")
    p.add_argument("--guidance", type=float, default=None, help="classifier-free guidance scale (1: off; default: "
                                                                "the recipe's sample.guidance_scale)")
    p.add_argument("--cfg", dest="guidance", type=float, help=argparse.SUPPRESS)  # the old name, kept working
    p.add_argument("--guidance-interval", type=float, nargs=2, default=None, metavar=("LO", "HI"),
                   help="guide only at noise levels in [LO, HI] (flow u; default: the recipe's "
                        "sample.guidance_interval)")
    p.add_argument("--sampler", default=None, help="euler, heun, ddim, dpmpp_2m (default: the objective's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fps", type=int, default=None)
    p.add_argument("--scale", type=int, default=None, help="nearest-neighbour upscaling of the written videos")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    p.add_argument("--out", default="sample.mp4", help="output .mp4 (a .gif is written next to it); with several "
                                                       "prompts, _0, _1, ... are appended")


def run(args: argparse.Namespace) -> int:
    import torch

    from ..pipeline.sampling import SamplingPipeline
    from ..pipeline.video import read_video, write_video

    if args.steps is not None and args.steps < 1:
        raise ValueError(f"--steps must be >= 1, got {args.steps}")
    if args.frames is not None and args.frames < 1:
        raise ValueError(f"--frames must be >= 1, got {args.frames}")
    if args.fps is not None and args.fps < 1:
        raise ValueError(f"--fps must be >= 1, got {args.fps}")
    if args.scale is not None and args.scale < 1:
        raise ValueError(f"--scale must be >= 1, got {args.scale}")
    if args.cond_video is not None and args.cond_frames < 1:
        raise ValueError("--cond-video needs --cond-frames k >= 1 (the frames to keep)")
    if args.cond_frames and args.cond_video is None:
        raise ValueError("--cond-frames needs --cond-video")
    if not str(args.out).endswith(".mp4"):
        raise ValueError(f"--out must end with .mp4 (a .gif is written next to it), got {args.out}")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    pipe = SamplingPipeline.from_pretrained(args.weights, device)
    if args.cond_video is not None and not args.prompt and not args.label and pipe.conditioner.kind == "text":
        args.prompt = [""]  # continuation without a caption: the given frames alone decide (the null condition)
        print("continuing --cond-video without a caption (pass --prompt to steer it)")
    pipe.check_conditions(args.prompt, args.label)  # a prompt for a label model etc.: before any sampling
    s = pipe.recipe.sample
    cond = None
    if args.cond_video is not None:
        cond = read_video(args.cond_video, args.cond_frames, pipe.pixel_size)
    videos = pipe.generate(args.prompt, args.label, num_frames=args.frames,
                           steps=s.steps if args.steps is None else args.steps,
                           sampler=args.sampler or s.sampler,
                           guidance_scale=s.guidance_scale if args.guidance is None else args.guidance, seed=args.seed,
                           cond_video=cond, cond_frames=args.cond_frames, progress=True,
                           guidance_interval=tuple(args.guidance_interval or s.guidance_interval))
    out = Path(args.out)
    scale = args.scale or max(1, 128 // max(videos.shape[-2:]))
    for i, v in enumerate(videos):
        path = out if len(videos) == 1 else out.with_name(f"{out.stem}_{i}.mp4")
        mp4, gif = write_video(v, path, fps=args.fps or s.fps, scale=scale)
        print(f"wrote {mp4} and {gif}")
    return 0
