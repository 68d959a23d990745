"""``python -m benchmarks data``: the video loader against raw decord, from ``benchmarks/data_loader.py``.

That module belongs to the data pipeline ([data]); it exposes ``run(quick=False, out_dir=None) ->
list[dict]``. It is imported lazily: while it is not in the checkout, the suite reports one
``absent`` row with the reason instead of failing.
"""

from __future__ import annotations

import importlib
from pathlib import Path

MODULE = "benchmarks.data_loader"


def run(quick: bool = False, out_dir: Path | None = None) -> list[dict]:
    """Rows of the data-loader benchmark (``status`` added where the module leaves it out)."""
    base = {"suite": "data", "name": "loader_vs_decord"}
    try:
        mod = importlib.import_module(MODULE)
    except ModuleNotFoundError as e:
        if e.name == MODULE:
            return [base | {"status": "absent",
                            "reason": "benchmarks/data_loader.py is not in this checkout yet (written with [data])"}]
        return [base | {"status": "absent", "reason": f"{MODULE} needs a missing module: {e}"}]
    try:
        rows = list(mod.run(quick=quick, out_dir=out_dir))
    except Exception as e:  # noqa: BLE001 - report, do not abort `all`
        return [base | {"status": "error", "reason": f"{type(e).__name__}: {e}"[:500]}]
    for r in rows:
        r.setdefault("suite", "data")
        r.setdefault("status", "ok")
        r.setdefault("reason", None)
    return rows
