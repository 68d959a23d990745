"""``dit-video eval VIDEOS [--real REAL] [--captions CSV] [--out DIR] [--i3d PATH] [--clip PATH]``.

Scores generated videos (a folder of mp4 / gif, or webdataset shards) for temporal flicker, warping
error, motion / dynamic degree and, for synthetic captions, subject persistence; with weights the
user brings, CLIP score (``--clip`` a local Hugging Face CLIP folder) and FVD / KVD against real
videos (``--i3d`` the StyleGAN-V ``i3d_torchscript.pt``, ``--real``). Writes ``OUT/eval.json`` (per
video and aggregate) and ``OUT/eval.md`` (the same as a table), and prints a summary line.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("videos", metavar="VIDEOS", help="folder (or file) of generated mp4 / gif videos or .tar shards")
    p.add_argument("--real", default=None, help="folder of real videos: FVD / KVD with --i3d, and reference figures")
    p.add_argument("--captions", default=None,
                   help="CSV with a 'caption' column and a video/file/name column (default: shard .txt or <stem>.txt)")
    p.add_argument("--out", default="runs/eval", help="output folder for eval.json and eval.md (default runs/eval)")
    p.add_argument("--i3d", default=None, help="TorchScript I3D (StyleGAN-V i3d_torchscript.pt) for FVD; needs --real")
    p.add_argument("--clip", default=None, help="local Hugging Face CLIP folder (save_pretrained) for the CLIP score")
    p.add_argument("--max-frames", type=int, default=None,
                   help="evaluate the first N frames of each video (FVD's protocol uses 16; default all)")
    p.add_argument("--device", default=None, help="device for I3D / CLIP (default cuda when available, else cpu)")


def run(args: argparse.Namespace) -> int:
    from ..eval import evaluate_clips, markdown, summary_line, to_json
    from ..eval.videos import read_captions_csv, read_videos

    if args.max_frames is not None and args.max_frames < 2:
        raise ValueError(f"--max-frames must be >= 2, got {args.max_frames}")
    for flag, value in (("--real", args.real), ("--i3d", args.i3d), ("--clip", args.clip)):
        if value is not None and not Path(value).exists():
            raise FileNotFoundError(f"{flag}: no such file or folder: {value}")
    if args.i3d and not args.real:
        raise ValueError("--i3d: FVD compares against real videos; pass --real REAL too")
    captions = read_captions_csv(args.captions) if args.captions else None
    videos, skipped = read_videos(args.videos, flag="VIDEOS", captions=captions, max_frames=args.max_frames)
    real, real_skipped = (read_videos(args.real, flag="--real", max_frames=args.max_frames) if args.real
                          else (None, {}))
    device = args.device
    if device is None and (args.i3d or args.clip):
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    clip = i3d = None
    if args.clip:
        from ..eval.clip_score import ClipScorer

        clip = ClipScorer(args.clip, device=device)
    if args.i3d:
        from ..eval.i3d import load_i3d

        i3d = load_i3d(args.i3d, device=device)
    result = evaluate_clips([v.frames for v in videos], [v.caption for v in videos], names=[v.name for v in videos],
                            fps=[v.fps for v in videos], clip=clip, i3d=i3d,
                            real=[v.frames for v in real] if i3d is not None else None, device=device or "cpu",
                            progress=True)
    result["skipped"] = dict(skipped)
    if real is not None:
        ref = evaluate_clips([v.frames for v in real], [v.caption for v in real], names=[v.name for v in real],
                             fps=[v.fps for v in real], progress=True)
        result["real"] = {"aggregate": ref["aggregate"], "skipped": dict(real_skipped)}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "eval.json").write_text(to_json(result))
    md = markdown(result)
    if real is not None:
        md += f"\nReal videos ({args.real}), the same figures for reference: {summary_line(result['real'])}\n"
    if skipped:
        md += f"\nSkipped: {dict(skipped)}\n"
    (out / "eval.md").write_text(md)
    extra = f"; skipped {dict(skipped)}" if skipped else ""
    print(f"[eval] {summary_line(result)}{extra} -> {out / 'eval.json'}, {out / 'eval.md'}")
    return 0
