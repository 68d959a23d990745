"""Finding shards: a directory of ``.tar`` files, a glob, a brace pattern, or several joined by ``::``.

This module is the one gate for shard specs that would run a command. webdataset opens ``pipe:``
URLs with a shell and ``http(s)://``, ``gs:``, ``hf:``, ... URLs through ``curl`` / ``gsutil``
subprocesses, so a recipe that names shards could run code. Such specs are refused unless the user
opts in with ``data.allow_pipe=true`` (the usual way to stream from object storage:
``pipe:aws s3 cp s3://bucket/shard-{000..099}.tar -``); then each command is named in a one-line
warning. :func:`list_shards` (the loader and ``dit-video train`` go through it) and
:func:`require_allowed` (called again where a shard is opened) enforce it.
"""

from __future__ import annotations

import glob
import hashlib
import logging
import os
import re

import braceexpand

log = logging.getLogger("dit_video.data")
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]+):")  # two letters at least: not a Windows drive
_warned: set[str] = set()


def remote_kind(part: str) -> str | None:
    """``"command"`` for a ``pipe:`` spec, ``"url"`` for a scheme a subprocess opens, None for a local path.

    ``file:`` URLs and paths that exist on disk (even with a colon in the name) are local.
    """
    if part.startswith("pipe:"):
        return "command"
    m = _SCHEME.match(part)
    if m is None or m.group(1).lower() == "file" or os.path.exists(part):
        return None
    return "url"


def _refusal(part: str, spec: str, kind: str) -> str:
    what = ("runs a shell command (a webdataset pipe: URL)" if kind == "command"
            else "is fetched by a subprocess (curl/gsutil/...: webdataset's URL handlers)")
    return (f"data.shards part {part!r} {what}; shard specs from recipes run no commands unless you opt in: "
            f"set data.allow_pipe=true (on the command line, or in a recipe you trust). data.shards={spec!r}")


def require_allowed(url: str, allow_pipe: bool, spec: str | None = None) -> None:
    """Raise ``ValueError`` if opening ``url`` would run a command and ``allow_pipe`` is False."""
    kind = remote_kind(url)
    if kind is not None and not allow_pipe:
        raise ValueError(_refusal(url, spec if spec is not None else url, kind))


def _local_path(part: str) -> str:
    if part.startswith("file://"):
        return part[len("file://"):]
    if part.startswith("file:"):
        return part[len("file:"):]
    return part


def list_shards(spec: str, allow_pipe: bool = False) -> list[str]:
    """Expand a shard spec to a sorted list of paths (or, with ``allow_pipe``, URLs / commands).

    A missing or empty source raises ``FileNotFoundError``; a command or remote URL without
    ``allow_pipe`` raises ``ValueError`` saying how to allow it (before anything is opened).
    """
    if not spec:
        raise ValueError("no shards given: set data.shards to a directory of .tar files, a glob or a brace pattern")
    out: list[str] = []
    for part in str(spec).split("::"):
        part = os.path.expanduser(part)
        kind = remote_kind(part)
        if kind is not None:
            require_allowed(part, allow_pipe, spec)
            if part not in _warned:
                _warned.add(part)
                shown = part[len("pipe:"):] if kind == "command" else part
                log.warning("data.allow_pipe: shards are read through %s `%s`",
                            "the shell command" if kind == "command" else "a subprocess for the URL", shown)
            out.extend(braceexpand.braceexpand(part))
            continue
        part = _local_path(part)
        if os.path.isdir(part):
            found = sorted(glob.glob(os.path.join(glob.escape(part), "*.tar")))
            if not found:
                raise FileNotFoundError(f"no .tar shards in directory {part!r}; write some with "
                                        "`dit-video make-shards` or `dit-video make-synthetic`")
            out.extend(found)
            continue
        found = []
        for p in braceexpand.braceexpand(part):
            if any(c in p for c in "*?["):
                found.extend(sorted(glob.glob(p)))
            elif os.path.exists(p) and not os.path.isdir(p):  # a file (or a FIFO: read with a time limit)
                found.append(p)
            else:
                raise FileNotFoundError(f"shard {p!r} (from data.shards={spec!r}) does not exist")
        if not found:
            raise FileNotFoundError(f"no shards match {part!r}; check data.shards")
        out.extend(found)
    return out


def shard_dirs(spec: str) -> list[str]:
    """The local directories a spec's shards live in (where ``manifest.json`` files are looked for)."""
    dirs: list[str] = []
    for part in str(spec).split("::"):
        part = _local_path(os.path.expanduser(part))
        if remote_kind(part) is not None:
            continue
        d = part if os.path.isdir(part) else os.path.dirname(part) or "."
        if d not in dirs:
            dirs.append(d)
    return dirs


def fingerprint(shards: list[str]) -> str:
    """Short hash of the shard names, stored in loader state to catch a resume on different data."""
    h = hashlib.sha1()
    for s in shards:
        h.update(os.path.basename(s).encode() + b"\0")
    return h.hexdigest()[:16]
