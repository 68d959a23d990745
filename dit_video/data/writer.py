"""Writing webdataset shards in the video2dataset layout.

A shard ``00000.tar`` holds ``{key}.mp4``, ``{key}.txt`` and ``{key}.json`` per sample (in that
order, grouped by key) and has a ``00000_stats.json`` beside it with counts and failures by reason.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
from collections.abc import Iterable

SAMPLE_ORDER = ("mp4", "txt", "json")


def prepare_out_dir(out: str, overwrite: bool) -> None:
    """Create ``out``; refuse a non-empty one unless ``overwrite`` (then remove its old shards and stats only)."""
    if os.path.exists(out) and not os.path.isdir(out):
        raise FileExistsError(f"output {out!r} exists and is not a directory")
    os.makedirs(out, exist_ok=True)
    existing = sorted(os.listdir(out))
    if existing and not overwrite:
        raise FileExistsError(f"output directory {out!r} is not empty ({len(existing)} entries, e.g. "
                              f"{existing[0]!r}); choose an empty one or pass --overwrite")
    for name in existing:
        if name.endswith(".tar") or name.endswith("_stats.json"):
            os.remove(os.path.join(out, name))


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
             "failures": dict(sorted(failures.items())), **extra}
    with open(path, "w") as f:
        json.dump(stats, f, indent=1, sort_keys=True)
    return path
