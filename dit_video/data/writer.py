"""Writing webdataset shards in the video2dataset layout.

A shard ``00000.tar`` holds ``{key}.mp4``, ``{key}.txt`` and ``{key}.json`` per sample (in that
order, grouped by key) and has a ``00000_stats.json`` beside it with counts and failures by reason.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import tarfile
import tempfile
from collections.abc import Iterable

SAMPLE_ORDER = ("mp4", "txt", "json")


WRITER = "dit-video"  # written into every {shard}_stats.json: how --overwrite knows the files it may remove
_SHARD_NAME = re.compile(r"^\d{5,}(\.tar|_stats\.json)$")


def own_files(out: str) -> list[str]:
    """Names in ``out`` that dit-video wrote: ``X.tar`` + ``X_stats.json`` pairs whose stats name this writer."""
    names = set(os.listdir(out))
    mine = []
    for name in sorted(names):
        if not name.endswith("_stats.json"):
            continue
        try:
            with open(os.path.join(out, name)) as f:
                stats = json.load(f)
        except (OSError, ValueError):
            continue
        if isinstance(stats, dict) and stats.get("writer") == WRITER:
            mine.append(name)
            tar = name[: -len("_stats.json")] + ".tar"
            if tar in names:
                mine.append(tar)
    return sorted(mine)


def check_out_dir(out: str, overwrite: bool) -> list[str]:
    """Create ``out`` if needed; refuse a non-empty one unless ``overwrite``. Returns the files of an earlier
    dit-video run there (the only ones ``--overwrite`` replaces); a file of someone else's with a shard's
    name would be overwritten, so it is an error."""
    if os.path.exists(out) and not os.path.isdir(out):
        raise FileExistsError(f"output {out!r} exists and is not a directory")
    os.makedirs(out, exist_ok=True)
    existing = sorted(n for n in os.listdir(out) if not n.startswith(STAGING_PREFIX))
    if existing and not overwrite:
        raise FileExistsError(f"output directory {out!r} is not empty ({len(existing)} entries, e.g. "
                              f"{existing[0]!r}); choose an empty one or pass --overwrite")
    mine = own_files(out)
    foreign = [n for n in existing if _SHARD_NAME.match(n) and n not in mine]
    if foreign:
        raise FileExistsError(f"{os.path.join(out, foreign[0])!r} has a shard's name but was not written by "
                              f"dit-video (no {WRITER!r} stats file beside it); --overwrite removes only dit-video's "
                              "own shards: move it away or choose another --out")
    return mine


def prepare_out_dir(out: str, overwrite: bool) -> None:
    """Create ``out``; refuse a non-empty one unless ``overwrite``; then remove dit-video's own old shards and
    stats only (never other files). Writers that can stage (``make-shards``) use :class:`StagedOutput`."""
    for name in check_out_dir(out, overwrite):
        os.remove(os.path.join(out, name))


STAGING_PREFIX = ".dit-video-staging-"


class StagedOutput:
    """Write shards into a hidden folder inside ``out``; :meth:`commit` removes the old run's own files and
    moves the new ones in only once all are written (an interrupted run leaves the old shards as they were)."""

    def __init__(self, out: str, overwrite: bool) -> None:
        self.out = out
        self.replaced = check_out_dir(out, overwrite)
        self.dir = tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=out)

    def path(self, name: str) -> str:
        return os.path.join(self.dir, name)

    def commit(self) -> list[str]:
        """Swap the new files in; returns their final paths (sorted)."""
        new = sorted(os.listdir(self.dir))
        for name in self.replaced:
            os.remove(os.path.join(self.out, name))
        for name in new:
            os.replace(os.path.join(self.dir, name), os.path.join(self.out, name))
        os.rmdir(self.dir)
        _fsync_dir(self.out)
        return [os.path.join(self.out, n) for n in new]

    def abort(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def shard_name(index: int) -> str:
    return f"{index:05d}.tar"


def write_shard(path: str, samples: Iterable[tuple[str, dict[str, bytes | str | dict]]]) -> int:
    """Write ``(key, {ext: payload})`` samples to a tar (str -> utf-8, dict -> json); returns the count.

    Written to ``path + '.tmp'`` and renamed, so a reader never sees half a shard.
    """
    n = 0
    tmp = path + ".tmp"
    with tarfile.open(tmp, "w", format=tarfile.USTAR_FORMAT) as tar:
        for key, members in samples:
            exts = [e for e in SAMPLE_ORDER if e in members] + sorted(e for e in members if e not in SAMPLE_ORDER)
            for ext in exts:
                payload = members[ext]
                if isinstance(payload, dict):
                    payload = json.dumps(payload, sort_keys=True).encode()
                elif isinstance(payload, str):
                    payload = payload.encode("utf-8")
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size, info.mtime, info.mode = len(payload), 0, 0o644
                info.uname = info.gname = ""
                tar.addfile(info, io.BytesIO(payload))
            n += 1
    os.replace(tmp, path)
    return n


def write_stats(tar_path: str, count: int, successes: int, failures: dict[str, int], **extra) -> str:
    """``{shard}_stats.json`` next to the tar, as video2dataset writes it (plus failures by reason)."""
    path = tar_path[: -len(".tar")] + "_stats.json"
    stats = {"count": count, "successes": successes, "failed": count - successes,
             "failures": dict(sorted(failures.items())), "writer": WRITER, **extra}
    with open(path, "w") as f:
        json.dump(stats, f, indent=1, sort_keys=True)
    return path
