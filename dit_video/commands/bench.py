"""``dit-video bench {kernels,e2e,data,all} [...]``: the same as ``python -m benchmarks ...``.

``benchmarks/`` is a top-level directory of the source checkout, not part of the installed
package: this command finds it next to the ``dit_video`` package (an editable install) or in the
current directory, and says so plainly when neither has it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def find_benchmarks() -> Path | None:
    """The repository root holding ``benchmarks/cli.py``, or None."""
    here = Path(__file__).resolve().parents[2]  # dit_video/commands/bench.py -> repo root
    for root in (here, Path.cwd()):
        if (root / "benchmarks" / "cli.py").is_file():
            return root
    return None


def _import_cli():
    root = find_benchmarks()
    if root is None:
        raise FileNotFoundError(
            "the benchmarks/ directory was not found next to the installed dit_video package "
            f"({Path(__file__).resolve().parents[2]}) or in the current directory ({Path.cwd()}): "
            "`dit-video bench` runs from a source checkout -- clone the repository, `pip install -e .`, "
            "and run it (or `python -m benchmarks ...`) from the repository root")
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    from benchmarks import cli

    return cli


def add_arguments(p: argparse.ArgumentParser) -> None:
    try:
        cli = _import_cli()
    except FileNotFoundError:
        p.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
        return
    cli.add_arguments(p)


def run(args: argparse.Namespace) -> int:
    cli = _import_cli()  # raises the clear FileNotFoundError when benchmarks/ is missing
    return cli.run(args)
