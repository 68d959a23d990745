"""Backend registry and dispatch for the fused ops.

Every op (``attention``, ``adaln_modulate``, ``gated_residual_adaln``, ``rope3d``) has one public
function in :mod:`dit_video.kernels.ops` and several implementations. An implementation is
registered with :func:`register` together with a ``check`` function that looks at the call's
arguments and returns ``None`` when it can serve the call, or a short reason why not
("needs a CUDA tensor", "head_dim 320 > 256", ...).

``backend="auto"`` walks a per-device priority list and takes the first implementation whose
check passes; the ``torch`` reference serves everything, so ``auto`` never fails. A forced
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

log = logging.getLogger("dit_video.kernels")

BACKENDS = ("torch", "triton", "cuda", "cpu", "flash")

# auto: fastest first; torch last (it serves every call).
AUTO_ORDER: dict[str, tuple[str, ...]] = {
    "cuda": ("triton", "cuda", "flash", "torch"),
    "cpu": ("cpu", "torch"),
}

# backend -> modules that register its implementations when imported. A module that does not
# exist yet (a backend not built in this checkout) is skipped quietly; any other import error
# is recorded as the reason the backend is unavailable.
PROVIDERS: dict[str, tuple[str, ...]] = {
    "torch": ("dit_video.kernels.reference",),
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
_LOAD_ERRORS: dict[str, list[str]] = {}
_LOADED: set[str] = set()
_default_backend: contextvars.ContextVar[str] = contextvars.ContextVar("dit_video_backend", default="auto")


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
    """What the checks look at: each tensor's shape, strides, dtype, device and 16-byte alignment, and the
    other arguments' values. None when a tensor has no storage to look at (fake / meta while tracing)."""
    key = []
    for a in list(args) + [kwargs[k] for k in sorted(kwargs)]:
        if isinstance(a, torch.Tensor):
            if a.device.type == "meta" or type(a) is not torch.Tensor and not isinstance(a, torch.nn.Parameter):
                return None
            key.append((tuple(a.shape), a.stride(), a.dtype, a.device, a.data_ptr() % 16))
        elif isinstance(a, (int, float, bool, str, type(None))):
            key.append(a)
        else:
            return None
    return tuple(key) + tuple(sorted(kwargs))


def resolve(op: str, backend: str, *args, **kwargs) -> Impl:
    """The implementation that would serve this call (raises if a forced backend cannot).

    Decisions are cached by the call's signature (see :func:`_signature`), so each distinct layout is
    checked -- and, for the attention kernels, planned -- once, not on every call.
    """
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


def _resolve(op: str, backend: str, args, kwargs) -> Impl:
    if backend == "auto":
        names = AUTO_ORDER.get(_device_of(args, kwargs), ("torch",))
    elif backend in BACKENDS:
        names = (backend,)
    else:
        raise ValueError(f"unknown backend {backend!r}; expected 'auto' or one of {BACKENDS}")
    reasons = []
    for name in names:
        _load(name)
        impls = _REGISTRY.get((op, name), [])
        if not impls:
            why = "; ".join(_LOAD_ERRORS.get(name, [])) or f"no {name} implementation of {op}"
            reasons.append(f"{name}: {why}")
        for impl in impls:
            why = impl.check(*args, **kwargs)
            if why is None:
                return impl
            reasons.append(f"{name} ({getattr(impl.fn, '__name__', impl.fn)}): {why}")
    raise BackendUnavailable(f"no backend can run {op} with backend={backend!r}: " + " | ".join(reasons))


def dispatch(op: str, backend: str, *args, **kwargs):
    return resolve(op, backend, *args, **kwargs).fn(*args, **kwargs)


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
        if _REGISTRY.get((op, name)):
            out[name] = None
        else:
            out[name] = "; ".join(_LOAD_ERRORS.get(name, [])) or f"no {name} implementation of {op}"
    return out


def current_backend() -> str:
    """The backend ``backend="auto"`` calls resolve to here (``"auto"`` unless inside :func:`use_backend`)."""
    return _default_backend.get()


@contextlib.contextmanager
def use_backend(name: str) -> Iterator[None]:
    """Make ``backend="auto"`` calls inside the block use ``name`` (e.g. in tests)."""
    if name != "auto" and name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; expected 'auto' or one of {BACKENDS}")
    token = _default_backend.set(name)
    try:
        yield
    finally:
        _default_backend.reset(token)
