"""The child's end of a plug-in process (`popek.isolation`): `serve`
runs one plug-in's requests, each under the same `popek.session.Session`
as in-process, and answers each with its result or the error it met.

Before any plug-in code runs, the process arranges to die with its parent
(PR_SET_PDEATHSIG on Linux; EOF on the request pipe everywhere), ignores
SIGINT (the parent decides when it ends), limits its address space (a
plug-in that exhausts memory meets MemoryError, not the machine's OOM
killer), and tells the guard to contain everything a plug-in raises and to
announce each call to the parent's watchdog.
"""

from __future__ import annotations

import gc
import importlib
import os
import pickle
import signal
import sys
from typing import Any

from popek import guard, registry
from popek.plugin_channel import FRAME, Ref
from popek.spec import profiles as profile_table
from popek.vmm import VMM, GuestRefused

MEMORY_ENV = "POPEK_PLUGIN_MEMORY_MB"  # the plug-in process's address-space limit
DEFAULT_MEMORY_MB = 2048


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
        self.own_profiles = {p.name for p in profile_table.all_profiles()}  # before any plug-in code ran

    def send(self, msg: tuple) -> None:
        data = pickle.dumps(msg, protocol=pickle.HIGHEST_PROTOCOL)
        os.write(self.wfd, FRAME.pack(len(data)))
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
            return getattr(importlib.import_module(module), name)(cls, *args, **kw)
        raise ValueError(f"unknown request {op!r}")

    def do_import(self, spec: str, timeout: float | None) -> Any:
        self.spec = self.label = spec

        cls = guard.call(spec, "import", find_class, spec, timeout=timeout)
        if isinstance(cls, registry.PluginError):
            return str(cls)
        registered = [p for p in profile_table.all_profiles() if p.name not in self.own_profiles]
        self.cls = cls
        self.label = getattr(cls, "name", None) or spec
        self.finalizer = any("__del__" in vars(k) for k in cls.__mro__ if k not in (object, VMM))
        decl = {k: getattr(cls, k) for k in ("name", "summary", "supports", "capabilities") if hasattr(cls, k)}
        decl.update(__name__=cls.__name__, __qualname__=cls.__qualname__, __doc__=cls.__doc__,
                    __module__=cls.__module__)  # fmt: skip
        for k, v in decl.items():
            pickle.loads(pickle.dumps(v))  # what does not travel is reported as such, below
        decl["__profiles__"] = [_pickled_profile(p) for p in registered]  # its import registered these
        return decl

    def resolve(self, args: tuple) -> tuple:
        return tuple(self.refs[a.id] if isinstance(a, Ref) else a for a in args)

    def keep(self, value: Any) -> Any:
        if value is None or isinstance(value, (bool, int, float, str, range)):
            return value
        ref = Ref(len(self.refs) + 1)
        self.refs[ref.id] = value
        return ref


def _pickled_profile(profile: Any) -> tuple[str, bytes | None]:
    """A profile the plug-in registered, for the parent to know it too
    (None: it holds something that cannot travel, and stays known here only)."""
    try:
        return profile.name, pickle.dumps(profile, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:  # noqa: BLE001 - a profile's parts are the plug-in's to choose
        return profile.name, None


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
        head = inbox.read(FRAME.size)
        if not head or len(head) < FRAME.size:
            os._exit(0)
        size = FRAME.unpack(head)[0]
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


def find_class(spec: str) -> Any:
    """The class, or the `registry.PluginError` saying why not (returned,
    so that the guard does not take it for the plug-in's own failure)."""
    try:
        return registry.load(spec)
    except registry.PluginError as e:
        return e
