"""Checkpoints on the DeepSpeed engine that are never lost, never half-trusted and never run code.

Layout of ``<out>/checkpoints/``::

    step_00000100/            DeepSpeed's files (model + optimizer + scheduler states, per rank)
        ema.safetensors       the fp32 EMA weights (rank 0)
        config.yaml           the resolved training recipe
        trainer_rank<r>.pt    per-rank client state: step, loader state, every RNG state, skip counters
        COMPLETE              JSON: step, world size, every file of the tag with its size (written last)
    abandoned-<time>/         tags of a branch a resumed run left (moved aside, never deleted)

Saving (every rank): DeepSpeed writes its files (``save_latest=False``: no ``latest`` pointer, which
DeepSpeed writes before its final barrier), each rank writes its own state by temp file + fsync +
rename, every rank fsyncs the tag's files, then -- only if no rank failed (one all-reduce of an
error flag, so a full disk on one rank stops every rank with the same clear error) -- rank 0
writes ``COMPLETE`` by temp + fsync + rename and fsyncs the directories. Pruning (``keep_last``)
only ever removes complete tags of the current lineage: when a run resumes from an older tag, the
newer tags of the branch it leaves are moved to ``abandoned-<time>/`` first.

Loading: ``--resume auto`` takes the newest tag that *verifies* (marker readable, every listed file
present with its recorded size, every ``.pt`` file loadable as plain tensors), warning about each
newer tag that does not and why. Every ``.pt`` file of a tag is scanned with
``torch.load(weights_only=True)`` before DeepSpeed reads it, and DeepSpeed's checkpoint engine is
replaced by one that loads with ``weights_only=True`` too: a pickle payload never runs.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from ..errors import UserError
from .distributed import all_reduce_sum, barrier
from .safeload import _SAVING, install_safe_loading, safe_load, scan_tag  # noqa: F401 - part of this API

log = logging.getLogger(__name__)

MARKER = "COMPLETE"
EMA_FILE = "ema.safetensors"
CONFIG_FILE = "config.yaml"
TAG_RE = re.compile(r"^step_(\d+)$")
ABANDONED_PREFIX = "abandoned-"


class CheckpointError(UserError, RuntimeError):
    """A checkpoint cannot be written or trusted; the message names the file and what to do."""


# ---------------------------------------------------------------------------------------------- discovery
def tag_for(step: int) -> str:
    return f"step_{step:08d}"


def step_of(tag_dir: Path) -> int:
    m = TAG_RE.match(tag_dir.name)
    if m is None:
        raise ValueError(f"{tag_dir} is not a checkpoint tag directory (step_NNNNNNNN)")
    return int(m.group(1))


def _tags(ckpt_dir: Path) -> list[Path]:
    if not ckpt_dir.is_dir():
        return []
    return sorted((p for p in ckpt_dir.iterdir() if p.is_dir() and TAG_RE.match(p.name)), key=step_of)


def complete_checkpoints(ckpt_dir: str | Path) -> list[Path]:
    """Tag directories with a completion marker, oldest first (not yet verified: see :func:`verify`)."""
    return [p for p in _tags(Path(ckpt_dir)) if (p / MARKER).is_file()]


def read_marker(tag_dir: Path) -> dict[str, Any]:
    try:
        m = json.loads((tag_dir / MARKER).read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{tag_dir / MARKER} is not readable ({type(e).__name__})") from e
    if not isinstance(m, dict) or not isinstance(m.get("files"), dict):
        raise CheckpointError(f"{tag_dir / MARKER} lists no files (written by an older dit-video?)")
    return m


def verify(tag_dir: Path, deep: bool = True) -> None:
    """Raise :class:`CheckpointError` unless every file the marker lists is there with its recorded size
    (and, ``deep``, every ``.pt`` file loads as plain tensors)."""
    m = read_marker(tag_dir)
    for name, size in m["files"].items():
        f = tag_dir / name
        if not f.is_file():
            raise CheckpointError(f"{f} is missing")
        got = f.stat().st_size
        if got != int(size):
            raise CheckpointError(f"{f} has {got} bytes, the marker recorded {size} (truncated or replaced)")
    if deep:
        scan_tag(tag_dir)


def newest_valid(ckpt_dir: Path) -> Path | None:
    """The newest complete tag that verifies; warns about each newer one that does not, and why."""
    tags = _tags(ckpt_dir)
    for tag in reversed(tags):
        if not (tag / MARKER).is_file():
            log.warning("checkpoint %s is incomplete (no %s marker: its save was interrupted); skipping it", tag,
                        MARKER)
            continue
        try:
            verify(tag)
        except CheckpointError as e:
            log.warning("checkpoint %s cannot be trusted (%s); falling back to the previous one", tag, e)
            continue
        return tag
    if tags:
        log.warning("%s holds no checkpoint that verifies: starting from scratch", ckpt_dir)
    return None


def find_checkpoint(path: str | Path) -> Path:
    """A tag directory, a checkpoints directory or a run directory -> the newest complete, verified tag.

    ``FileNotFoundError`` when there is none (naming incomplete tags, if any); a named tag that does
    not verify raises :class:`CheckpointError` saying why.
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"checkpoint path {p} does not exist")
    if TAG_RE.match(p.name) and p.is_dir():
        if not (p / MARKER).is_file():
            raise FileNotFoundError(f"checkpoint {p} is incomplete (no {MARKER} marker: the save was interrupted)")
        verify(p)
        return p
    for d in (p, p / "checkpoints"):
        found = newest_valid(d) if complete_checkpoints(d) else None
        if found is not None:
            return found
    incomplete = sorted(q.name for d in (p, p / "checkpoints") for q in _tags(d))
    hint = f" (incomplete or failing verification: {incomplete})" if incomplete else ""
    raise FileNotFoundError(f"no complete checkpoint in {p}{hint}: expected step_NNNNNNNN/ directories "
                            f"with a {MARKER} marker")


