"""``dit-video encode-shards SHARDS --out DIR --vae PATH [--text-encoder PATH]``: video shards -> latent shards.

The VAE posterior (mean and std, normalised as training sees it) and the caption's text states are
computed once, so that training on ``data.kind=latents`` runs no decoder, VAE or text encoder in
the step. See :mod:`dit_video.data.encode` (layout, resuming, ranks) and
:mod:`dit_video.data.latents` (the members, the manifest).
"""

from __future__ import annotations

import argparse
from typing import Any


def load_models(cfg: Any) -> tuple[Any, Any]:
    """The encoders of an :class:`dit_video.data.encode.EncodeConfig`: a diffusers VAE and, if named, a frozen
    Hugging Face text encoder, from local directories (module-level: worker processes receive it by name)."""
    from ..encoders import DiffusersVAE, HFTextEncoder

    vae = DiffusersVAE.from_local(cfg.vae, device=cfg.device)
    text = HFTextEncoder.from_local(cfg.text_encoder, cfg.max_length, device=cfg.device) if cfg.text_encoder else None
    return vae, text


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("shards", help="video shards: a directory of .tar files, a glob or a brace pattern")
    p.add_argument("--out", required=True, help="output directory (a killed run continues into it)")
    p.add_argument("--vae", required=True, help="local diffusers autoencoder directory (save_pretrained layout)")
    p.add_argument("--text-encoder", help="local Hugging Face text encoder directory (frozen); omit for no text")
    p.add_argument("--max-length", type=int, default=77, help="text tokens per caption (default 77)")
    p.add_argument("--frames", type=int, default=16, help="frames per clip (default 16)")
    p.add_argument("--frame-stride", type=int, default=1, help="take every k-th source frame (default 1)")
    p.add_argument("--fps", type=float, help="target frame rate (overrides --frame-stride)")
    p.add_argument("--size", type=int, default=256, help="square clip side without --buckets (default 256)")
    p.add_argument("--buckets", help="FxHxW[:weight[:batch]],... e.g. 16x256x256,16x192x336:0.5 (see data.buckets)")
    p.add_argument("--batch-size", type=int, default=8, help="clips per VAE batch at --frames x --size (default 8)")
    p.add_argument("--dtype", default="bf16", choices=("bf16", "fp16", "fp32"), help="on-disk dtype (default bf16)")
    p.add_argument("--workers", type=int, default=1, help="processes per rank, one shard each at a time (default 1)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per process (default 1)")
    p.add_argument("--device", default="cpu", help="torch device for the encoders (default cpu)")
    p.add_argument("--decode-timeout", type=float, default=60.0, help="seconds per clip decode (default 60)")
    p.add_argument("--allow-pipe", action="store_true", help="allow pipe: commands and remote URLs in SHARDS")


def run(args: argparse.Namespace) -> int:
    from ..data.buckets import parse_buckets
    from ..data.encode import EncodeConfig, encode_shards

    cfg = EncodeConfig(shards=args.shards, out=args.out, vae=args.vae, text_encoder=args.text_encoder,
                       max_length=args.max_length, num_frames=args.frames, frame_stride=args.frame_stride,
                       fps=args.fps, size=args.size, buckets=parse_buckets(args.buckets) if args.buckets else [],
                       batch_size=args.batch_size, dtype=args.dtype, workers=args.workers, threads=args.threads,
                       device=args.device, decode_timeout_s=args.decode_timeout, allow_pipe=args.allow_pipe)
    s = encode_shards(cfg, load_models)
    skipped = {k: v for k, v in s["counters"].items() if k.startswith("skipped/")}
    print(f"rank {s['rank']}/{s['world_size']}: encoded {s['encoded']} shard(s) ({s['skipped_complete']} already "
          f"complete), {s['clips']} clips in {s['seconds']:.1f}s ({s['clips_per_s']:.2f} clips/s); "
          f"skipped: {skipped or 'none'}; latent shards in {args.out}")
    return 0
