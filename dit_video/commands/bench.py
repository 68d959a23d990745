"""``dit-video bench ARGS...``: runs ``python -m benchmarks ARGS...`` in a child process.

``benchmarks/`` is a top-level directory of the source checkout, not part of the installed
package (nothing in ``dit_video`` imports it): this command finds it next to the ``dit_video``
package (an editable install) or in the current directory, runs it there, and says so plainly
when neither has it. ``dit-video bench --help`` shows the benchmarks' own options.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path


def find_benchmarks() -> Path | None:
    """The repository root holding ``benchmarks/cli.py``, or None."""
    here = Path(__file__).resolve().parents[2]  # dit_video/commands/bench.py -> repo root
    for root in (here, Path.cwd()):
        if (root / "benchmarks" / "cli.py").is_file():
            return root
    return None


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("rest", nargs=argparse.REMAINDER,
                   help="arguments of python -m benchmarks, e.g. `kernels --quick` (`all --help` lists them)")


def run(args: argparse.Namespace) -> int:
    root = find_benchmarks()
    if root is None:
        raise FileNotFoundError(
            "the benchmarks/ directory was not found next to the installed dit_video package "
            f"({Path(__file__).resolve().parents[2]}) or in the current directory ({Path.cwd()}): "
            "`dit-video bench` runs from a source checkout -- clone the repository, `pip install -e .`, "
            "and run it (or `python -m benchmarks ...`) from the repository root")
    return subprocess.call([sys.executable, "-m", "benchmarks", *args.rest], cwd=root)
