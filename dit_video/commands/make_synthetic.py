"""``dit-video make-synthetic --out DIR --num N``: captioned clips of moving shapes as webdataset shards."""

from __future__ import annotations

import argparse


def _names(s: str | None) -> list[str] | None:
    return [x.strip() for x in s.split(",") if x.strip()] if s else None


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ..data.codec import PIX_FMTS
    from ..data.synthetic import BACKGROUNDS, COLORS, DIRECTIONS, SHAPES, SPEEDS

    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--num", type=int, required=True, help="number of clips")
    p.add_argument("--size", type=int, default=32, help="frame side in pixels, even (default 32)")
    p.add_argument("--frames", type=int, default=8, help="frames per clip (default 8)")
    p.add_argument("--fps", type=float, default=8, help="frame rate written in the mp4 (default 8)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--samples-per-shard", type=int, default=256)
    p.add_argument("--workers", type=int, default=1, help="processes writing shards (default 1)")
    p.add_argument("--colors", help=f"comma list from {','.join(COLORS)} (default all)")
    p.add_argument("--shapes", help=f"comma list from {','.join(SHAPES)} (default all)")
    p.add_argument("--directions", help=f"comma list from {','.join(DIRECTIONS)} (default all)")
    p.add_argument("--speeds", help=f"comma list from {','.join(SPEEDS)} (default all)")
    p.add_argument("--backgrounds", help=f"comma list from {','.join(BACKGROUNDS)} (default all)")
    p.add_argument("--max-objects", type=int, default=2, help="shapes per clip, at most (default 2)")
    p.add_argument("--occlusion-prob", type=float, default=0.2, help="chance of an occluding bar (default 0.2)")
    p.add_argument("--radius", type=float, nargs=2, default=(0.12, 0.18), metavar=("LO", "HI"),
                   help="shape radius range as fractions of the frame side (default 0.12 0.18; the demo uses "
                        "0.22 0.28)")
    p.add_argument("--pix-fmt", default="yuv420p", choices=PIX_FMTS,
                   help="mp4 pixel format (default yuv420p, as real videos; yuv444p keeps full-resolution colour)")
    p.add_argument("--apart", action="store_true",
                   help="objects keep 2 px apart in every frame (none hides part of another)")
    p.add_argument("--no-bounce", action="store_true", help="let shapes leave the frame instead of bouncing")
    p.add_argument("--easy", action="store_true",
                   help="easy-to-learn preset: one square, red/green/blue, left/right, plain background, no occlusion")
    p.add_argument("--overwrite", action="store_true",
                   help="write into a non-empty DIR (dit-video's own old shards there are removed; other files kept)")


def run(args: argparse.Namespace) -> int:
    from ..data.synthetic import write_synthetic_shards

    kw = dict(colors=_names(args.colors), shapes=_names(args.shapes), directions=_names(args.directions),
              speeds=_names(args.speeds), backgrounds=_names(args.backgrounds), max_objects=args.max_objects,
              occlusion_prob=args.occlusion_prob, bounce=not args.no_bounce, radius=tuple(args.radius),
              apart=args.apart)
    if args.easy:
        kw.update(colors=kw["colors"] or ["red", "green", "blue"], shapes=kw["shapes"] or ["square"],
                  directions=kw["directions"] or ["left", "right"], backgrounds=["plain"], max_objects=1,
                  occlusion_prob=0.0)
    paths = write_synthetic_shards(args.out, args.num, size=args.size, num_frames=args.frames, fps=args.fps,
                                   seed=args.seed, samples_per_shard=args.samples_per_shard, workers=args.workers,
                                   overwrite=args.overwrite, pix_fmt=args.pix_fmt, **kw)
    print(f"wrote {args.num} clips in {len(paths)} shard(s) to {args.out}")
    return 0
