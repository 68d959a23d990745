"""``dit-video`` command line. Thin: each subcommand lives in ``dit_video/commands/<name>.py``
with ``add_arguments(parser)`` and ``run(args) -> int``; modules are imported only when their
subcommand runs, so ``dit-video --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

# name -> (module under dit_video.commands, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "info": ("info", "print a model preset's architecture and parameter count"),
    "demo": ("demo", "train a tiny model on generated clips (CPU, no downloads) and write sample videos"),
    "train": ("train", "train a VideoDiT from a YAML config (DeepSpeed engine)"),
    "sample": ("sample", "sample videos from exported weights"),
    "eval": ("eval", "score videos: flicker, warping error, motion, persistence; FVD / CLIP score from local weights"),
    "export": ("export", "export EMA weights of a training checkpoint as safetensors"),
    "make-shards": ("make_shards", "write webdataset shards from a folder of videos"),
    "make-synthetic": ("make_synthetic", "generate captioned synthetic clips as webdataset shards"),
    "encode-shards": ("encode_shards", "precompute VAE latents and text states of video shards (data.kind=latents)"),
    "kernels-report": ("kernels_report", "compile every Triton kernel for sm_80/sm_90a and report resources"),
    "build-ext": ("build_ext", "build the C++/CUDA extension dit_video._C ahead of first use"),
    "bench": ("bench", "run the benchmarks (same as python -m benchmarks)"),
}


def _load(name: str):
    module, _ = COMMANDS[name]
    try:
        return importlib.import_module(f"dit_video.commands.{module}")
    except ModuleNotFoundError as e:
        if e.name == f"dit_video.commands.{module}":
            return None
        raise


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dit-video", description="Train and sample video diffusion transformers on fused kernels.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_) in COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_)
        p.set_defaults(_command=name)
        # Arguments are added lazily in main() for the chosen command only.
    return parser


def _is_user_error(e: BaseException) -> bool:
    """Errors a user causes and fixes: one line, no traceback (see dit_video/errors.py)."""
    from .errors import UserError

    if isinstance(e, (UserError, ValueError, OSError, FloatingPointError)):
        return True
    dispatch = sys.modules.get("dit_video.kernels.dispatch")  # a forced kernel backend that cannot serve
    return dispatch is not None and isinstance(e, dispatch.BackendUnavailable)


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= 2000 else text[:2000] + " ..."


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    # Find the subcommand first, then let its module declare its arguments.
    name = next((a for a in argv if a in COMMANDS), None)
    sub = None
    if name is not None:
        mod = _load(name)
        if mod is None:
            parser.error(f"'{name}' is not available in this version of dit-video")
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[name]
        mod.add_arguments(sub)
    args, extra = parser.parse_known_args(argv)
    if extra:  # key=value overrides may come anywhere among the options: train CFG a=b --resume auto c=d
        overrides = [t for t in extra if "=" in t and not t.startswith("-")]
        rest = [t for t in extra if t not in overrides]
        if rest or (overrides and not hasattr(args, "overrides")):
            (sub or parser).error(f"unrecognized arguments: {' '.join(rest or overrides)}")
        args.overrides = list(args.overrides or []) + overrides
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    if not getattr(args, "_command", None):
        parser.print_help()
        return 0
    try:
        return int(_load(args._command).run(args) or 0)
    except KeyboardInterrupt:
        print(f"dit-video {args._command}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - user errors become one line; bugs keep their traceback
        if args.verbose or not _is_user_error(e):
            raise
        print(f"dit-video {args._command}: error: {_one_line(e)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
