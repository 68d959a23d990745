"""Backend registry and dispatch for the fused ops.

Every op (``attention``, ``adaln_modulate``, ``gated_residual_adaln``, ``rope3d``) has one public
function in :mod:`dit_video.kernels.ops` and several implementations. *Composite* ops (the memory-lean
``gated_linear``, ``adaln_linear``, ``adaln_mlp``) have one implementation, written on the others, that
every backend resolves to (:func:`register_composite`). An implementation is
registered with :func:`register` together with a ``check`` function that looks at the call's
arguments and returns ``None`` when it can serve the call, or a short reason why not
("needs a CUDA tensor", "head_dim 320 > 256", ...).

``backend="auto"`` walks a per-device list and collects every implementation whose check passes;
the ``torch`` reference serves everything, so ``auto`` never fails. When several can serve a call,
:mod:`.autotune` times them on the call's layout, once per layout and machine, and keeps the fastest
(the plain path unless a kernel beats it clearly); see :func:`.autotune.decisions`. A forced
backend that cannot serve raises :class:`BackendUnavailable` listing every reason.

Backends live in modules imported lazily on first dispatch (a GPU-only package such as
flash_attn or triton is never imported at ``import dit_video`` time). A module that fails to
import marks its backend unavailable with the import error as the reason, logged once.

This module imports nothing from ``dit_video``: kernels sit at the bottom of the import graph.
"""

from __future__ import annotations

import collections
import contextlib
import contextvars
import importlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

from . import autotune, standin

log = logging.getLogger("dit_video.kernels")

BACKENDS = ("torch", "triton", "cuda", "cpu", "flash")

# auto's candidates, in the order that breaks ties when timing is off (DIT_VIDEO_AUTOTUNE=off); torch serves every call.
AUTO_ORDER: dict[str, tuple[str, ...]] = {
    "cuda": ("triton", "cuda", "flash", "torch"),
    "cpu": ("cpu", "torch"),
}

# backend -> modules that register its implementations when imported. A module that does not
# exist yet (a backend not built in this checkout) is skipped quietly; any other import error
# is recorded as the reason the backend is unavailable.
PROVIDERS: dict[str, tuple[str, ...]] = {
    "torch": ("dit_video.kernels.reference", "dit_video.kernels.lean_gated_linear",
              "dit_video.kernels.lean_adaln_linear", "dit_video.kernels.lean_adaln_mlp"),
    "triton": (
        "dit_video.kernels.triton_attention",
        "dit_video.kernels.triton_temporal_attention",
        "dit_video.kernels.triton_adaln",
        "dit_video.kernels.triton_rope3d",
    ),
    "cpu": ("dit_video.kernels.csrc_ops",),
    "cuda": ("dit_video.kernels.csrc_ops",),
    "flash": ("dit_video.kernels.flash_backend",),
}


# Ops a forced backend without any implementation of them serves with the torch reference: GELU has a CPU
# kernel (ATen's bf16 tanh-GELU is slow on CPU) but no GPU one (ATen's CUDA GELU is memory-bound already).
PLAIN_FALLBACK = frozenset({"gelu_tanh"})


class BackendUnavailable(RuntimeError):
    """A forced backend cannot serve a call; the message lists every reason."""


@dataclass(frozen=True)
class Impl:
    op: str
    backend: str
    fn: Callable
    check: Callable[..., str | None]
    priority: int = 0  # among several impls of one (op, backend): higher first


_REGISTRY: dict[tuple[str, str], list[Impl]] = {}
_COMPOSITE: dict[str, Impl] = {}
_LOAD_ERRORS: dict[str, list[str]] = {}
_LOADED: set[str] = set()
_default_backend: contextvars.ContextVar[str] = contextvars.ContextVar("dit_video_backend", default="auto")
_trace_backend: list[str] = []  # use_backend while torch.compile traces (see use_backend)


def _always(*args, **kwargs) -> str | None:
    return None


