"""A guarded VMM session: the one place popek runs plug-in code.

Every caller that runs a VMM (``popek run --vmm``, the conformance check,
the fuzzing harness, the stateful tests, the culprit search) opens a
`Session`.  The session

* builds the host machine the plug-in is given (optionally over storage
  filled with a canary, lent from case to case: see `_Storage`);
* makes every call into the plug-in through `popek.guard.call`, so that a
  plug-in that raises, loops or returns the wrong type becomes an error
  naming it, never a traceback;
* checks the contract of `popek.vmm` once, here: the types of what the
  plug-in returns, ``run(n)`` running at most ``n`` steps, a guest state of
  the size the guest was given, counters that add up to the steps run;
* observes what popek can see for itself, whatever the plug-in says about
  itself (`Observed`): how many steps the host machine ran, which guest
  instructions it retired directly (its own performance counters), real
  resources changed by guest code rather than by the VMM, and host words
  that guest code running on the host could reach outside its allocation.

Every failure is a `SessionError` whose ``kind`` is the requirement it
breaks (``crash``, ``contract`` or ``safety``); callers only translate it
into their own report (a `popek.cli.UserError`, a conformance failure, a
fuzzing `Problem`).  A `GuestRefused` from ``load()`` passes through: it
is the plug-in's declared answer, not a failure.
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from operator import itemgetter
from typing import Any, Callable

from popek import guard
from popek.session_errors import ContractBroken, PluginCrashed, SessionError, UnsafeRun
from popek.model.machine import Machine, RunResult
from popek.spec import state as st
from popek.spec.image import Image
from popek.spec.profiles import Profile
from popek.vmm import VMM, Counters, GuestRefused, GuestRun, GuestState

__all__ = [
    "Session", "Observed", "SessionError", "PluginCrashed", "ContractBroken", "UnsafeRun",
    "GuestRefused",
]  # fmt: skip

# The real resources only the VMM may change (guest code running on the host must not).
WATCHED = (st.MODE, st.BASE, st.BOUND, st.PTBR, st.IE)
_watched_slots = itemgetter(*WATCHED)


# --------------------------------------------------------------------------
# What popek observes on the host
# --------------------------------------------------------------------------
@dataclass
class Observed:
    """What the host machine itself recorded while the VMM ran the guest."""

    host_steps: int = 0  # every step the host machine took
    # instruction name -> times the host retired it: a guest instruction
    # executed by the hardware with no VMM code in between
    direct: Counter = field(default_factory=Counter)
    violations: list[str] = field(default_factory=list)  # safety, as observed
    # traps the host took while in vtx guest mode: the hardware may deliver
    # those inside the guest, with no VMM code, so they may count as direct
    guest_mode_traps: int = 0

    @property
    def retired(self) -> int:
        return sum(self.direct.values())

    @property
    def direct_ceiling(self) -> int:
        """The most guest steps that can have run with no VMM code between:
        instructions the host retired, and traps taken in guest mode."""
        return self.retired + self.guest_mode_traps


class _HostWatch:
    """Wraps ``host.run`` so that every stretch of guest code on the host is
    seen: its steps are counted (the host's own census), the real resources
    are compared before and after (only the VMM may change them), and the
    host words the stretch could reach are checked against the allocation.

    A stretch ends at a trap (the VMM's hook) or when ``host.run`` returns;
    that is where it is checked, with the real state it ran under."""

    MAX_VIOLATIONS = 3

    def __init__(self, host: Machine, observed: Observed, allowed: Callable[[], range | None]):
        self.host, self.observed, self.allowed = host, observed, allowed
        self._run = host.run
        self._vtx = host.arch.vtx
        self._reach_cache: dict[tuple, tuple[list[int], int | None]] = {}
        host.run = self.run  # type: ignore[method-assign]

    # -- real resources ------------------------------------------------------
    def _snap(self) -> tuple[int, ...]:
        S = self.host.S
        if self._vtx and S[st.GUEST]:  # the host's own resources wait in the VMCS
            from popek.spec.vtx import host_state

            saved = host_state(S, self.host.M)
            return tuple(saved.get(i, S[i]) for i in WATCHED)
        return _watched_slots(S)

    def _violation(self, text: str) -> None:
        if len(self.observed.violations) < self.MAX_VIOLATIONS and text not in self.observed.violations:
            self.observed.violations.append(text)

    def _compare(self, before: tuple[int, ...], where: str | Callable[[], str]) -> None:
        after = self._snap()
        if after != before:
            where = where if isinstance(where, str) else where()
            changed = ", ".join(
                f"{st.FIELD_NAMES[slot]} {a}->{b}" for slot, a, b in zip(WATCHED, before, after) if a != b
            )
            self._violation(f"real {changed} changed by guest code, not by the VMM ({where})")

    # -- what guest code on the host could reach --------------------------------
    def _check_reach(self) -> None:
        """The first host word the stretch that just ended could address
        outside the allocation, if any, as a violation.  Guest code running
        in real user mode reaches what the real R (and the real page table,
        if paging is on) maps; in vtx guest mode, what the nested table maps
        (the guest sets its own R and tables there).  Host supervisor code
        outside guest mode is the VMM's own (a ``vmrun`` stub); guest code
        that got there is caught by the resource watch."""
        alloc = self.allowed()
        if alloc is None:
            return
        S, M, arch = self.host.S, self.host.M, self.host.arch
        guest_mode = self._vtx and S[st.GUEST]
        if guest_mode and S[st.NPTBR]:
            nptbr = S[st.NPTBR]
            n = len(M) >> arch.page_bits
            bad = self._mapped(("npt", nptbr), M, nptbr, range(n), alloc, user=False)
            if bad is not None:
                self._outside(bad, alloc, f"nested page table at {nptbr:#06x}")
            return
        # Without a nested table, a guest-mode guest is confined by what its
        # exits let the VMM compose, as a user-mode guest is by the real R:
        # either way the R and table it ran under are what it could reach.
        user = S[st.MODE] == st.USER
        if not (user or guest_mode):
            return
        base, bound, ptbr = S[st.BASE], S[st.BOUND], S[st.PTBR]
        end = min(base + bound, len(M))
        if base >= end:
            return  # nothing addressable
        if not ptbr:
            if base < alloc.start or end > alloc.stop:
                first = base if base < alloc.start else alloc.stop
                self._outside(first, alloc, f"real R = ({base:#06x}, {bound:#06x})")
            return
        pb = arch.page_bits
        pages = range(base >> pb, ((end - 1) >> pb) + 1)
        bad = self._mapped(("pt", ptbr, base, bound, user), M, ptbr, pages, alloc, user=user)
        if bad is not None:
            self._outside(bad, alloc, f"real R = ({base:#06x}, {bound:#06x}), real page table at {ptbr:#06x}")

    def _mapped(self, key, M, table, pages: range, alloc: range, *, user: bool) -> int | None:
        """The first host word outside ``alloc`` that a present entry (user
        entry, if ``user``) among ``pages`` of the table at ``table`` maps.
        Cached on the table's words: VMMs enter the host over the same
        table many times."""
        mask, size = self.host.arch.mask, len(M)
        first = (table + pages.start) & mask
        words = M[first : first + len(pages)] if first + len(pages) <= size else None
        hit = self._reach_cache.get(key)
        if words is not None and hit is not None and hit[0] == words:
            return hit[1]
        psize = self.host.arch.page_size
        want = st.PTE_PRESENT | (st.PTE_USER if user else 0)
        bad = None
        for p in pages:
            e = M[(table + p) & mask]
            if e & want == want:
                frame = e & ~(psize - 1) & mask
                if frame + psize > size and not user:
                    continue  # storage that does not exist counts as not present (nested)
                if frame < alloc.start or frame + psize > alloc.stop:
                    bad = frame if frame < alloc.start or frame >= alloc.stop else alloc.stop
                    break
        if words is not None:
            if len(self._reach_cache) > 64:
                self._reach_cache.clear()
            self._reach_cache[key] = (words, bad)
        return bad

    def _outside(self, word: int, alloc: range, how: str) -> None:
        self._violation(
            f"guest code on the host could reach host word {word:#06x}, outside its allocation "
            f"[{alloc.start:#x}, {alloc.stop:#x}) ({how})"
        )

    # -- the wrapped run --------------------------------------------------------
    def run(self, max_steps: int, on_trap: Callable | None = None, *, compiled: bool = True) -> RunResult:
        host = self.host
        census: Counter = Counter()
        host.census = census
        try:
            if on_trap is None:
                before = self._snap()
                result = self._run(max_steps, None, compiled=compiled)
            else:
                state = {"before": self._snap()}

                def hook(machine: Machine, cause: int, info: int):
                    if self._vtx and machine.S[st.GUEST]:
                        self.observed.guest_mode_traps += 1
                    self._check_reach()
                    self._compare(state["before"], lambda: f"before a {st.Cause(cause).name.lower()} trap")
                    stop = on_trap(machine, cause, info)
                    state["before"] = self._snap()
                    return stop

                result = self._run(max_steps, hook, compiled=compiled)
                before = state["before"]
            self._check_reach()
            self._compare(before, "when host.run returned")
        finally:
            host.census = None
            self._count(census)
        return result

    def _count(self, census: Counter) -> None:
        obs = self.observed
        direct = obs.direct
        for (name, _mode, trapped), n in census.items():
            obs.host_steps += n
            if not trapped:
                direct[name] += n


# --------------------------------------------------------------------------
# Host storage, lent from session to session
# --------------------------------------------------------------------------
@lru_cache(maxsize=8)
def canary(size: int, mask: int) -> list[int]:
    """A pattern no plausible guest write reproduces by accident."""
    return [(0xA5A5 ^ (a * 0x9E37)) & mask for a in range(size)]


@lru_cache(maxsize=8)
def _zeros(size: int) -> list[int]:
    return [0] * size


@lru_cache(maxsize=8)
def _sink(size: int) -> list[int]:
    """Storage for hosts whose session is over: never read."""
    return [0] * size


_lent = threading.local()


def _borrow(fill: list[int]) -> list[int]:
    """Host storage holding ``fill``.  The list a session gave back is lent
    again: a fresh 2**word-word list per case cost more than copying it,
    because the garbage collector traversed its slots at every young
    collection while it was new.  It is compared whole with ``fill`` before
    it is lent, so a plug-in that wrote into it after its session ended
    cannot reach the next one."""
    free: dict = _lent.__dict__.setdefault("free", {})
    storage = free.pop(id(fill), None)
    if storage is None or storage != fill:
        storage = list(fill)
    return storage


def _give_back(storage: list[int], fill: list[int]) -> None:
    if storage != fill:
        storage[:] = fill
    _lent.__dict__.setdefault("free", {})[id(fill)] = storage


def first_change(M: list[int], fill: list[int], kept: list[range]) -> int | None:
    """The first host word outside every ``kept`` range that no longer holds
    ``fill``, or None.  The kept ranges are set back to ``fill`` first, so
    storage is compared in one pass with no copy (the caller is done with
    ``M``)."""
    size = len(M)
    for r in kept:
        if r.step < 0:
            r = r[::-1]  # the same words, counted upwards
        a = r.start if r.start >= 0 else r.start + -(r.start // r.step) * r.step  # first word >= 0
        b = min(size, r.stop)
        if a < b:  # only the words the range holds: a step leaves the words between checked
            M[a : b : r.step] = fill[a : b : r.step]
    if M == fill:
        return None
    return next(a for a in range(size) if M[a] != fill[a])


# --------------------------------------------------------------------------
# The session
# --------------------------------------------------------------------------
class Session:
    """One VMM instance on one fresh host, every call guarded and checked.

    ``watch``: observe the host (`Observed`), the real resources and what
    guest code can reach; ``canary``: fill host storage with a canary first,
    so that `safety_problems` can see writes outside the allocation.  Use as
    a context manager (or call `close`): the host's storage is lent.

    For a plug-in loaded isolated (`popek.isolation.load`), the session is a
    `popek.isolation.RemoteSession` with the same methods: the real one runs
    in the plug-in's own process."""

    def __new__(cls, vmm_cls: type[VMM], profile: Profile, **kw: Any) -> Any:
        # an isolated plug-in's stand-in class names the session that runs it
        # in its own process (`popek.isolation.RemoteSession`)
        remote = getattr(vmm_cls, "popek_remote_session", None)
        if cls is Session and remote is not None:
            return remote(vmm_cls, profile, **kw)
        return super().__new__(cls)

    def __init__(
        self,
        vmm_cls: type[VMM],
        profile: Profile,
        *,
        label: str | None = None,
        timeout: float | None = guard.DEFAULT_TIMEOUT,
        watch: bool = True,
        canary: bool = False,
        hot: int | None = None,
    ):
        self.cls, self.profile, self.timeout = vmm_cls, profile, timeout
        self.label = label or getattr(vmm_cls, "name", None) or getattr(vmm_cls, "__name__", repr(vmm_cls))
        size = 1 << profile.arch.word
        self._fill = globals()["canary"](size, profile.arch.mask) if canary else _zeros(size)
        self._storage = _borrow(self._fill)
        self.host = Machine(profile, size, storage=self._storage)
        if hot is not None:
            self.host.hot = hot
        self.observed = Observed()
        self.steps = 0  # guest steps run() reported, in all
        self.memsize: int | None = None
        self._first_memsize: int | None = None
        self._memsizes: dict[Any, int] = {}
        self._alloc: range | None = None
        self._watch = _HostWatch(self.host, self.observed, lambda: self._alloc) if watch else None
        self._canary = canary
        try:
            self.vmm: VMM = self.call("__init__", vmm_cls, self.host, returns=VMM)
            self.storage_intact("__init__")
        except BaseException:
            self.close()
            raise

    # -- calls --------------------------------------------------------------------
    def call(self, method: str, fn: Callable, *args: Any, returns: Any = None, **kw: Any) -> Any:
        """``fn(*args, **kw)`` made through the guard; for a capability's
        methods (snapshot, restore, add_guest, ...) as for the contract's."""
        try:
            return guard.call(self.label, method, fn, *args, timeout=self.timeout, returns=returns, **kw)
        except guard.PluginFailure as e:
            raise PluginCrashed(str(e), method=method, detail=e.detail) from None

    def fail(self, message: str, kind: type[SessionError] = ContractBroken) -> SessionError:
        return kind(f"VMM {self.label!r}: {message}")

    def load(self, image: Image, *, memsize: int) -> None:
        """Place the guest; `GuestRefused` passes through (a declared answer).
        With the watch on, the allocation is asked for at once: what guest
        code may reach is judged against it from the first run.  (With
        several guests, each has its own allocation: sessions that add
        guests run without the watch until it follows the selected one.)"""
        self.call("load", self.vmm.load, image, memsize=memsize)
        self.storage_intact("load")
        self.memsize = self._first_memsize = memsize
        self._memsizes = {}
        if self._watch is not None:
            self._alloc = self.allocation()

    def set_memsize(self, memsize: int | None) -> None:
        """A guest placed by ``restore`` (not ``load``) has ``memsize`` words:
        what `state` checks the storage it reports against."""
        self.memsize = memsize

    # -- the multi-guest capability: the session knows each guest's size -------
    def add_guest(self, image: Image, *, memsize: int) -> Any:
        gid = self.call("add_guest", self.vmm.add_guest, image, memsize=memsize)
        self._memsizes[gid] = memsize
        return gid

    def select_guest(self, gid: Any) -> None:
        self.call("select_guest", self.vmm.select_guest, gid)
        first = self.memsize if self._first_memsize is None else self._first_memsize
        self._first_memsize = first
        self.memsize = self._memsizes.get(gid, first)

    def guests(self) -> list:
        return list(self.call("guests", self.vmm.guests, returns=(list, tuple)))

    def sizes(self) -> tuple[int | None, int | None, dict[Any, int]]:
        """What the session knows of its guests' sizes (the selected one's,
        the first one's, each added one's).  A session that goes on from
        another one (a fresh instance restored from its snapshot, or the
        target of a migration) never saw the guests placed: it takes these
        over with `take_sizes`."""
        return self.memsize, self._first_memsize, dict(self._memsizes)

    def take_sizes(self, sizes: tuple[int | None, int | None, dict[Any, int]]) -> None:
        self.memsize, self._first_memsize, memsizes = sizes
        self._memsizes = dict(memsizes)

    def storage_intact(self, method: str) -> None:
        """The host's storage is still the list popek lent it, of its size.
        A plug-in that swaps ``host.M`` for a list of its own (or grows or
        shrinks it) puts guest code beyond every check popek makes of host
        storage (the canary, the reach check): a contract failure, seen at
        once rather than never."""
        M = self.host.M
        if M is not self._storage:
            raise self.fail(f"{method}() replaced the host's storage object (host.M): popek lends it and "
                            "checks it; write host storage in place (host.write)")  # fmt: skip
        if len(M) != len(self._fill):
            raise self.fail(f"{method}() changed the size of host storage: {len(self._fill)} -> {len(M)} words")

    def run(self, steps: int) -> GuestRun:
        r = self.call("run", self.vmm.run, steps, returns=GuestRun)
        self.storage_intact("run")
        if not isinstance(r.steps, int) or not isinstance(r.halted, bool):
            raise self.fail(f"run({steps}) returned {r!r}: steps must be int, halted bool")
        if not 0 <= r.steps <= steps:
            raise self.fail(
                f"run({steps}) reports {r.steps} guest steps: the VMM did not stop within its bound",
                UnsafeRun,
            )
        self.steps += r.steps
        return r

    def state(self) -> GuestState:
        s = self.call("guest_state", self.vmm.guest_state, returns=GuestState)
        self.storage_intact("guest_state")
        try:
            s.validate()
        except TypeError as e:
            raise self.fail(f"guest_state(): {e}") from None
        if self.memsize is not None and len(s.memory) != self.memsize:
            raise self.fail(
                f"guest_state() has {len(s.memory)} words of storage, the guest was given {self.memsize}"
            )
        return s

    def counters(self, *, totals: bool = True) -> Counters:
        """The plug-in's counters, checked against what the host itself
        retired (with the watch on) and, with ``totals``, against the steps
        run() reported (a caller that checks the sum run by run, to say
        where it broke, passes False)."""
        c = self.call("counters", self.vmm.counters, returns=Counters)
        try:
            c.validate()
        except TypeError as e:
            raise self.fail(f"counters(): {e}") from None
        if totals and c.guest_steps != self.steps:
            raise self.fail(
                f"counters say direct {c.direct} + emulated {c.emulated} = {c.guest_steps} "
                f"guest steps, but run() reported {self.steps}"
            )
        # efficiency rests on this count: no guest step ran directly but as
        # an instruction the host retired (or a trap it took in vtx guest
        # mode, which the hardware may deliver inside the guest)
        ceiling = self.observed.direct_ceiling
        if self._watch is not None and c.direct > ceiling:
            raise self.fail(
                f"counters() say {c.direct} guest steps ran directly, but the host machine "
                f"retired only {ceiling} (instructions, and traps in guest mode)"
            )
        return c

    def allocation(self) -> range:
        alloc = self.call("allocation", self.vmm.allocation, returns=range)
        size = len(self.host.M)
        if alloc.step != 1 or alloc.start < 0 or alloc.stop > size:
            raise self.fail(f"allocation() is {alloc!r}: must be consecutive host words within {size}")
        if self.memsize is not None and len(alloc) != self.memsize:
            raise self.fail(f"allocation() is {alloc!r}: {len(alloc)} words for a guest of {self.memsize}")
        return alloc

    def reserved(self) -> list[range]:
        value = self.call("reserved", self.vmm.reserved, returns=(list, tuple))
        bad = sorted({type(r).__name__ for r in value if not isinstance(r, range)})
        if bad:
            raise self.fail(f"reserved() must return ranges, got {', '.join(bad)}")
        return list(value)

    # -- safety, as observed ------------------------------------------------------
    def safety_problems(self) -> list[str]:
        """What the watch saw, and (with the canary) the first host word
        outside the allocation and the reserved ranges that changed.  Call
        once, at the end: the canary compare consumes the storage."""
        found = list(self.observed.violations)
        self.storage_intact("the session")
        if self._canary:
            alloc = self.allocation()
            kept = [alloc, *self.reserved()]
            M = self.host.M
            bad = first_change(M, self._fill, kept)
            if bad is not None:
                found.append(
                    f"host word {bad:#06x} (outside the guest's allocation [{alloc.start:#x}, "
                    f"{alloc.stop:#x}) and the VMM's reserved ranges) changed: "
                    f"{self._fill[bad]:#06x} -> {M[bad]:#06x}"
                )
        return found

    def close(self) -> None:
        """Give the storage back.  The finished host may outlive the session
        (reference cycles wait for the collector), and a plug-in's teardown
        may still write through it: such writes go to a sink, not to the
        storage the next session borrows.  (Code the host compiled keeps the
        list itself; only running the old host again could reach it.)"""
        if self._storage is None:
            return
        _give_back(self._storage, self._fill)
        self.host.M = _sink(len(self._fill))
        self._storage = None

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

