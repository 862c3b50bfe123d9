"""Plug-in code in a child process that popek can kill.

A plug-in popek loads by name and did not ship (anything outside
``popek.model.vmms``) runs in a *plug-in process*: its import, its
construction and every method.  In-process, the guard (`popek.guard`) can
bound a call only with signals, which the plug-in can swallow, ignore or
block, and nothing at all survives a plug-in that calls ``os._exit``, kills
its own process or exhausts memory.  A separate process can be killed and
its death seen, so every one of those becomes a `PluginCrashed` that names
the plug-in, the method and what happened, and the campaign goes on.

The cost is kept small by shape, not by cleverness:

* one persistent process per plug-in spec in each popek process (each
  campaign worker has its own), started on first use and started again
  after it dies;
* coarse requests: one round trip runs a whole fuzz case (`run_remote`
  with ``popek.fuzz.execute:run_vmm``) and returns its `Run`; commands that
  need each call (``popek run``, the conformance check, the stateful tests)
  get a `RemoteSession` that sends one request per session method;
* the child runs the same `popek.session.Session` as in-process (host,
  watch, canary, contract checks), so verdicts and determinism are the
  same; the parent adds only a watchdog, renewed at every plug-in call the
  child announces: the call's processor-time limit times the guard's wall
  factor, plus `SLACK`.

The parent never unpickles a class from outside popek (`_Unpickler`): a
value the plug-in returns that only its own code could rebuild (a
snapshot, a guest id object) stays in the child and the parent holds a
`Ref` to it.  This contains failures; it is not a security sandbox (the
child runs as the same user, with the same files and network).
"""

from __future__ import annotations

import atexit
import gc
import io
import os
import pickle
import select
import signal
import struct
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable

from popek import guard, registry
from popek.spec import profiles as profile_table
from popek.spec.profiles import Profile
from popek.vmm import CAPABILITIES, VMM, GuestRefused

SHIPPED = "popek.model.vmms."  # module prefix of the designs popek ships: trusted, in-process
MODE_ENV = "POPEK_PLUGINS"  # "isolated" or "in-process" forces either mode for every plug-in
MEMORY_ENV = "POPEK_PLUGIN_MEMORY_MB"  # the plug-in process's address-space limit
DEFAULT_MEMORY_MB = 2048
SLACK = 1.0  # seconds the watchdog adds to a call's wall-clock limit
START_LIMIT = 120.0  # seconds a new plug-in process may take to import popek and start

_HEADER = struct.Struct("<I")


class Lost(Exception):
    """The plug-in process died or overran its watchdog (parent side)."""


@dataclass(frozen=True)
class Ref:
    """A value that lives in the plug-in process (a snapshot, say)."""

    id: int


# --------------------------------------------------------------------------
# Choosing: which plug-ins are isolated
# --------------------------------------------------------------------------
def target_of(spec: str) -> str:
    return registry.known().get(spec, spec)


def isolated_by_default(spec: str) -> bool:
    """Isolated unless it is one of popek's shipped designs, or the user
    forced a mode with ``POPEK_PLUGINS``."""
    mode = os.environ.get(MODE_ENV, "").strip().lower()
    if mode in ("isolated", "isolate", "child"):
        return True
    if mode in ("in-process", "inprocess", "trusted"):
        return False
    return not target_of(spec).startswith(SHIPPED)


def is_isolated(cls: Any) -> bool:
    return isinstance(getattr(cls, "popek_plugin_spec", None), str)


def load(spec: str, *, timeout: float | None = guard.DEFAULT_TIMEOUT, isolate: bool | None = None) -> type[VMM]:
    """The class ``spec`` names: the real class for a trusted design, or
    for an isolated plug-in a stand-in class carrying its declarations
    (imported in its own process).  `registry.PluginError` for a class
    that cannot be found or does not declare what it must; `PluginCrashed`
    for an import that crashed its process."""
    if not (isolated_by_default(spec) if isolate is None else isolate):
        found = guard.call(spec, "import", _find, spec, timeout=timeout)
        if isinstance(found, registry.PluginError):
            raise found
        return found
    ch = channel(spec)
    decl = ch.request(("import", timeout), method="import", limit=timeout)
    if isinstance(decl, str):
        raise registry.PluginError(decl)
    ch.label = decl.get("name") or spec  # errors name it as the session's do
    attrs = dict(decl)
    attrs.update(popek_plugin_spec=spec, __init__=_not_here, __module__=decl["__module__"])
    for cap in decl.get("capabilities", ()):  # the methods each declared capability promises
        attrs.update(dict.fromkeys(CAPABILITIES.get(cap, ()), _not_here))
    stand_in = type(decl["__name__"], (_StandIn,), attrs)
    return stand_in  # type: ignore[return-value]