def register(op: str, backend: str, fn: Callable, check: Callable[..., str | None] | None = None,
             priority: int = 0) -> None:
    """Register ``fn`` as ``backend``'s implementation of ``op``.

    ``check(*args, **kwargs)`` receives the same arguments as ``fn`` and returns ``None`` or a
    reason it cannot serve them. Several implementations of one (op, backend) may coexist (the
    packed temporal kernel and the general flash kernel are both ``triton`` attention): they are
    tried by descending ``priority``.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; expected one of {BACKENDS}")
    _CACHE.clear()
    impls = _REGISTRY.setdefault((op, backend), [])
    impls[:] = [i for i in impls if i.fn is not fn]
    impls.append(Impl(op, backend, fn, check or _always, priority))
    impls.sort(key=lambda i: -i.priority)


def register_composite(op: str, fn: Callable) -> None:
    """Register the one implementation of a *composite* op: written in PyTorch on top of the other fused ops
    (the memory-lean block ops: ``gated_linear``, ``adaln_linear``, ``adaln_mlp``). Every backend, forced or
    ``auto``, resolves it to ``fn``; the backend applies to the fused ops ``fn`` calls inside."""
    register(op, "torch", fn)
    _COMPOSITE[op] = next(i for i in _REGISTRY[(op, "torch")] if i.fn is fn)


def is_composite(op: str) -> bool:
    """Whether ``op`` is a composite (see :func:`register_composite`); loads the torch backend's modules."""
    _load("torch")
    return op in _COMPOSITE


def _load(backend: str) -> None:
    if backend in _LOADED:
        return
    _LOADED.add(backend)
    for mod in PROVIDERS.get(backend, ()):
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as e:
            if e.name == mod:  # this backend is not part of this checkout
                _LOAD_ERRORS.setdefault(backend, []).append(f"{mod} is not installed")
                continue
            _record_error(backend, mod, e)
        except Exception as e:  # noqa: BLE001 - any failure degrades to the next backend
            _record_error(backend, mod, e)


def _record_error(backend: str, mod: str, e: Exception) -> None:
    msg = f"{mod} failed to import ({type(e).__name__}: {e})"
    _LOAD_ERRORS.setdefault(backend, []).append(msg)
    log.info("dit_video.kernels: backend %r unavailable: %s", backend, msg)


def disable(backend: str, reason: str) -> None:
    """Mark ``backend`` unavailable without importing it (e.g. its import crashed a probe process)."""
    _CACHE.clear()
    _LOADED.add(backend)
    _LOAD_ERRORS.setdefault(backend, []).append(reason)


def is_loaded(backend: str) -> bool:
    """Whether ``backend``'s modules were imported (or the backend was disabled) in this process."""
    return backend in _LOADED


def _device_of(args, kwargs) -> str:
    for a in list(args) + list(kwargs.values()):
        if isinstance(a, torch.Tensor):
            return a.device.type
    return "cpu"


_CACHE: collections.OrderedDict = collections.OrderedDict()  # (op, backend, call signature) -> Impl
_CACHE_SIZE = 4096


def _signature(args, kwargs) -> tuple | None:
    """What the checks look at: each tensor's shape, strides, dtype, device, requires_grad and 16-byte
    alignment, and the other arguments' values. None when a tensor has no storage to look at (fake / meta)."""
    key = []
    for a in list(args) + [kwargs[k] for k in sorted(kwargs)]:
        if isinstance(a, torch.Tensor):
            if a.device.type == "meta" or type(a) is not torch.Tensor and not isinstance(a, torch.nn.Parameter):
                return None
            key.append((tuple(a.shape), a.stride(), a.dtype, a.device, a.requires_grad, a.data_ptr() % 16))
        elif isinstance(a, (int, float, bool, str, type(None))):
            key.append(a)
        else:
            return None
    return tuple(key) + tuple(sorted(kwargs))


def resolve(op: str, backend: str, *args, **kwargs) -> Impl:
    """The implementation that would serve this call (raises if a forced backend cannot).

    Decisions are cached by the call's signature (see :func:`_signature`), so each distinct layout is
    checked -- and, for the attention kernels, planned -- once, not on every call. Under torch.compile
    the decision is made from the arguments' static facts (:func:`_resolve_traced`), without a graph break.
    """
    if torch.compiler.is_compiling():
        return _resolve_traced(op, backend, args, kwargs)
    if backend == "auto":
        backend = _default_backend.get()
    sig = _signature(args, kwargs)
    if sig is not None:
        key = (op, backend, sig)
        hit = _CACHE.get(key)
        if hit is not None:
            _CACHE.move_to_end(key)
            return hit
    impl = _resolve(op, backend, args, kwargs)
    if sig is not None:
        _CACHE[key] = impl
        if len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    return impl


