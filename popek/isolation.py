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

Here: which plug-ins are isolated, loading one (a stand-in class carrying
its declarations), one-request cases and `RemoteSession`.  The process's
two ends are `popek.plugin_channel` (parent) and `popek.plugin_process`
(child).  This contains failures; it is not a security sandbox (the child
runs as the same user, with the same files and network).
"""

from __future__ import annotations

import os
from typing import Any, Callable

from popek import guard, registry
from popek.plugin_channel import Channel, Ref, channel
from popek.plugin_process import MEMORY_ENV, find_class
from popek.session_errors import ContractBroken
from popek.spec import profiles as profile_table
from popek.spec.profiles import Profile
from popek.vmm import CAPABILITIES, VMM, GuestRefused

SHIPPED = "popek.model.vmms."  # module prefix of the designs popek ships: trusted, in-process
MODE_ENV = "POPEK_PLUGINS"  # "isolated" or "in-process" forces either mode for every plug-in

__all__ = [
    "load", "is_isolated", "isolated_by_default", "run_remote", "RemoteSession", "Channel", "Ref", "channel",
    "MODE_ENV", "MEMORY_ENV",
]  # fmt: skip


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
        found = guard.call(spec, "import", find_class, spec, timeout=timeout)
        if isinstance(found, registry.PluginError):
            raise found
        return found
    spec = target_of(spec)  # as this process resolves it: the child sees "module:Class" only
    ch = channel(spec)
    decl = ch.request(("import", timeout), method="import", limit=timeout)
    if isinstance(decl, str):
        raise registry.PluginError(decl)
    ch.label = decl.get("name") or spec  # errors name it as the session's do
    _register_plugin_profiles(spec, decl.pop("__profiles__", ()))
    attrs = dict(decl)
    attrs.update(popek_plugin_spec=spec, popek_remote_session=RemoteSession, __init__=_not_here, __module__=decl["__module__"])
    for cap in decl.get("capabilities", ()):  # the methods each declared capability promises
        attrs.update(dict.fromkeys(CAPABILITIES.get(cap, ()), _not_here))
    stand_in = type(decl["__name__"], (_StandIn,), attrs)
    return stand_in  # type: ignore[return-value]


def _register_plugin_profiles(spec: str, pickled: Any) -> None:
    """Profiles the plug-in's import registered (in its process) become known
    here too, as they would be had it been imported here, so that
    ``--profile`` may name them.  One built from parts outside popek cannot
    be rebuilt here without running the plug-in's code: it is named on
    stderr and stays unknown to this process."""
    import sys

    from popek.plugin_channel import loads_trusted

    for name, data in pickled:
        if name in {p.name for p in profile_table.all_profiles()}:
            continue
        try:
            profile_table.register(loads_trusted(data))
        except Exception as e:  # noqa: BLE001 - what the child sent is the plug-in's
            why = "holds parts that cannot be pickled" if data is None else f"{type(e).__name__}: {e}"
            print(f"popek: warning: plug-in {spec}: its profile {name!r} is known only in its own process ({why})",
                  file=sys.stderr)  # fmt: skip


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
        return (kind or ContractBroken)(f"VMM {self.label!r}: {message}")

    def load(self, image, *, memsize: int) -> None:
        self._op("load", image, memsize=memsize)

    def add_guest(self, image, *, memsize: int) -> Any:
        return self._op("add_guest", image, memsize=memsize)

    def select_guest(self, gid: Any) -> None:
        self._op("select_guest", gid)

    def guests(self) -> list:
        return self._op("guests")

    def sizes(self) -> tuple:
        return self._op("sizes")

    def take_sizes(self, sizes: tuple) -> None:
        self._op("take_sizes", sizes)

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

    @property
    def memsize(self) -> int | None:
        """The size of the guest the session checks `state()` against."""
        return self._op("memsize")

    @memsize.setter
    def memsize(self, value: int | None) -> None:
        # a guest placed by restore rather than load (`popek.fuzz.stateful`):
        # the session in the plug-in's process must know its size too
        self._op("set_memsize", value)

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
