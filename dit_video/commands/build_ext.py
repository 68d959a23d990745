"""``dit-video build-ext [--verbose]``: build the C++/CUDA extension ahead of first use.

Without a prebuilt ``dit_video._C`` (``DIT_VIDEO_BUILD_EXT=1 pip install -e . --no-build-isolation``),
the ``cpu``/``cuda`` kernel backends JIT-build csrc/ the first time they are used (~1-2 minutes
once, cached under ``$TORCH_EXTENSIONS_DIR`` or ``~/.cache/torch_extensions``): the CPU sources,
plus the CUDA ones when a GPU, a CUDA build of torch and nvcc are present. This command does that
build now, so the first training step does not wait for it.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import time


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--verbose", action="store_true", help="show the compiler's output")


def run(args: argparse.Namespace) -> int:
    if importlib.util.find_spec("dit_video._C") is not None:
        print("dit_video._C is prebuilt (setup.py); nothing to build")
        return 0
    import warnings

    if args.verbose:
        logging.getLogger("dit_video.kernels").setLevel(logging.DEBUG)
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the error below says it once
        try:
            from ..kernels import csrc_ops  # builds (or loads the cached build) on import
        except Exception as e:  # noqa: BLE001 - no compiler, compile error: one clear line
            raise ValueError(f"could not build the C++ extension: {str(e).splitlines()[0]}") from e
    backends = "cpu and cuda" if csrc_ops.HAS_CUDA_KERNELS else "cpu"
    print(f"{csrc_ops.ORIGIN} ({time.perf_counter() - t0:.0f}s); kernel backends ready: {backends}")
    return 0
