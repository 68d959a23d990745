"""Reading webdataset shards with limits: a time limit on every read, a size cap on every member,
checked member names, one sample per key.

webdataset's own tar iterator (``url_opener`` / ``tar_file_expander`` / ``group_by_keys``) reads every
member whole into memory, waits forever on a FIFO or a stalled pipe, and silently drops members
whose names it cannot split. This module keeps webdataset's sample layout (members grouped by the
key before the first dot of the base name: ``dir/k.mp4`` and ``dir/k.txt`` form sample ``dir/k``,
via ``webdataset.tariterators.base_plus_ext``) and its URL handlers (``webdataset.gopen`` opens
``pipe:`` and remote URLs once ``data.allow_pipe`` allows them), and adds:

* a regular file is read with seeks (a member over the cap costs nothing to skip); a FIFO, a pipe
  or a remote URL is read with ``select`` and abandoned after ``timeout_s`` without a byte
  (``shard_timeout``; a command is killed);
* a member larger than ``max_member_bytes`` is skipped without being read, and its sample with it
  (``member_too_large``); no read of the tar machinery itself (pax headers) may exceed the cap
  either;
* member names that are absolute, contain ``..`` or have no extension (``bad_member_name``),
  links and devices (``bad_member_type``), a key seen before in the shard (``duplicate_key``), a
  cut or damaged tar (``tar_error``: the sample it cuts is dropped) are counted, never silent.

Each event goes to ``on_skip(reason, message)``; the loader counts them as ``skipped/<reason>``.
"""

from __future__ import annotations

import io
import os
import select
import stat
import subprocess
import tarfile
import time
from collections.abc import Callable, Iterator

from .shardlist import remote_kind, require_allowed

SHARD_TIMEOUT, SHARD_ERROR, TAR_ERROR = "shard_timeout", "shard_error", "tar_error"
TOO_LARGE, BAD_NAME, BAD_TYPE, DUPLICATE = "member_too_large", "bad_member_name", "bad_member_type", "duplicate_key"
_SLACK = 1 << 20  # read-ahead of the tar machinery beyond a budget
_TAIL = 1 << 16  # bytes of a stream kept to check how the archive ended


class ShardTimeout(OSError):
    """No byte arrived from a shard within the time limit."""


class BudgetExceeded(OSError):
    """The tar machinery asked for more bytes than any member may have (a pax/longname header bomb)."""


class ShardStream(io.RawIOBase):
    """A raw, read-only stream over a file descriptor with a no-progress time limit and a byte budget.

    ``budget``: bytes that may be read before :meth:`reset_budget` is called again (None: no limit).
    Non-regular files (FIFOs, pipes) are waited on with ``select`` for at most ``timeout_s`` per read.
    """

    def __init__(self, fd: int, name: str, timeout_s: float, *, proc: subprocess.Popen | None = None) -> None:
        super().__init__()
        self.fd, self.name, self.timeout_s, self.proc = fd, name, timeout_s, proc
        st = os.fstat(fd)
        self.regular = stat.S_ISREG(st.st_mode)
        if not self.regular:
            os.set_blocking(fd, False)
        self.pos = 0
        self.budget: int | None = None
        self._used = 0
        self._tail = bytearray()  # the last _TAIL bytes read (streams only)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return self.regular

    def tell(self) -> int:
        return self.pos

    def seek(self, pos: int, whence: int = 0) -> int:
        if not self.regular:
            raise io.UnsupportedOperation("seek on a stream")
        self.pos = os.lseek(self.fd, pos, whence)
        return self.pos

    def reset_budget(self, budget: int | None) -> None:
        self.budget, self._used = budget, 0

    def readinto(self, b) -> int:
        n = len(b)
        if self.budget is not None and self._used + n > self.budget + _SLACK:
            raise BudgetExceeded(f"{self.name}: the tar asks for {self._used + n} bytes at once (over the member "
                                 f"size cap of {self.budget})")
        if self.regular:
            got = os.readv(self.fd, [b])
        else:
            deadline = time.monotonic() + self.timeout_s
            while True:
                try:
                    got = os.readv(self.fd, [b])
                    break
                except BlockingIOError:
                    left = deadline - time.monotonic()
                    if left <= 0 or not select.select([self.fd], [], [], left)[0]:
                        raise ShardTimeout(f"{self.name}: no data for {self.timeout_s:g} s "
                                           "(data.read_timeout_s)") from None
            if got:
                self._tail += memoryview(b)[:got]
                if len(self._tail) > 2 * _TAIL:
                    del self._tail[:-_TAIL]
        self.pos += got
        self._used += got
        return got

    def block_at(self, offset: int) -> bytes | None:
        """The 512 bytes at ``offset`` if they can still be read (a file, or a stream's recent tail)."""
        if self.regular:
            return os.pread(self.fd, 512, offset)
        start = self.pos - len(self._tail)
        if offset < start:
            return None
        return bytes(self._tail[offset - start: offset - start + 512])

    def close(self) -> None:
        if self.closed:
            return
        try:
            os.close(self.fd)
        except OSError:
            pass
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
        if self.proc is not None:
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        super().close()

    def exit_status(self) -> int | None:
        """A command's exit status once it ended (None for files, or while it runs)."""
        if self.proc is None:
            return None
        try:
            return self.proc.wait(timeout=min(self.timeout_s, 5.0))
        except subprocess.TimeoutExpired:
            return None


