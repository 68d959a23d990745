"""What ``backend="auto"`` runs when several implementations can serve a call: the one measured fastest here.

Which kernel wins depends on the machine, not only on the device type: the C++ temporal attention is 0.53x the
plain PyTorch path on an AMX Xeon and 1.28x *slower* than it on an AVX512-BF16 EPYC. So ``auto`` does not
assume; like Triton's autotune it times the candidates on first use of each *layout* and keeps the answer:

* **Candidates**: every implementation in the device's :data:`dispatch.AUTO_ORDER` whose check accepts the call.
* **Timing**: on a copy of the call's own arguments (same shapes, strides, storage offsets, dtypes; values from a
  private generator, so the global RNG is untouched), forward, and backward when an argument needs gradients.
  Candidates are interleaved, the median of several rounds is compared, in a separate thread (so the caller's
  autograd state, saved-tensor hooks and autocast do not see the measurement).
* **Rule**: the plain path (the ``torch`` reference, user-style SDPA around copies) is the baseline; a kernel
  replaces it only when its median is at most :data:`MARGIN` times the baseline's. So ``auto`` is never slower
  than the plain path by more than the timing noise, and a near-tie keeps the reference.
* **Layout** (the cache key): the op, each tensor's shape and strides *without the first (batch) dimension*
  (the winner is a property of the layout; batch 8 and batch 16, or a classifier-free-guidance doubled batch,
  share a decision), dtype, device, whether gradients are needed, which optional arguments are given, and the
  machine (CPU model, ISA level, thread count, torch version) and the build of each compiled backend (a rebuilt
  C++ extension is another candidate: its decisions are measured again).
* **Cache**: decisions persist in a JSON file (``DIT_VIDEO_AUTOTUNE_CACHE``; default
  ``~/.cache/dit_video/autotune.json``; empty string: memory only). The file is read and written under an
  exclusive lock, so the ranks of one host share one decision (rank 0 of a fresh host measures, the others
  wait and read it) and a resumed run makes the same choice as the run it continues.
* ``DIT_VIDEO_AUTOTUNE=off`` skips timing: the static order decides (first accepting implementation).

Under ``torch.compile`` nothing is timed: a decision already made for the layout is used, else the static order.
:func:`decisions` lists every decision with its timings and why.

Only the CPU path is exercised here (CI has no GPU); on CUDA the same code synchronises the device around each
timing, which no test here can run.

This module imports nothing from ``dit_video``.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import logging
import os
import statistics
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger("dit_video.kernels")

MARGIN = 0.95  # a kernel displaces the plain path only at <= this fraction of its median time
ROUNDS = (3, 15)  # at least / at most this many timed rounds per candidate ...
ROUND_BUDGET_S = 1.5  # ... stopping once the rounds so far took this long in all
BASELINE = "torch"

_MEMORY: dict[str, dict] = {}  # layout key -> decision, this process
_BUILDS: dict[str, str] = {}  # backend -> identity of its compiled code (see note_build)
_LOCK = threading.Lock()


def enabled() -> bool:
    return os.environ.get("DIT_VIDEO_AUTOTUNE", "on").strip().lower() not in ("off", "0", "false", "no")


def cache_path() -> Path | None:
    p = os.environ.get("DIT_VIDEO_AUTOTUNE_CACHE")
    if p is None:
        return Path.home() / ".cache" / "dit_video" / "autotune.json"
    return Path(p) if p.strip() else None


@functools.lru_cache(maxsize=1)
def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "unknown cpu"


def note_build(backend: str, ident: str) -> None:
    """Record which build of a compiled backend is loaded (e.g. the library file's size and mtime): decisions are
    valid for one build, so a rebuilt kernel is timed again instead of inheriting the old build's verdict."""
    _BUILDS[backend] = ident


def machine(device: str = "cpu") -> str:
    """What a decision is valid for: CPU model, ISA level, compute threads, torch version (+ the GPU on CUDA), and
    the builds of the compiled backends loaded (:func:`note_build`)."""
    gpu = f" | {torch.cuda.get_device_name()}" if device == "cuda" else ""
    isa = torch.backends.cpu.get_cpu_capability()
    builds = "".join(f" | {b} {i}" for b, i in sorted(_BUILDS.items()))
    return f"{_cpu_model()} | {isa} | {torch.get_num_threads()} threads | torch {torch.__version__}{gpu}{builds}"


def _tensor_layout(a: torch.Tensor) -> list:
    tail = slice(1, None) if a.dim() >= 2 else slice(0, None)
    return [list(a.shape[tail]), list(a.stride()[tail]), str(a.dtype).removeprefix("torch."), a.requires_grad]


def layout_key(op: str, args: Sequence, kwargs: dict) -> str:
    """The cache key of a call: see the module docstring (batch dimension dropped)."""
    parts: list[Any] = [op]
    device = "cpu"
    for a in list(args) + [kwargs[k] for k in sorted(kwargs)]:
        if isinstance(a, torch.Tensor):
            parts.append(_tensor_layout(a))
            device = a.device.type
        else:
            parts.append(a if isinstance(a, (int, float, bool, str, type(None))) else type(a).__name__)
    parts.append(sorted(kwargs))
    parts.append(device)
    return json.dumps(parts, separators=(",", ":"))


def name_of(impl) -> str:
    return f"{impl.backend}:{getattr(impl.fn, '__name__', repr(impl.fn))}"


# ----------------------------------------------------------------------------- timing
def _copy_args(args: Sequence, kwargs: dict, gen: torch.Generator):
    """Fresh tensors with the arguments' layout (shape, strides, storage offset, dtype); floating values random."""

    def one(a):
        if not isinstance(a, torch.Tensor):
            return a
        if not a.is_floating_point():
            return a.detach().clone()  # masks, indices: their values matter (an all-masked row is another path)
        extent = sum((n - 1) * s for n, s in zip(a.shape, a.stride(), strict=True) if n > 0) + 1
        flat = torch.randn(a.storage_offset() + extent, generator=gen, dtype=torch.float32).to(a.device, a.dtype)
        t = flat.as_strided(a.shape, a.stride(), a.storage_offset()).detach()
        return t.requires_grad_(a.requires_grad)

    return [one(a) for a in args], {k: one(v) for k, v in kwargs.items()}


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _run_once(fn: Callable, args, kwargs, grad: bool, device: str) -> float:
    _sync(device)
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    if grad:
        outs = [o for o in (out if isinstance(out, (tuple, list)) else (out,))
                if isinstance(o, torch.Tensor) and o.requires_grad]
        torch.autograd.backward(outs, [torch.ones_like(o) for o in outs])
    _sync(device)
    return time.perf_counter() - t0


def measure(impls: Sequence, args: Sequence, kwargs: dict) -> dict[str, float]:
    """Median seconds per call of each implementation on copies of these arguments, interleaved (see docstring)."""
    result: dict[str, float] = {}
    error: list[BaseException] = []

    def work():
        try:
            gen = torch.Generator().manual_seed(0)
            a, kw = _copy_args(args, kwargs, gen)
            grad = any(isinstance(x, torch.Tensor) and x.requires_grad for x in list(a) + list(kw.values()))
            device = next((x.device.type for x in list(a) + list(kw.values()) if isinstance(x, torch.Tensor)), "cpu")
            with torch.enable_grad() if grad else torch.no_grad():
                for impl in impls:  # warm-up: first-call costs (allocations, lazy init) stay out of the figures
                    _run_once(impl.fn, a, kw, grad, device)
                times: dict[str, list[float]] = {name_of(i): [] for i in impls}
                spent, rounds = 0.0, 0
                while rounds < ROUNDS[1] and (rounds < ROUNDS[0] or spent < ROUND_BUDGET_S):
                    order = impls if rounds % 2 == 0 else list(reversed(impls))
                    for impl in order:
                        s = _run_once(impl.fn, a, kw, grad, device)
                        times[name_of(impl)].append(s)
                        spent += s
                    rounds += 1
            result.update({k: statistics.median(v) for k, v in times.items()})
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread
            error.append(e)

    t = threading.Thread(target=work, name="dit_video-autotune")
    t.start()
    t.join()
    if error:
        raise error[0]
    return result


def _decide(impls: Sequence, times: dict[str, float]) -> tuple[str, str]:
    """(chosen name, why) by the rule of the module docstring."""
    names = [name_of(i) for i in impls]
    base = next((n for n in names if n.startswith(BASELINE + ":")), names[-1])
    best = min(names, key=lambda n: times[n])
    tb = times[base]
    if best != base and times[best] <= MARGIN * tb:
        return best, f"{best} {times[best] / tb:.2f}x the plain path ({base})"
    others = ", ".join(f"{n} {times[n] / tb:.2f}x" for n in names if n != base)
    return base, f"no kernel beats the plain path {base} by {1 / MARGIN:.2f}x here ({others})"


# ----------------------------------------------------------------------------- the cache file
@contextlib.contextmanager
def _file_lock(path: Path | None):
    if path is None:
        yield
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        f = open(str(path) + ".lock", "a+")  # noqa: SIM115 - closed below
    except OSError as e:  # a read-only home, say: decide in memory, tell once
        _warn_once(f"dit_video.kernels: autotune cache {path} is not writable ({e}); decisions stay in memory "
                   "(set DIT_VIDEO_AUTOTUNE_CACHE to a writable file, or to '' to silence this)")
        yield
        return
    with f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


_WARNED: set[str] = set()


def _warn_once(msg: str) -> None:
    if msg not in _WARNED:
        _WARNED.add(msg)
        log.warning(msg)


def _read(path: Path | None) -> dict:
    if path is None or not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        log.warning("dit_video.kernels: autotune cache %s is unreadable; measuring again", path)
        return {}
    return data if isinstance(data, dict) else {}


def _write(path: Path | None, data: dict) -> None:
    if path is None:
        return
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
        os.replace(tmp, path)
    except OSError as e:
        _warn_once(f"dit_video.kernels: cannot write the autotune cache {path} ({e}); decisions stay in memory")


# ----------------------------------------------------------------------------- entry points
def choose(op: str, impls: Sequence, args: Sequence, kwargs: dict, *, tracing: bool = False):
    """The implementation ``auto`` runs for this call among ``impls`` (each accepts it, in static order)."""
    if len(impls) < 2 or not enabled():
        return impls[0]
    key = layout_key(op, args, kwargs)
    here_is = machine(json.loads(key)[-1])  # the key ends with the device type
    by_name = {name_of(i): i for i in impls}
    hit = _MEMORY.get(key)
    if hit is not None and hit["chosen"] in by_name:
        return by_name[hit["chosen"]]
    path = cache_path()
    if tracing:  # never time inside a trace: a decision already on file, else the static order
        on_file = _read(path).get(here_is, {}).get(key)
        return by_name.get((on_file or {}).get("chosen"), impls[0])
    with _LOCK, _file_lock(path):
        table = _read(path)
        here = table.setdefault(here_is, {})
        got = here.get(key)
        if got is None or got.get("chosen") not in by_name or set(got.get("times_ms") or by_name) != set(by_name):
            try:
                times = measure(impls, args, kwargs)
                chosen, why = _decide(impls, times)
            except Exception as e:  # noqa: BLE001 - a failed measurement must not fail the caller's forward
                times, chosen = {}, name_of(impls[0])
                why = f"measurement failed ({type(e).__name__}: {e}); the static order decides"
                log.warning("dit_video.kernels: auto %s: %s", op, why)
            got = {"op": op, "chosen": chosen, "why": why, "times_ms": {k: round(v * 1e3, 4) for k, v in times.items()}}
            here[key] = got
            _write(path, table)
            log.info("dit_video.kernels: auto %s -> %s (%s)", op, chosen, why)
        _MEMORY[key] = got
    return by_name[got["chosen"]]


def decisions(op: str | None = None) -> list[dict]:
    """Every decision this process made or read (of ``op``, or all): op, layout, chosen, why, times_ms."""
    return [dict(v, layout=k) for k, v in _MEMORY.items() if op in (None, v["op"])]


def forget() -> None:
    """Drop this process's decisions (the file stays); the next call of each layout reads or measures again."""
    _MEMORY.clear()
