"""The parent's end of a plug-in process (`popek.isolation`): starting
it, the messages to and from it, the watchdog, killing and reaping it.

Messages are length-prefixed pickles on two pipes of their own (the child's
stdout goes to popek's stderr, so a plug-in's prints cannot corrupt them).
The parent never unpickles a class from outside popek (`_Unpickler`): a
value only the plug-in's own code could rebuild stays in the child, and the
parent holds a `Ref` to it.
"""

from __future__ import annotations

import atexit
import io
import os
import pickle
import select
import signal
import struct
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

from popek import guard
from popek.session_errors import ContractBroken, PluginCrashed, UnsafeRun
from popek.vmm import GuestRefused

SLACK = 1.0  # seconds the watchdog adds to a call's wall-clock limit
START_LIMIT = 120.0  # seconds a new plug-in process may take to import popek and start
FRAME = struct.Struct("<I")  # each message: its length, then its pickle


class Lost(Exception):
    """The plug-in process died or overran its watchdog (parent side)."""


@dataclass(frozen=True)
class Ref:
    """A value that lives in the plug-in process (a snapshot, say)."""

    id: int


class _Unpickler(pickle.Unpickler):
    """Only popek's own and the standard library's classes come back."""

    def find_class(self, module: str, name: str) -> Any:
        if module == "builtins" or module == "collections" or module.startswith("popek."):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"{module}.{name}")


def _loads(data: bytes) -> Any:
    return _Unpickler(io.BytesIO(data)).load()


def loads_trusted(data: bytes | None) -> Any:
    """Unpickle what a plug-in's process sent, rebuilding only popek's own
    and the standard library's classes (`_Unpickler`)."""
    if data is None:
        raise pickle.UnpicklingError("nothing was sent")
    return _loads(data)


def _describe_death(code: int | None) -> str:
    if code is None:
        return "its process stopped answering"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        if -code == signal.SIGKILL:
            return f"its process was killed ({name}: it killed itself, or ran out of memory)"
        return f"its process was killed by {name}"
    return f"its process exited with status {code} (sys.exit or os._exit in plug-in code)"


