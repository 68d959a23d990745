"""Load the kernel backends safely before benchmarking them.

Importing a backend can take the whole process down, not just raise: two backends that define the
same ``torch.library`` op (one in Python, one in a C++ ``TORCH_LIBRARY`` block) abort in C++ when
the second one loads. So each backend is first loaded in a child process, in the order this
device prefers; a backend whose load kills the child is fenced off in this process (recorded in the
dispatcher as unavailable, with the reason) and the rest are probed again. Only then are they
loaded here.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys

from dit_video.kernels import dispatch

log = logging.getLogger("benchmarks.backend_probe")

# Which backend gets loaded first when two cannot live in one process: the one that matters on
# the device (on CPU the C++ ``cpu`` backend; on CUDA ``triton``, the main GPU path).
LOAD_ORDER = {
    "cpu": ("torch", "cpu", "cuda", "flash", "triton"),
    "cuda": ("torch", "triton", "cuda", "cpu", "flash"),
}

_CHILD = """
import sys
from dit_video.kernels import dispatch
for name in sys.argv[1:]:
    if name.startswith('!'):
        dispatch.disable(name[1:], 'fenced off by the probe')
        continue
    print('LOADING', name, flush=True)
    dispatch._load(name)
    print('LOADED', name, flush=True)
"""


def _fence(name: str, reason: str) -> None:
    """Mark ``name`` as loaded-with-an-error so the dispatcher never imports it in this process."""
    dispatch.disable(name, reason)


def load_backends(device: str, timeout_s: float = 900.0) -> dict[str, str]:
    """Probe and load every backend; returns ``{backend: reason}`` for those fenced off."""
    order = list(LOAD_ORDER.get(device, dispatch.BACKENDS))
    order += [b for b in dispatch.BACKENDS if b not in order]
    fenced: dict[str, str] = {}
    done: list[str] = []  # loaded fine in the child, in order (they stay loaded in the next probe)
    pending = [b for b in order if not dispatch.is_loaded(b)]
    while pending:
        argv = [f"!{b}" for b in fenced] + done + pending
        try:
            proc = subprocess.run([sys.executable, "-c", _CHILD, *argv], capture_output=True, text=True,
                                  timeout=timeout_s, env=os.environ.copy())
        except subprocess.TimeoutExpired:
            log.warning("backend probe timed out; loading in-process without a probe")
            break
        if proc.returncode == 0:
            break
        loading = [ln.split()[1] for ln in proc.stdout.splitlines() if ln.startswith("LOADING ")]
        loaded = {ln.split()[1] for ln in proc.stdout.splitlines() if ln.startswith("LOADED ")}
        culprit = next((b for b in loading if b not in loaded), None)
        if culprit is None:  # died before or after loading: nothing to pin on a backend
            log.warning("backend probe exited %s: %s", proc.returncode, proc.stderr.strip()[-300:])
            break
        lines = proc.stderr.splitlines()
        err = next((ln.strip() for ln in lines if "what():" in ln),
                   next((ln.strip() for ln in reversed(lines) if "Error" in ln), ""))
        done += pending[: pending.index(culprit)]
        fenced[culprit] = (f"loading it after {', '.join(done) or 'nothing'} aborted the process "
                           f"(exit {proc.returncode}): {err[:300]}")
        log.warning("backend %s fenced off: %s", culprit, fenced[culprit])
        pending = pending[pending.index(culprit) + 1:]
    for name, reason in fenced.items():
        _fence(name, reason)
    for name in order:
        dispatch._load(name)
    return fenced