def set_aside_newer(ckpt_dir: Path, step: int) -> Path | None:
    """Move tags newer than ``step`` (a branch the resumed run leaves) to ``abandoned-<time>/``; rank 0 only."""
    newer = [t for t in _tags(ckpt_dir) if step_of(t) > step]
    if not newer:
        return None
    dest = ckpt_dir / f"{ABANDONED_PREFIX}{time.strftime('%Y%m%d-%H%M%S')}-from-{tag_for(step)}"
    dest.mkdir(parents=True, exist_ok=True)
    for t in newer:
        t.rename(dest / t.name)
    _fsync_dir(ckpt_dir)
    log.warning("resumed from step %d while newer checkpoints existed: moved %s to %s (the run continues from "
                "step %d; nothing was deleted)", step, [t.name for t in newer], dest, step)
    return dest


# ---------------------------------------------------------------------------------------------- writing
def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def _atomic(path: Path):
    """Write ``path`` through a temp file: yields the temp path; fsync + rename on success."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        _fsync_file(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _write_text(path: Path, text: str) -> None:
    with _atomic(path) as tmp:
        tmp.write_text(text)


def save(engine, ckpt_dir: Path, step: int, client_state: dict[str, Any], rank_state: dict[str, Any],
         ema_state: dict[str, torch.Tensor] | None, config_yaml: str, rank: int, keep_last: int = 0) -> Path:
    """Save on every rank (see the module docstring); returns the tag directory."""
    tag = tag_for(step)
    tag_dir = ckpt_dir / tag
    if rank == 0 and tag_dir.exists():  # a stale, interrupted save of the same step
        shutil.rmtree(tag_dir)
    barrier()
    error = None
    _SAVING[0] = step
    try:
        fault_point("before_save", step)
        engine.save_checkpoint(str(ckpt_dir), tag=tag, client_state=client_state, save_latest=False)
        fault_point("after_deepspeed", step)
        tag_dir.mkdir(parents=True, exist_ok=True)
        with _atomic(tag_dir / f"trainer_rank{rank}.pt") as tmp:
            torch.save(rank_state, tmp)
        if rank == 0:
            if ema_state is not None:
                from safetensors.torch import save_file

                with _atomic(tag_dir / EMA_FILE) as tmp:
                    save_file(ema_state, str(tmp))
            fault_point("mid_save", step)
            _write_text(tag_dir / CONFIG_FILE, config_yaml)
        for f in tag_dir.rglob("*"):
            if f.is_file():
                _fsync_file(f)
    except OSError as e:
        error = e
    failed = all_reduce_sum(torch.tensor([0.0 if error is None else 1.0]))
    if failed.item() > 0:
        if rank == 0:
            shutil.rmtree(tag_dir, ignore_errors=True)  # never trusted (no marker); free the space it took
        where = f"rank {rank}: {type(error).__name__}: {error}" if error else "another rank"
        raise CheckpointError(f"saving checkpoint {tag_dir} failed ({where}); the previous complete checkpoint is "
                              "untouched and `--resume auto` continues from it. Free disk space (or fix the "
                              "file system) and resume") from error
    if rank == 0:
        files = {str(f.relative_to(tag_dir)): f.stat().st_size for f in sorted(tag_dir.rglob("*"))
                 if f.is_file() and f.name != MARKER}
        try:
            fault_point("before_marker", step)
            _write_text(tag_dir / MARKER, json.dumps({"step": step, "world_size": int(client_state.get(
                "world_size", 1)), "files": files}, indent=1) + "\n")
            _fsync_dir(tag_dir)
            _fsync_dir(ckpt_dir)
        except OSError as e:
            error = e
        fault_point("after_marker", step)
        if error is None and keep_last > 0:
            for old in complete_checkpoints(ckpt_dir)[:-keep_last]:
                shutil.rmtree(old, ignore_errors=True)
    failed = all_reduce_sum(torch.tensor([0.0 if error is None else 1.0]))
    if failed.item() > 0:
        raise CheckpointError(f"writing {tag_dir / MARKER} failed ({error}); the previous complete checkpoint is "
                              "untouched. Free disk space and resume") from error
    return tag_dir


# ---------------------------------------------------------------------------------------------- other world sizes
UNIVERSAL_DIR = "universal"


def saved_world_size(tag_dir: Path) -> int:
    """The number of ranks that wrote a complete tag (from its marker)."""
    return int(read_marker(tag_dir).get("world_size", 1))


def prepare_universal(tag_dir: Path) -> Path:
    """Convert a tag to DeepSpeed's universal checkpoint format, loadable by any number of ranks (rank 0 only).

    ``ds_to_universal`` merges each parameter's fp32 master and Adam moments from all ZeRO partitions into
    ``<checkpoints>/universal/<tag>/zero/<param>/{fp32,exp_avg,exp_avg_sq,step}.pt``; the tag's model
    states (LR schedule, step counters), EMA, recipe and rank 0's trainer state are copied beside them.
    The source is scanned first (the converter unpickles with ``weights_only=False``), the output after.
    """
    import subprocess
    import sys

    verify(tag_dir)
    out = tag_dir.parent / UNIVERSAL_DIR / tag_dir.name
    if out.exists():
        shutil.rmtree(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "deepspeed.checkpoint.ds_to_universal", "--input_folder", str(tag_dir),
           "--output_folder", str(out), "--inject_missing_state", "--num_extract_workers", "1",
           "--num_merge_workers", "1"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        tail = " ".join((r.stderr or r.stdout).strip().splitlines()[-2:])[-500:]
        raise CheckpointError(f"converting {tag_dir} to a universal checkpoint (to resume on another number of "
                              f"ranks) failed: {tail}")
    for f in tag_dir.iterdir():
        if f.is_file() and (f.name.startswith("mp_rank_") or f.name in (EMA_FILE, CONFIG_FILE, "trainer_rank0.pt")):
            shutil.copy2(f, out / f.name)
    scan_tag(out)
    log.warning("checkpoint %s was written by %d rank(s): converted to a universal checkpoint in %s to resume on "
                "another number of ranks", tag_dir, saved_world_size(tag_dir), out)
    return out


# ---------------------------------------------------------------------------------------------- reading
def load(engine, tag_dir: Path, rank: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """Load a complete, verified tag on every rank; returns (client_state, this rank's state)."""
    scan_tag(tag_dir)  # before any DeepSpeed code reads a file
    path, client = engine.load_checkpoint(str(tag_dir.parent), tag=tag_dir.name, load_optimizer_states=True,
                                          load_lr_scheduler_states=True)
    if path is None:
        raise FileNotFoundError(f"DeepSpeed could not load checkpoint {tag_dir}")
    own = tag_dir / f"trainer_rank{rank}.pt"
    if not own.is_file():  # a universal checkpoint (another world size): rank 0's state serves every rank
        own = tag_dir / "trainer_rank0.pt"
    if not own.is_file():
        raise FileNotFoundError(f"{own} missing: not a complete dit-video checkpoint")
    return client or {}, safe_load(own)


def load_ema(tag_dir: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    f = tag_dir / EMA_FILE
    if not f.is_file():
        raise FileNotFoundError(f"{f} not found: the checkpoint holds no EMA weights")
    try:
        return load_file(str(f))
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{f} is damaged or truncated ({e})") from e


def fault_point(name: str, step: int) -> None:
    """Test hook: ``DIT_VIDEO_FAULT=name:step`` kills this process here with SIGKILL (a crash, no cleanup);
    ``DIT_VIDEO_FAULT=enospc:name:step`` raises ``OSError(ENOSPC)`` here instead (a full disk);
    ``DIT_VIDEO_FAULT=mid_file:step`` kills it halfway through writing DeepSpeed's first file of that save.
    Points: ``after_step``, ``before_save``, ``after_deepspeed``, ``mid_save``, ``before_marker``, ``after_marker``."""
    spec = os.environ.get("DIT_VIDEO_FAULT")
    if not spec:
        return
    if spec == f"{name}:{step}":
        import signal

        log.warning("DIT_VIDEO_FAULT=%s:%d: killing this process", name, step)
        os.kill(os.getpid(), signal.SIGKILL)
    if spec == f"enospc:{name}:{step}":
        import errno

        raise OSError(errno.ENOSPC, "No space left on device (injected by DIT_VIDEO_FAULT)")
