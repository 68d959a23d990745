"""Loading checkpoint files without running code: ``torch.load(weights_only=True)`` everywhere, DeepSpeed's too.

DeepSpeed's checkpoint engine unpickles with ``weights_only=False``; :func:`install_safe_loading` replaces
its ``load`` on an engine, and :func:`scan_tag` loads every ``.pt`` of a tag as plain tensors (memory-mapped:
headers and pickles only) before any DeepSpeed code reads it. The few plain DeepSpeed classes its
optimizer files hold (a loss scaler, an enum, a dataclass of offsets) are allowed by name; anything else
in a pickle (a payload) is refused with :class:`~dit_video.train.checkpoint.CheckpointError`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch


def _error(msg: str):
    from .checkpoint import CheckpointError

    return CheckpointError(msg)


def _deepspeed_safe_globals() -> list:
    """The few plain DeepSpeed classes its optimizer-state files hold (no code runs when they unpickle)."""
    out = []
    for mod, name in (("deepspeed.runtime.fp16.loss_scaler", "LossScaler"),
                      ("deepspeed.runtime.fp16.loss_scaler", "DynamicLossScaler"),
                      ("deepspeed.runtime.zero.config", "ZeroStageEnum"),
                      ("deepspeed.utils.tensor_fragment", "fragment_address")):
        try:
            import importlib

            out.append(getattr(importlib.import_module(mod), name))
        except (ImportError, AttributeError):
            pass
    return out


def safe_load(path: str | Path, map_location: Any = None, mmap: bool = False) -> Any:
    """``torch.load(weights_only=True)`` with DeepSpeed's plain state classes allowed; a file that needs
    anything else (a pickle payload) raises :class:`CheckpointError` naming it."""
    with torch.serialization.safe_globals(_deepspeed_safe_globals()):
        try:
            return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
        except RuntimeError as e:
            if mmap and "mmap" in str(e):  # a legacy (non-zip) file: load without mmap
                return torch.load(path, map_location=map_location, weights_only=True)
            raise _error(f"{path} is damaged or truncated ({str(e).splitlines()[0][:200]})") from e
        except Exception as e:  # pickle.UnpicklingError for a payload, EOFError, zipfile errors...
            first = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
            if "Unsupported global" in str(e) or "weights_only" in str(e).lower() or "Weights only" in str(e):
                raise _error(f"{path} holds more than tensors and plain values ({first}): refusing to "
                                      "load it (a checkpoint must never run code)") from None
            raise _error(f"{path} is not readable ({type(e).__name__}: {first})") from None


def install_safe_loading(engine) -> None:
    """Make DeepSpeed's checkpoint engine load with ``weights_only=True`` (its default is ``False``)."""
    from deepspeed.runtime.checkpoint_engine.torch_checkpoint_engine import TorchCheckpointEngine

    ce = getattr(engine, "checkpoint_engine", None)
    if ce is None or type(ce) is not TorchCheckpointEngine:
        raise _error(f"unexpected DeepSpeed checkpoint engine {type(ce).__name__}: cannot make its loads "
                              "safe (dit-video supports DeepSpeed's TorchCheckpointEngine)")

    def load(path: str, map_location=None):
        return safe_load(path, map_location=map_location)

    ce.load = load  # instance attributes: this engine only
    if os.environ.get("DIT_VIDEO_FAULT", "").startswith("mid_file:"):
        original = ce.save

        def save_with_fault(state_dict, path: str):
            if os.environ.get("DIT_VIDEO_FAULT") == f"mid_file:{_SAVING[0]}":
                import io
                import signal

                buf = io.BytesIO()
                torch.save(state_dict, buf)
                with open(path, "wb") as f:  # half a file on disk, then a crash
                    f.write(buf.getvalue()[: buf.tell() // 2])
                    f.flush()
                    os.fsync(f.fileno())
                os.kill(os.getpid(), signal.SIGKILL)
            return original(state_dict, path)

        ce.save = save_with_fault


_SAVING = [-1]  # the step being saved (for the mid_file fault hook)


def scan_tag(tag_dir: Path) -> None:
    """Load every ``.pt`` file under ``tag_dir`` as plain tensors (mmap: headers and pickles only)."""
    for f in sorted(tag_dir.rglob("*.pt")):
        safe_load(f, map_location="cpu", mmap=True)
