"""Checkpoints on the DeepSpeed engine, with a completion marker.

Layout of ``<out>/checkpoints/``::

    step_00000100/            DeepSpeed's files (model + optimizer + scheduler states, per rank)
        ema.safetensors       the fp32 EMA weights (rank 0)
        config.yaml           the resolved training recipe
        trainer_rank<r>.pt    per-rank client state: step, loader state, every RNG state
        COMPLETE              written by rank 0 after the final barrier
    latest                    DeepSpeed's tag file (NOT trusted: written before the final barrier)

``save_checkpoint`` / ``load_checkpoint`` run on every rank. ``--resume auto`` takes the newest
tag that has ``COMPLETE``: a crash during a save leaves a tag without it, which is skipped.
"""

from __future__ import annotations

import logging
import re
import shutil
from pathlib import Path
from typing import Any

import torch

from .distributed import barrier

log = logging.getLogger(__name__)

MARKER = "COMPLETE"
EMA_FILE = "ema.safetensors"
CONFIG_FILE = "config.yaml"
TAG_RE = re.compile(r"^step_(\d+)$")


def tag_for(step: int) -> str:
    return f"step_{step:08d}"


def step_of(tag_dir: Path) -> int:
    m = TAG_RE.match(tag_dir.name)
    if m is None:
        raise ValueError(f"{tag_dir} is not a checkpoint tag directory (step_NNNNNNNN)")
    return int(m.group(1))


def complete_checkpoints(ckpt_dir: str | Path) -> list[Path]:
    """Tag directories with a completion marker, oldest first."""
    d = Path(ckpt_dir)
    if not d.is_dir():
        return []
    tags = [p for p in d.iterdir() if p.is_dir() and TAG_RE.match(p.name) and (p / MARKER).is_file()]
    return sorted(tags, key=step_of)


def find_checkpoint(path: str | Path) -> Path:
    """A tag directory, a checkpoints directory or a run directory -> the newest complete tag directory.

    ``FileNotFoundError`` when there is none (naming incomplete tags, if any).
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"checkpoint path {p} does not exist")
    if TAG_RE.match(p.name) and p.is_dir():
        if not (p / MARKER).is_file():
            raise FileNotFoundError(f"checkpoint {p} is incomplete (no {MARKER} marker: the save was interrupted)")
        return p
    for d in (p, p / "checkpoints"):
        found = complete_checkpoints(d)
        if found:
            return found[-1]
    incomplete = sorted(q.name for d in (p, p / "checkpoints") if d.is_dir()
                        for q in d.iterdir() if q.is_dir() and TAG_RE.match(q.name))
    hint = f" (incomplete: {incomplete})" if incomplete else ""
    raise FileNotFoundError(f"no complete checkpoint in {p}{hint}: expected step_NNNNNNNN/ directories "
                            f"with a {MARKER} marker")


def save(engine, ckpt_dir: Path, step: int, client_state: dict[str, Any], rank_state: dict[str, Any],
         ema_state: dict[str, torch.Tensor] | None, config_yaml: str, rank: int, keep_last: int = 0) -> Path:
    """Save on every rank; rank 0 adds EMA + config and, after the final barrier, the marker."""
    tag = tag_for(step)
    tag_dir = ckpt_dir / tag
    if rank == 0 and tag_dir.exists():  # a stale, interrupted save of the same step
        shutil.rmtree(tag_dir)
    barrier()
    engine.save_checkpoint(str(ckpt_dir), tag=tag, client_state=client_state)
    tag_dir.mkdir(parents=True, exist_ok=True)
    torch.save(rank_state, tag_dir / f"trainer_rank{rank}.pt")
    if rank == 0:
        if ema_state is not None:
            from safetensors.torch import save_file

            save_file(ema_state, str(tag_dir / EMA_FILE))
        (tag_dir / CONFIG_FILE).write_text(config_yaml)
    barrier()
    _fault_point("before_marker", step)
    if rank == 0:
        (tag_dir / MARKER).write_text(f"{step}\n")
        if keep_last > 0:
            for old in complete_checkpoints(ckpt_dir)[:-keep_last]:
                shutil.rmtree(old, ignore_errors=True)
    barrier()
    return tag_dir


def load(engine, tag_dir: Path, rank: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """Load a complete tag on every rank; returns (client_state, this rank's state)."""
    path, client = engine.load_checkpoint(str(tag_dir.parent), tag=tag_dir.name, load_optimizer_states=True,
                                          load_lr_scheduler_states=True)
    if path is None:
        raise FileNotFoundError(f"DeepSpeed could not load checkpoint {tag_dir}")
    own = tag_dir / f"trainer_rank{rank}.pt"
    if not own.is_file():
        raise FileNotFoundError(f"{own} missing: the checkpoint was written by a run with fewer ranks")
    return client or {}, torch.load(own, weights_only=True)


def load_ema(tag_dir: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    f = tag_dir / EMA_FILE
    if not f.is_file():
        raise FileNotFoundError(f"{f} not found: the checkpoint holds no EMA weights")
    return load_file(str(f))


def _fault_point(name: str, step: int) -> None:
    """Test hook: ``DIT_VIDEO_FAULT=name:step`` kills the process here with SIGKILL (a crash, no cleanup)."""
    import os
    import signal

    if os.environ.get("DIT_VIDEO_FAULT") == f"{name}:{step}":
        log.warning("DIT_VIDEO_FAULT=%s:%d: killing this process", name, step)
        os.kill(os.getpid(), signal.SIGKILL)