class Channel:
    """One plug-in process, started when first needed and again after it dies."""

    def __init__(self, spec: str):
        self.spec = spec
        self.proc: subprocess.Popen | None = None
        self.rfd = self.wfd = -1
        self.generation = 0  # how many processes were started: sessions of a dead one are gone
        self.pending: Exception | None = None
        self.label = spec

    # -- process control ---------------------------------------------------------
    def _start(self) -> None:
        to_child_r, to_child_w = os.pipe()
        from_child_r, from_child_w = os.pipe()
        env = dict(os.environ)
        # the child imports what this process could: the same search path
        path = [os.getcwd() if p == "" else p for p in sys.path]
        env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(path))
        cmd = [sys.executable, "-c", "from popek.plugin_process import serve; serve()",
               str(to_child_r), str(from_child_w), str(os.getpid()), self.spec]  # fmt: skip
        try:
            out = sys.stderr.fileno()
        except (AttributeError, ValueError, io.UnsupportedOperation):
            out = subprocess.DEVNULL
        self.proc = subprocess.Popen(
            cmd, pass_fds=(to_child_r, from_child_w), stdin=subprocess.DEVNULL, stdout=out,
            start_new_session=True, env=env, close_fds=True,
        )  # fmt: skip
        os.close(to_child_r)
        os.close(from_child_w)
        self.rfd, self.wfd = from_child_r, to_child_w
        self.generation += 1
        _live.add(self)
        self._read(START_LIMIT, "start")  # ("ready",)

    def kill(self) -> None:
        """Kill the process (its whole group) and reap it."""
        proc = self.proc
        if proc is None:
            return
        self.proc = None
        _live.discard(self)
        for fd in (self.rfd, self.wfd):
            try:
                os.close(fd)
            except OSError:
                pass
        self.rfd = self.wfd = -1
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:  # pragma: no cover - an unkillable process
            pass

    # -- messages ------------------------------------------------------------------
    def _read_exact(self, n: int, deadline: float) -> bytes:
        chunks, got = [], 0
        while got < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            ready, _, _ = select.select([self.rfd], [], [], left)
            if not ready:
                raise TimeoutError
            data = os.read(self.rfd, n - got)
            if not data:
                raise EOFError
            chunks.append(data)
            got += len(data)
        return b"".join(chunks)

    def _read(self, limit: float, method: str) -> Any:
        """The next message, renewing the deadline at every call the child announces."""
        deadline = time.monotonic() + limit
        while True:
            try:
                size = FRAME.unpack(self._read_exact(FRAME.size, deadline))[0]
                msg = _loads(self._read_exact(size, deadline))
            except TimeoutError:
                self.kill()
                raise Lost(f"{method}() did not return within {limit:g} s (killed by popek's watchdog)") from None
            except EOFError:
                code = self.proc.poll() if self.proc else None
                if code is None and self.proc is not None:
                    try:
                        code = self.proc.wait(timeout=5)
                    except subprocess.TimeoutExpired:
                        code = None
                self.kill()
                raise Lost(f"{method}(): {_describe_death(code)}") from None
            except pickle.UnpicklingError as e:
                self.kill()
                raise Lost(f"{method}() returned an object popek cannot carry out of the plug-in's "
                           f"process ({e}): return popek or built-in types") from None  # fmt: skip
            if msg[0] == "call":  # the child is about to call plug-in code
                method, call_limit = msg[1], msg[2]
                limit = (call_limit or guard.DEFAULT_TIMEOUT) * guard.WALL_FACTOR + SLACK
                deadline = time.monotonic() + limit
                continue
            return msg

    def request(self, req: tuple, *, method: str, limit: float | None) -> Any:
        """Send ``req``; its result, or the child's error raised here (or
        one a session's close met, which no caller was there to see)."""
        if self.pending is not None:
            pending, self.pending = self.pending, None
            raise pending
        if self.proc is None:
            try:
                self._start()
            except Lost as e:
                raise _crash(self.label, str(e)) from None
        data = pickle.dumps(req, protocol=pickle.HIGHEST_PROTOCOL)
        try:
            os.write(self.wfd, FRAME.pack(len(data)))
            view = memoryview(data)
            while view:
                view = view[os.write(self.wfd, view):]
        except (BrokenPipeError, OSError):
            self.kill()
            raise _crash(self.label, f"{method}(): its process had died") from None
        try:
            msg = self._read((limit or guard.DEFAULT_TIMEOUT) * guard.WALL_FACTOR + SLACK, method)
        except Lost as e:
            raise _crash(self.label, str(e), method=method) from None
        except BaseException:  # interrupted here (Ctrl-C): the answer would come out of turn
            self.kill()
            raise
        tag = msg[0]
        if tag == "ok":
            return msg[1]
        if tag == "refused":
            raise GuestRefused(msg[1])
        if tag == "error":  # a SessionError in the child: the same error here
            kind = {"crash": PluginCrashed, "safety": UnsafeRun}.get(msg[1], ContractBroken)
            raise kind(msg[2], method=msg[3], detail=msg[4])
        raise _crash(self.label, f"{method}(): {msg[1]}", method=method)


def _crash(spec: str, what: str, method: str = "") -> Exception:
    return PluginCrashed(f"VMM {spec!r}: {what}", method=method)


_channels: dict[tuple[str, int], Channel] = {}
_live: set[Channel] = set()


def channel(spec: str) -> Channel:
    """The plug-in's process for this thread: requests on one pipe are
    answered in turn, so campaigns in threads side by side each have their
    own (and the parent-death signal follows the thread that started it)."""
    key = (spec, threading.get_ident())
    ch = _channels.get(key)
    if ch is None:
        ch = _channels[key] = Channel(spec)
    return ch


@atexit.register
def shutdown() -> None:
    """Kill and reap every plug-in process this process started."""
    for ch in list(_live):
        ch.kill()