def open_shard(url: str, *, allow_pipe: bool, timeout_s: float) -> ShardStream:
    """Open a local shard (a file or FIFO: never blocks) or, when allowed, a command / URL (a subprocess)."""
    require_allowed(url, allow_pipe)
    if remote_kind(url) is None:
        path = url[len("file://"):] if url.startswith("file://") else url[len("file:"):] if url.startswith(
            "file:") else url
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # a FIFO without a writer must not block the open
        if stat.S_ISREG(os.fstat(fd).st_mode):
            os.set_blocking(fd, True)
        return ShardStream(fd, url, timeout_s)
    from webdataset.gopen import gopen

    pipe = gopen(url, "rb")
    proc = getattr(pipe, "proc", None)
    if proc is None or proc.stdout is None:  # a handler without a subprocess: read it through a pipe of our own
        raise OSError(f"{url}: webdataset's handler for this URL gives no process stream to time-limit")
    fd = os.dup(proc.stdout.fileno())
    proc.stdout.close()
    return ShardStream(fd, url, timeout_s, proc=proc)


def _bad_name(name: str) -> str | None:
    if not name or "\0" in name:
        return "empty or NUL in name"
    if name.startswith("/") or name.startswith("\\"):
        return "absolute path"
    parts = name.replace("\\", "/").split("/")
    if ".." in parts:
        return "'..' in path"
    return None


class _Members:
    """The regular members of one open tar as ``(name, bytes)``; events go to ``on_skip``."""

    def __init__(self, stream: ShardStream, url: str, max_bytes: int, on_skip: Callable[[str, str], None]) -> None:
        self.stream, self.url, self.max_bytes, self.on_skip = stream, url, max_bytes, on_skip

    def __iter__(self) -> Iterator[tarfile.TarInfo]:
        """The archive's regular members' headers; :meth:`read` one before asking for the next."""
        s = self.stream
        s.reset_budget(self.max_bytes)
        streaming = not s.regular
        tar = self.tar = tarfile.open(fileobj=s, mode="r|*" if streaming else "r:*")
        compressed = getattr(tar.fileobj, "comptype", "tar") != "tar" if streaming else tar.fileobj is not s
        self.unread = False
        while True:
            if self.unread and streaming:  # the caller skipped the last member: read past it, keeping nothing
                s.reset_budget(None)
                tar.fileobj.seek(tar.offset)
            s.reset_budget(self.max_bytes)
            info = tar.next()
            tar.members = []  # the archive's index would grow with every member
            if info is None:
                break
            if info.isdir():
                continue
            if not info.isreg():
                self.on_skip(BAD_TYPE, f"{self.url}: member {info.name!r} is a {_kind(info)}, not a file")
                continue
            self.unread = True
            yield info
        if not compressed:
            end = s.block_at(tar.offset)
            if end is None or len(end) < 512 or end.count(0) != 512:
                what = "ends without the end-of-archive blocks (cut short)" if not end or len(end) < 512 else \
                    "has a damaged header"
                raise tarfile.ReadError(f"the tar {what} at byte {tar.offset}")

    def read(self, info: tarfile.TarInfo) -> bytes | None:
        """The member's bytes, or None (counted) when it is over the size cap: then it is skipped unread."""
        s, tar = self.stream, self.tar
        if info.size > self.max_bytes:
            self.on_skip(TOO_LARGE, f"{self.url}: member {info.name!r} declares {info.size} bytes, over "
                         f"data.max_member_bytes={self.max_bytes}; skipped unread")
            return None  # left unread: the next header is found by a seek (file) or by reading past it (stream)
        self.unread = False
        s.reset_budget(info.size)
        f = tar.extractfile(info)
        return f.read() if f is not None else b""


