"""Decode in a forked child process with a per-sample time limit.

decord and FFmpeg can hang or crash on some broken files. A :class:`DecodeSandbox` keeps one child
process per loader worker that runs :func:`codec.decode_clip`; the worker waits at most
``timeout_s`` for each sample. A child that hangs is killed, one that crashes is reaped, and the
sample is reported as ``decode_timeout`` / ``decode_crash``; the next sample gets a fresh child.
Frames come back through an anonymous shared memory map (one copy), not a pipe.

``os.fork`` is used, not ``multiprocessing``: DataLoader workers are daemonic processes, which
multiprocessing forbids to have children. The child imports nothing new and never touches torch.
"""

from __future__ import annotations

import logging
import mmap
import os
import pickle
import signal
import socket
import sys
from multiprocessing.connection import Connection

import numpy as np

from . import codec

TIMEOUT, CRASH = "decode_timeout", "decode_crash"
log = logging.getLogger(__name__)


def _set_pdeathsig() -> None:
    """Linux: have the kernel kill this child when its parent dies (a hung child must not linger)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def _child_loop(conn: Connection, buf: mmap.mmap, quiet: bool) -> None:
    for sig in (signal.SIGSEGV, signal.SIGBUS, signal.SIGFPE, signal.SIGCHLD):
        signal.signal(sig, signal.SIG_DFL)  # drop handlers inherited from torch's worker loop
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when we stop
    _set_pdeathsig()
    if quiet:  # decord prints every open error (with the raw bytes) to stderr; reasons go back to the parent
        fd = os.open(os.devnull, os.O_WRONLY)
        os.dup2(fd, 2)
    while True:
        try:
            msg = conn.recv_bytes()
        except (EOFError, OSError):
            return
        plan, data = pickle.loads(msg)
        try:
            frames, info = codec.decode_clip(data, plan)
            frames = np.ascontiguousarray(frames)
            if frames.nbytes > len(buf):
                reply = ("grow", frames.nbytes)
            else:
                buf[: frames.nbytes] = memoryview(frames).cast("B")
                reply = ("ok", frames.shape, info)
        except codec.DecodeFailure as e:
            reply = ("fail", e.reason, e.message)
        except Exception as e:  # anything else is a decode error of this sample, not of the child
            reply = ("fail", codec.DECODE_ERROR, f"{type(e).__name__}: {e}")
        conn.send_bytes(pickle.dumps(reply))


class DecodeSandbox:
    """A child process that decodes one clip at a time under a time limit (POSIX ``fork``)."""

    def __init__(self, timeout_s: float, capacity: int = 8 << 20, quiet: bool = True) -> None:
        self.timeout_s = timeout_s
        self.capacity = capacity
        self.quiet = quiet
        self.pid: int | None = None
        self.conn: Connection | None = None
        self.restarts = 0

    @staticmethod
    def available() -> bool:
        return hasattr(os, "fork") and sys.platform != "win32"

    def _start(self) -> None:
        self.buf = mmap.mmap(-1, self.capacity, flags=mmap.MAP_SHARED)
        parent_sock, child_sock = socket.socketpair()
        pid = os.fork()
        if pid == 0:  # child
            try:
                parent_sock.close()
                _child_loop(Connection(child_sock.detach()), self.buf, self.quiet)
            finally:
                os._exit(0)
        child_sock.close()
        self.pid, self.conn = pid, Connection(parent_sock.detach())

    def _stop(self, kill: bool) -> str:
        """Stop the child; returns how it ended (for messages)."""
        how = ""
        if self.pid is not None:
            if kill:
                try:
                    os.kill(self.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            if self.conn is not None:
                self.conn.close()
            _, status = os.waitpid(self.pid, 0)
            if os.WIFSIGNALED(status):
                sig = os.WTERMSIG(status)
                how = f"killed by {signal.Signals(sig).name}" if sig in signal.valid_signals() else f"signal {sig}"
            else:
                how = f"exit code {os.WEXITSTATUS(status)}"
        self.pid, self.conn = None, None
        return how

    def close(self) -> None:
        if self.pid is not None:
            self._stop(kill=True)

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    def decode(self, data: bytes, plan: codec.ClipPlan, copy: bool = True) -> tuple[np.ndarray, dict]:
        """Like :func:`codec.decode_clip`, but a hang past ``timeout_s`` or a crash raises
        ``DecodeFailure("decode_timeout" | "decode_crash")`` instead of stalling or killing the caller.

        With ``copy=False`` the frames are a view of the shared buffer, valid until the next call."""
        msg = pickle.dumps((plan, data), protocol=pickle.HIGHEST_PROTOCOL)
        for _ in range(3):
            if self.pid is None:
                self._start()
            try:
                self.conn.send_bytes(msg)
                ready = self.conn.poll(self.timeout_s)
                reply = pickle.loads(self.conn.recv_bytes()) if ready else None
            except (EOFError, OSError, BrokenPipeError):
                how = self._stop(kill=True)
                self.restarts += 1
                raise codec.DecodeFailure(CRASH, f"decoder process died ({how})") from None
            if reply is None:
                self._stop(kill=True)
                self.restarts += 1
                raise codec.DecodeFailure(TIMEOUT, f"no result after {self.timeout_s:g} s; decoder killed")
            if reply[0] == "ok":
                shape, info = reply[1], reply[2]
                nbytes = int(np.prod(shape))
                frames = np.frombuffer(self.buf, dtype=np.uint8, count=nbytes).reshape(shape)
                return (frames.copy() if copy else frames), info
            if reply[0] == "fail":
                raise codec.DecodeFailure(reply[1], reply[2])
            # "grow": the clip does not fit the shared buffer; restart with room for it
            self._stop(kill=True)
            self.capacity = int(reply[1] * 1.25) + 4096
        raise codec.DecodeFailure(codec.DECODE_ERROR, "decoded clip does not fit the shared buffer")
