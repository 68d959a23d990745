"""Decode in a forked child process with a per-sample time limit.

decord and FFmpeg can hang or crash on some broken files. A :class:`DecodeSandbox` keeps one child
process per loader worker that runs :func:`codec.decode_clip`; the worker waits at most
``timeout_s`` for each sample. A child that hangs is killed, one that crashes is reaped, and the
sample is reported as ``decode_timeout`` / ``decode_crash``; the next sample gets a fresh child.
Clips go in and frames come back through anonymous shared memory maps (one copy each), not a pipe.

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
import tempfile
import time
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


def _child_loop(conn: Connection, buf: mmap.mmap, inbuf: mmap.mmap, quiet: bool) -> None:
    for sig in (signal.SIGSEGV, signal.SIGBUS, signal.SIGFPE, signal.SIGCHLD):
        signal.signal(sig, signal.SIG_DFL)  # drop handlers inherited from torch's worker loop
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when we stop
    _set_pdeathsig()
    # FFmpeg's messages go to a scratch file: decord prints every open error (with the raw bytes) there, and
    # a decoder's line in it means frames it concealed (decord has no other signal; see codec.decoder_errors)
    log = tempfile.TemporaryFile()
    shown = None if quiet else os.dup(2)
    os.dup2(log.fileno(), 2)
    while True:
        try:
            msg = conn.recv_bytes()
        except (EOFError, OSError):
            return
        slot, capacity, plan, data = pickle.loads(msg)
        if isinstance(data, int):  # the clip's bytes are in the shared input buffer
            data = inbuf[:data]
        os.ftruncate(2, 0)
        os.lseek(2, 0, os.SEEK_SET)
        try:
            frames, info = codec.decode_clip(data, plan)
            frames = np.ascontiguousarray(frames)
            text = os.pread(2, 1 << 16, 0)
            if shown is not None and text:
                os.write(shown, text)
            damage = codec.decoder_errors(text) if plan.strict and info.get("decoder") == "decord" else None
            if damage is not None:
                reply = ("fail", codec.CORRUPT, f"decord: FFmpeg concealed damaged frames ({damage})")
            elif frames.nbytes > capacity:
                reply = ("grow", frames.nbytes)
            else:
                buf[slot * capacity: slot * capacity + frames.nbytes] = memoryview(frames).cast("B")
                reply = ("ok", frames.shape, info)
        except codec.DecodeFailure as e:
            reply = ("fail", e.reason, e.message)
        except Exception as e:  # anything else is a decode error of this sample, not of the child
            reply = ("fail", codec.DECODE_ERROR, f"{type(e).__name__}: {e}")
        conn.send_bytes(pickle.dumps(reply))


class DecodeSandbox:
    """A child process that decodes one clip at a time under a time limit (POSIX ``fork``).

    ``submit`` hands a clip to the child and returns at once; ``collect`` waits for it. The shared
    buffer has two slots, so the caller can convert the frames of clip *i* while the child decodes
    clip *i + 1*: with that overlap the sandbox costs no throughput.
    """

    def __init__(self, timeout_s: float, capacity: int = 8 << 20, quiet: bool = True,
                 in_capacity: int = 16 << 20) -> None:
        self.timeout_s = timeout_s
        self.capacity = capacity  # bytes per slot
        self.in_capacity = in_capacity  # clips up to this size go to the child through shared memory
        self.quiet = quiet
        self.pid: int | None = None
        self.conn: Connection | None = None
        self.restarts = 0
        self._slot = 1
        self._inflight: tuple | None = None  # (data, plan, slot, submit time)

    @staticmethod
    def available() -> bool:
        return hasattr(os, "fork") and sys.platform != "win32"

    def _start(self) -> None:
        self.buf = mmap.mmap(-1, 2 * self.capacity, flags=mmap.MAP_SHARED)
        self.inbuf = mmap.mmap(-1, self.in_capacity, flags=mmap.MAP_SHARED)
        parent_sock, child_sock = socket.socketpair()
        pid = os.fork()
        if pid == 0:  # child
            try:
                parent_sock.close()
                _child_loop(Connection(child_sock.detach()), self.buf, self.inbuf, self.quiet)
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
        self._inflight = None
        if self.pid is not None:
            self._stop(kill=True)

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    def _send(self) -> None:
        data, plan, slot, _ = self._inflight
        if self.pid is None:
            self._start()
        self._inflight = (data, plan, slot, time.monotonic())
        payload: bytes | int = data
        if len(data) <= self.in_capacity:  # one memcpy instead of a trip through the socket
            self.inbuf[:len(data)] = data
            payload = len(data)
        try:
            self.conn.send_bytes(pickle.dumps((slot, self.capacity, plan, payload), protocol=pickle.HIGHEST_PROTOCOL))
        except OSError:  # the child died since the last clip; collect() reports it
            pass

    def submit(self, data: bytes, plan: codec.ClipPlan) -> None:
        """Start decoding a clip in the child; one clip at a time (``collect`` it before the next)."""
        if self._inflight is not None:
            raise RuntimeError("DecodeSandbox.submit: collect() the previous clip first")
        self._slot ^= 1
        self._inflight = (data, plan, self._slot, 0.0)
        self._send()

    def collect(self, copy: bool = True) -> tuple[np.ndarray, dict]:
        """The submitted clip's frames and info, like :func:`codec.decode_clip`; a hang past ``timeout_s``
        or a crash raises ``DecodeFailure("decode_timeout" | "decode_crash")`` instead of stalling or
        killing the caller. With ``copy=False`` the frames view the shared buffer until the next-but-one clip.
        """
        if self._inflight is None:
            raise RuntimeError("DecodeSandbox.collect: nothing submitted")
        for _ in range(3):
            _, _, slot, t0 = self._inflight
            try:
                ready = self.conn.poll(max(0.0, self.timeout_s - (time.monotonic() - t0)))
                reply = pickle.loads(self.conn.recv_bytes()) if ready else None
            except (EOFError, OSError):
                self._inflight = None
                how = self._stop(kill=True)
                self.restarts += 1
                raise codec.DecodeFailure(CRASH, f"decoder process died ({how})") from None
            if reply is None:
                self._inflight = None
                self._stop(kill=True)
                self.restarts += 1
                raise codec.DecodeFailure(TIMEOUT, f"no result after {self.timeout_s:g} s; decoder killed")
            if reply[0] == "grow":  # the clip does not fit a slot: restart with room for it, decode again
                self._stop(kill=True)
                self.capacity = int(reply[1] * 1.25) + 4096
                self._send()
                continue
            self._inflight = None
            if reply[0] == "fail":
                raise codec.DecodeFailure(reply[1], reply[2])
            shape, info = reply[1], reply[2]
            frames = np.frombuffer(self.buf, dtype=np.uint8, count=int(np.prod(shape)),
                                   offset=slot * self.capacity).reshape(shape)
            return (frames.copy() if copy else frames), info
        self._inflight = None
        raise codec.DecodeFailure(codec.DECODE_ERROR, "decoded clip does not fit the shared buffer")

    def decode(self, data: bytes, plan: codec.ClipPlan, copy: bool = True) -> tuple[np.ndarray, dict]:
        """``submit`` + ``collect``: one clip, no overlap."""
        self.submit(data, plan)
        return self.collect(copy=copy)
