"""Finding shards: a directory of ``.tar`` files, a glob, a brace pattern, or several joined by ``::``."""

from __future__ import annotations

import glob
import hashlib
import os

import braceexpand


def list_shards(spec: str) -> list[str]:
    """Expand a shard spec to a sorted list of paths; a missing or empty source raises FileNotFoundError."""
    if not spec:
        raise ValueError("no shards given: set data.shards to a directory of .tar files, a glob or a brace pattern")
    out: list[str] = []
    for part in str(spec).split("::"):
        part = os.path.expanduser(part)
        if "://" in part or part.startswith("pipe:"):  # remote URL: webdataset's gopen opens it
            out.extend(braceexpand.braceexpand(part))
            continue
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
            elif os.path.isfile(p):
                found.append(p)
            else:
                raise FileNotFoundError(f"shard {p!r} (from data.shards={spec!r}) does not exist")
        if not found:
            raise FileNotFoundError(f"no shards match {part!r}; check data.shards")
        out.extend(found)
    return out


def fingerprint(shards: list[str]) -> str:
    """Short hash of the shard names, stored in loader state to catch a resume on different data."""
    h = hashlib.sha1()
    for s in shards:
        h.update(os.path.basename(s).encode() + b"\0")
    return h.hexdigest()[:16]