def _find(spec: str) -> Any:
    """The class, or the `registry.PluginError` saying why not (returned,
    so that the guard does not take it for the plug-in's own failure)."""
    try:
        return registry.load(spec)
    except registry.PluginError as e:
        return e


def _not_here(self: Any, *args: Any, **kw: Any) -> None:
    raise TypeError("an isolated plug-in is built in its own process: open a popek.session.Session")


class _StandIn(VMM):
    """Base of the stand-in classes: the contract's methods exist (they are
    never called here) so that the class passes `registry.validate_class`."""

    def load(self, image, *, memsize):  # type: ignore[override]
        raise TypeError

    def run(self, steps):  # type: ignore[override]
        raise TypeError

    def guest_state(self):  # type: ignore[override]
        raise TypeError

    def counters(self):  # type: ignore[override]
        raise TypeError

    def allocation(self):  # type: ignore[override]
        raise TypeError


# --------------------------------------------------------------------------
# The parent's end of the pipe
# --------------------------------------------------------------------------
class _Unpickler(pickle.Unpickler):
    """Only popek's own and the standard library's classes come back."""

    def find_class(self, module: str, name: str) -> Any:
        if module == "builtins" or module == "collections" or module.startswith("popek."):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"{module}.{name}")


def _loads(data: bytes) -> Any:
    return _Unpickler(io.BytesIO(data)).load()


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
        cmd = [sys.executable, "-c", "from popek.isolation import serve; serve()",
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
                size = _HEADER.unpack(self._read_exact(_HEADER.size, deadline))[0]
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
            os.write(self.wfd, _HEADER.pack(len(data)))
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
            from popek import session

            kind = {"crash": session.PluginCrashed, "safety": session.UnsafeRun}.get(msg[1], session.ContractBroken)
            raise kind(msg[2], method=msg[3], detail=msg[4])
        raise _crash(self.label, f"{method}(): {msg[1]}", method=method)


def _crash(spec: str, what: str, method: str = "") -> Exception:
    from popek import session

    return session.PluginCrashed(f"VMM {spec!r}: {what}", method=method)


_channels: dict[str, Channel] = {}
_live: set[Channel] = set()


def channel(spec: str) -> Channel:
    ch = _channels.get(spec)
    if ch is None:
        ch = _channels[spec] = Channel(spec)
    return ch


@atexit.register
def shutdown() -> None:
    """Kill and reap every plug-in process this process started."""
    for ch in list(_live):
        ch.kill()


def run_remote(cls: type[VMM], function: str, *args: Any, timeout: float | None, **kw: Any) -> Any:
    """``function(real_class, *args, **kw)`` in the plug-in's process, in one
    round trip (``function`` is "module:name" in popek).  Session errors
    come back as the same errors."""
    return channel(cls.popek_plugin_spec).request(  # type: ignore[attr-defined]
        ("apply", function, args, kw), method="run a case", limit=timeout
    )


# --------------------------------------------------------------------------
# A session whose plug-in lives in the child
# --------------------------------------------------------------------------
class _RemoteMethod:
    def __init__(self, name: str):
        self.name = name


class _RemoteVMM:
    """``session.vmm`` of a remote session: methods to pass to `RemoteSession.call`."""

    def __getattr__(self, name: str) -> _RemoteMethod:
        if name.startswith("__"):
            raise AttributeError(name)
        return _RemoteMethod(name)


class RemoteSession:
    """The `popek.session.Session` API, each method one request to the
    plug-in's process, where a real session runs."""

    def __init__(self, vmm_cls: type[VMM], profile: Profile, *, label: str | None = None,
                 timeout: float | None = guard.DEFAULT_TIMEOUT, **kw: Any):  # fmt: skip
        self.cls, self.profile, self.timeout = vmm_cls, profile, timeout
        self.label = label or vmm_cls.name
        self.vmm = _RemoteVMM()
        self._ch = channel(vmm_cls.popek_plugin_spec)  # type: ignore[attr-defined]
        self._sid: int | None = None
        self._generation = -1
        sid = id(self)
        self._request(("open", sid, _profile_ref(profile), dict(label=self.label, timeout=timeout, **kw)), "__init__")
        self._sid, self._generation = sid, self._ch.generation

    def _request(self, req: tuple, method: str) -> Any:
        return self._ch.request(req, method=method, limit=self.timeout)

    def _op(self, name: str, *args: Any, **kw: Any) -> Any:
        return self._request(("op", self._sid, name, args, kw), name)

    def call(self, method: str, fn: Callable, *args: Any, returns: Any = None, **kw: Any) -> Any:
        if isinstance(fn, _RemoteMethod):
            return self._request(("vmmcall", self._sid, method, fn.name, args, kw), method)
        return guard.call(self.label, method, fn, *args, timeout=self.timeout, returns=returns, **kw)

    def fail(self, message: str, kind: type | None = None) -> Exception:
        from popek import session

        return (kind or session.ContractBroken)(f"VMM {self.label!r}: {message}")

    def load(self, image, *, memsize: int) -> None:
        self._op("load", image, memsize=memsize)

    def add_guest(self, image, *, memsize: int) -> Any:
        return self._op("add_guest", image, memsize=memsize)

    def select_guest(self, gid: Any) -> None:
        self._op("select_guest", gid)

    def guests(self) -> list:
        return self._op("guests")

    def run(self, steps: int):
        return self._op("run", steps)

    def state(self):
        return self._op("state")

    def counters(self, *, totals: bool = True):
        return self._op("counters", totals=totals)

    def allocation(self) -> range:
        return self._op("allocation")

    def reserved(self) -> list[range]:
        return self._op("reserved")

    def safety_problems(self) -> list[str]:
        return self._op("safety_problems")

    @property
    def observed(self):
        return self._op("observed")

    @property
    def steps(self) -> int:
        return self._op("steps")

    def close(self, *, quiet: bool = False) -> None:
        """End the session in the child.  What closing met (a finalizer
        that raised) is raised here; with ``quiet`` (an error is already on
        its way) the next request to this plug-in raises it instead."""
        sid, self._sid = self._sid, None
        if sid is None or self._ch.proc is None or self._ch.generation != self._generation:
            return  # never opened, or its process is gone
        try:
            self._request(("close", sid), "close")
        except GuestRefused:
            pass
        except Exception as e:  # noqa: BLE001 - closing must not hide what went wrong before
            if not quiet:
                raise
            self._ch.pending = e

    def __enter__(self) -> "RemoteSession":
        return self

    def __exit__(self, kind: Any, *exc: Any) -> None:
        self.close(quiet=kind is not None)


def _profile_ref(profile: Profile) -> Any:
    try:
        if profile_table.get(profile.name) is profile:
            return profile.name
    except Exception:  # noqa: BLE001 - an unregistered profile travels whole
        pass
    return profile


# --------------------------------------------------------------------------
# The child's end: `serve`
# --------------------------------------------------------------------------
def _die_with_parent(parent: int) -> None:
    """Linux: be killed when the parent dies (PR_SET_PDEATHSIG); and if it
    died already, go.  Elsewhere, EOF on the request pipe ends the loop."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:
        os._exit(0)


def _limit_memory() -> None:
    try:
        import resource

        mb = int(os.environ.get(MEMORY_ENV, DEFAULT_MEMORY_MB))
        if mb > 0:
            resource.setrlimit(resource.RLIMIT_AS, (mb << 20, mb << 20))
    except (ImportError, ValueError, OSError):
        pass


class _Server:
    """Runs requests for one plug-in spec in the child."""

    def __init__(self, wfd: int):
        self.wfd = wfd
        self.cls: type[VMM] | None = None
        self.spec = self.label = ""
        self.sessions: dict[int, Any] = {}
        self.refs: dict[int, Any] = {}
        self.finalizer = False
        self.unraisable: list[str] = []

    def send(self, msg: tuple) -> None:
        data = pickle.dumps(msg, protocol=pickle.HIGHEST_PROTOCOL)
        os.write(self.wfd, _HEADER.pack(len(data)))
        view = memoryview(data)
        while view:
            view = view[os.write(self.wfd, view):]

    def announce(self, method: str, limit: float | None) -> None:
        self.send(("call", method, limit))

    def on_unraisable(self, u: Any) -> None:
        what = f"{type(u.exc_value).__name__}: {guard.text_of(u.exc_value)}" if u.exc_value else "an error"
        where = getattr(u.object, "__qualname__", type(u.object).__name__)
        self.unraisable.append(f"an exception in a finalizer ({what}, in {where})")

    # -- requests ---------------------------------------------------------------
    def handle(self, req: tuple, spec: str) -> Any:
        from popek.session import Session

        op = req[0]
        if op == "import":
            return self.do_import(spec, req[1])
        cls = self.cls
        if cls is None:  # a process started again after the last one died
            problem = self.do_import(spec, None)
            if isinstance(problem, str):
                raise ValueError(problem)
            cls = self.cls
        if op == "open":
            _, sid, prof, kw = req
            prof = profile_table.get(prof) if isinstance(prof, str) else prof
            self.sessions[sid] = Session(cls, prof, **kw)
            return None
        if op == "close":
            s = self.sessions.pop(req[1], None)
            if s is not None:
                s.close()
            return None
        if op == "op":
            _, sid, name, args, kw = req
            s = self.sessions[sid]
            value = getattr(s, name)
            return value(*self.resolve(args), **kw) if callable(value) else value
        if op == "vmmcall":
            _, sid, method, name, args, kw = req
            s = self.sessions[sid]
            fn = getattr(s.vmm, name, None)
            if fn is None:
                raise s.fail(f"has no method {name}()")
            return self.keep(s.call(method, fn, *self.resolve(args), **kw))
        if op == "apply":
            _, function, args, kw = req
            module, _, name = function.partition(":")
            if not module.startswith("popek."):
                raise ValueError(f"not a popek function: {function}")
            import importlib

            return getattr(importlib.import_module(module), name)(cls, *args, **kw)
        raise ValueError(f"unknown request {op!r}")

    def do_import(self, spec: str, timeout: float | None) -> Any:
        self.spec = self.label = spec

        cls = guard.call(spec, "import", _find, spec, timeout=timeout)
        if isinstance(cls, registry.PluginError):
            return str(cls)
        self.cls = cls
        self.label = getattr(cls, "name", None) or spec
        self.finalizer = any("__del__" in vars(k) for k in cls.__mro__ if k not in (object, VMM))
        decl = {k: getattr(cls, k) for k in ("name", "summary", "supports", "capabilities") if hasattr(cls, k)}
        decl.update(__name__=cls.__name__, __qualname__=cls.__qualname__, __doc__=cls.__doc__,
                    __module__=cls.__module__)  # fmt: skip
        for k, v in decl.items():
            pickle.loads(pickle.dumps(v))  # what does not travel is reported as such, below
        return decl

    def resolve(self, args: tuple) -> tuple:
        return tuple(self.refs[a.id] if isinstance(a, Ref) else a for a in args)

    def keep(self, value: Any) -> Any:
        if value is None or isinstance(value, (bool, int, float, str, range)):
            return value
        ref = Ref(len(self.refs) + 1)
        self.refs[ref.id] = value
        return ref


def serve() -> None:
    """The plug-in process's loop: one request in, one answer out, until the
    parent closes the pipe."""
    rfd, wfd, parent = (int(a) for a in sys.argv[1:4])
    spec = sys.argv[4]
    _die_with_parent(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when this process ends
    _limit_memory()
    server = _Server(wfd)
    guard.contain_all = True
    guard.on_call = server.announce
    sys.unraisablehook = server.on_unraisable
    from popek.session import SessionError  # imported before any plug-in code runs

    server.send(("ready",))
    inbox = os.fdopen(rfd, "rb", buffering=0)
    while True:
        head = inbox.read(_HEADER.size)
        if not head or len(head) < _HEADER.size:
            os._exit(0)
        size = _HEADER.unpack(head)[0]
        data = b""
        while len(data) < size:
            more = inbox.read(size - len(data))
            if not more:
                os._exit(0)
            data += more
        req = pickle.loads(data)
        try:
            result = ("ok", server.handle(req, spec))
            if server.finalizer:
                gc.collect()
            if server.unraisable:
                what, server.unraisable[:] = server.unraisable[0], []
                result = ("error", "crash", f"VMM {server.label!r}: {what}", "__del__", "")
        except GuestRefused as e:
            result = ("refused", guard.text_of(e))
        except SessionError as e:
            result = ("error", e.kind, str(e), e.method, e.detail)
        except guard.PluginFailure as e:
            result = ("error", "crash", str(e), e.method, e.detail)
        except MemoryError:
            result = ("failed", "ran out of memory in its process")
        except BaseException as e:  # noqa: BLE001 - plug-in code reached outside a guarded call
            result = ("failed", f"raised {type(e).__name__}: {guard.text_of(e)}")
        try:
            server.send(result)
        except (pickle.PicklingError, TypeError, AttributeError) as e:
            server.send(("failed", f"returned a value that cannot leave its process ({type(e).__name__}: "
                                   f"{guard.text_of(e)})"))  # fmt: skip