def _kind(info: tarfile.TarInfo) -> str:
    return ("symlink" if info.issym() else "hard link" if info.islnk() else "device" if info.isdev()
            else "FIFO" if info.isfifo() else f"type {info.type!r}")


def iter_samples(url: str, *, allow_pipe: bool, timeout_s: float, max_member_bytes: int,
                 on_skip: Callable[[str, str], None]) -> Iterator[dict]:
    """The samples of one shard: ``{"__key__", "__url__", ext: bytes, ...}``, grouped by key as webdataset does.

    A sample is yielded only when complete: a tar error, a timeout or an oversized member drops the
    sample it hits (counted once, by reason); the shard's later samples still come unless the tar
    itself cannot be read further.
    """
    from webdataset.tariterators import base_plus_ext, meta_prefix, meta_suffix

    try:
        stream = open_shard(url, allow_pipe=allow_pipe, timeout_s=timeout_s)
    except OSError as e:
        on_skip(SHARD_ERROR, f"{url}: cannot open: {e}")
        return
    seen: set[str] = set()
    cur: dict | None = None
    dropped: str | None = None  # why the current sample will not be yielded (already counted)

    def close_current() -> dict | None:
        nonlocal cur, dropped
        out = cur if cur is not None and dropped is None and len(cur) > 2 else None
        cur, dropped = None, None
        return out

    try:
        members = _Members(stream, url, max_member_bytes, on_skip)
        for info in members:
            name = info.name
            why = _bad_name(name)
            if why is None and "/" not in name and name.startswith(meta_prefix) and name.endswith(meta_suffix):
                continue  # webdataset's metadata members (__key__ style)
            key, ext = base_plus_ext(name) if why is None else (None, None)
            if why is not None or key is None:
                on_skip(BAD_NAME, f"{url}: member {name!r}: {why or 'no extension after the key'}")
                continue
            ext = ext.lower()
            if ext.startswith("__"):
                on_skip(BAD_NAME, f"{url}: member {name!r}: extension {ext!r} is reserved")
                continue
            if cur is None or key != cur["__key__"] or ext in cur:  # a new sample (the same key again: a repeat)
                done = close_current()
                if done is not None:
                    yield done
                cur = {"__key__": key, "__url__": url}
                if key in seen:
                    dropped = DUPLICATE
                    on_skip(DUPLICATE, f"{url}: key {key!r} appears again; the later sample is skipped")
                seen.add(key)
            data = members.read(info)  # a tar error here drops the sample this member belongs to
            if data is None:
                if dropped is None:
                    dropped = TOO_LARGE  # counted by read()
                continue
            cur[ext] = data
        done = close_current()
        if done is not None:
            yield done
        status = stream.exit_status()
        if status not in (None, 0):
            on_skip(SHARD_ERROR, f"{url}: the command exited with status {status}")
    except ShardTimeout as e:
        on_skip(SHARD_TIMEOUT, f"{e}; the rest of the shard is skipped")
    except BudgetExceeded as e:
        on_skip(TAR_ERROR, f"{e}; the rest of the shard is skipped")
    except (tarfile.TarError, EOFError, OSError, ValueError) as e:
        # a cut or damaged tar: the sample being read is dropped with the rest of the shard
        on_skip(TAR_ERROR, f"{url}: {type(e).__name__}: {e}; the rest of the shard is skipped")
    finally:
        stream.close()