def _resolve(op: str, backend: str, args, kwargs, tracing: bool = False) -> Impl:
    if backend == "auto":
        names = AUTO_ORDER.get(_device_of(args, kwargs), ("torch",))
    elif backend in BACKENDS:
        names = (backend,)
        if op in PLAIN_FALLBACK:
            _load(backend)
            if not _REGISTRY.get((op, backend)):
                names = ("torch",)
    else:
        raise ValueError(f"unknown backend {backend!r}; expected 'auto' or one of {BACKENDS}")
    _load("torch")  # the references, and the composite ops
    if op in _COMPOSITE:
        return _COMPOSITE[op]
    reasons = []
    accepted: list[Impl] = []  # the first accepting implementation of each backend, in order
    for name in names:
        _load(name)
        impls = _REGISTRY.get((op, name), [])
        if not impls:
            why = "; ".join(_LOAD_ERRORS.get(name, [])) or f"no {name} implementation of {op}"
            reasons.append(f"{name}: {why}")
        for impl in impls:
            why = impl.check(*args, **kwargs)
            if why is None:
                accepted.append(impl)
                break
            reasons.append(f"{name} ({getattr(impl.fn, '__name__', impl.fn)}): {why}")
        if accepted and backend != "auto":
            return accepted[0]
    if not accepted:
        raise BackendUnavailable(f"no backend can run {op} with backend={backend!r}: " + " | ".join(reasons))
    return autotune.choose(op, accepted, args, kwargs, tracing=tracing)  # auto: measured, see autotune.py


def dispatch(op: str, backend: str, *args, **kwargs):
    return resolve(op, backend, *args, **kwargs).fn(*args, **kwargs)


def _resolve_traced(op: str, backend: str, args, kwargs) -> Impl:
    """Under torch.compile: read the arguments' static facts in traced code (Dynamo guards them like any
    tensor property) and decide once, outside the trace, on stand-ins (:mod:`.standin`). The chosen
    implementation's custom op (with its fake) goes into the graph: no graph break, no per-call check.

    The decision comes back as plain constants (op, backend, position in the registry), and the traced code
    reads the implementation from the registry, which Dynamo guards (a backend registered later recompiles).
    """
    if backend == "auto":
        backend = _trace_backend[-1] if _trace_backend else _default_backend.get()
    key, i = _resolve_facts(op, backend, tuple(standin.facts(a) for a in args),
                            tuple((k, standin.facts(kwargs[k])) for k in sorted(kwargs)))
    return _REGISTRY[key][i]


@torch.compiler.assume_constant_result
def _resolve_facts(op: str, backend: str, arg_facts: tuple, kw_facts: tuple) -> tuple[tuple[str, str], int]:
    args = [standin.build(f) for f in arg_facts]
    impl = _resolve(op, backend, args, {k: standin.build(f) for k, f in kw_facts}, tracing=True)
    key = (impl.op, impl.backend)
    return key, _REGISTRY[key].index(impl)


def implementations(op: str | None = None) -> list[Impl]:
    """Every registered implementation (of ``op``, or of every op), after loading every backend that loads."""
    for name in BACKENDS:
        _load(name)
    return [impl for (o, _), impls in sorted(_REGISTRY.items()) if op in (None, o) for impl in impls]


def available(op: str) -> dict[str, str | None]:
    """For each backend: ``None`` if it has an implementation of ``op``, else why not."""
    out: dict[str, str | None] = {}
    for name in BACKENDS:
        _load(name)
        if _REGISTRY.get((op, name)) or op in _COMPOSITE:
            out[name] = None
        else:
            out[name] = "; ".join(_LOAD_ERRORS.get(name, [])) or f"no {name} implementation of {op}"
    return out


def current_backend() -> str:
    """The backend ``backend="auto"`` calls resolve to here (``"auto"`` unless inside :func:`use_backend`)."""
    if torch.compiler.is_compiling() and _trace_backend:
        return _trace_backend[-1]
    return _default_backend.get()


@contextlib.contextmanager
def use_backend(name: str) -> Iterator[None]:
    """Make ``backend="auto"`` calls inside the block use ``name`` (e.g. in tests).

    While torch.compile traces, the choice goes on a plain list instead of the context variable (Dynamo
    reads a ContextVar but cannot trace setting one): the traced ops resolve with it, and the compiled
    code only replays the push and pop.
    """
    if name != "auto" and name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; expected 'auto' or one of {BACKENDS}")
    if torch.compiler.is_compiling():
        _trace_backend.append(name)
        try:
            yield
        finally:
            _trace_backend.pop()
        return
    token = _default_backend.set(name)
    try:
        yield
    finally:
        _default_backend.reset(token)
