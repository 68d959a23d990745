"""``dit-video make-shards SRC --out DIR``: a folder of videos -> webdataset shards (video2dataset layout)."""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("src", help="folder of videos (any container/codec FFmpeg reads), searched recursively")
    p.add_argument("--out", required=True, help="output directory for 00000.tar, 00000_stats.json, ...")
    p.add_argument("--captions", help="csv/tsv (file,caption) or jsonl ({\"file\":..., \"caption\":...}) mapping "
                                      "file name, stem or relative path to caption")
    p.add_argument("--clip-frames", type=int, help="cut each video into consecutive clips of N frames")
    p.add_argument("--fps", type=float, help="resample to this frame rate")
    p.add_argument("--size", type=int, help="resize so that the short side is S (aspect kept, even sides)")
    p.add_argument("--samples-per-shard", type=int, default=1000, help="samples per tar (default 1000)")
    p.add_argument("--workers", type=int, default=1, help="processes decoding/encoding videos (default 1)")
    p.add_argument("--overwrite", action="store_true",
                   help="write into a non-empty DIR: the shards an earlier make-shards wrote there (named in its "
                        "*_stats.json) are replaced once the new ones are complete; other files are kept")


def run(args: argparse.Namespace) -> int:
    from ..data.builder import describe, make_shards

    paths = make_shards(args.src, args.out, captions=args.captions, clip_frames=args.clip_frames, fps=args.fps,
                        size=args.size, samples_per_shard=args.samples_per_shard, workers=args.workers,
                        overwrite=args.overwrite)
    print(f"wrote {describe(paths)} to {args.out}")
    return 0
