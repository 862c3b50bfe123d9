"""Running one guest case: on the bare reference machine, and under a VMM.

Both runs stop at the same *checkpoints* (the case's ``chunks``: the run
under the VMM is split into that many ``run()`` calls, and the bare run
pauses at the same step counts), so fidelity is compared at every
checkpoint, not only at the end.

Every call into the VMM goes through ``popek.guard.call``: a plug-in that
raises, hangs or returns the wrong type becomes a `Problem` of kind
``crash``, never a crash of the harness.  Safety is observed, not assumed:

* host storage outside ``allocation()`` and ``reserved()`` is filled with a
  canary before the VMM is built and compared afterwards;
* the host's real mode, R, PTBR and IE are watched while the host runs guest
  code with the VMM's trap hook installed: between two entries into the VMM
  they must not change (only the VMM may change them);
* ``run(n)`` must return having run at most ``n`` guest steps (the VMM
  regains control within the bound it was given), within the guard's time
  limit.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from functools import lru_cache
from operator import itemgetter
from typing import Any, Callable

from popek import guard
from popek.model.machine import Machine
from popek.spec import profiles
from popek.spec import state as st
from popek.spec.profiles import Profile
from popek.vmm import GuestRefused, VMM, Counters, GuestRun, GuestState

from .guest import GuestCase
from .isa_coverage import IsaCoverage, run_observed

CALL_TIMEOUT = 10.0  # seconds for one call into a VMM during fuzzing
# A case runs a few hundred guest steps and its jumps go forward, so little
# of its code runs more than a handful of times: the host compiles a block
# (about 1 ms) only for code that has run this often.
HOST_HOT = 32
WATCHED = (st.MODE, st.BASE, st.BOUND, st.PTBR, st.IE)
_watched_slots = itemgetter(*WATCHED)  # S -> the watched values, as a tuple


@dataclass
class Problem:
    """One way a VMM failed on a case."""

    kind: str  # fidelity | efficiency | safety | contract | crash
    message: str
    # (field, reference value, VMM value) for fidelity
    diffs: list[tuple[str, Any, Any]] = field(default_factory=list)
    checkpoint: int = 0  # guest steps at which it was seen

    def to_json(self) -> dict:
        return {
            "kind": self.kind,
            "message": self.message,
            "diffs": [[k, a, b] for k, a, b in self.diffs],
            "checkpoint": self.checkpoint,
        }


@dataclass
class Run:
    """What one side (bare machine or VMM) did with a case."""

    states: list[GuestState]  # at each checkpoint
    steps: list[int]  # guest steps run in each chunk
    halted: bool
    counters: Counters | None = None
    problems: list[Problem] = field(default_factory=list)
    # the VMM's `GuestRefused` message: it declined to host this guest at all
    refused: str | None = None


def checkpoints(case: GuestCase) -> tuple[int, ...]:
    return case.chunks or (case.steps,)


def profile_of(case: GuestCase) -> Profile:
    return profiles.get(case.profile)


# --------------------------------------------------------------------------
# The reference: the bare machine
# --------------------------------------------------------------------------
_reference = threading.local()


def _bare_machine(prof: Profile, memsize: int) -> Machine:
    """The reference machine for a profile and storage size, built once per
    thread and loaded afresh for each case.  ``load`` resets all a guest can
    observe (storage that exists, state, output log, decode caches), and
    storage beyond ``memsize`` does not exist, so no guest ever wrote it:
    the machine is as good as new.  Building one per case cost a fresh
    2**word-word list, which the garbage collector then scanned."""
    pool = getattr(_reference, "machines", None)
    if pool is None:
        pool = _reference.machines = {}
    machine = pool.get((prof.name, memsize))
    if machine is None or machine.profile is not prof:
        if len(pool) >= 8:  # a few profiles and sizes in one process, not a leak
            pool.clear()
        machine = pool[(prof.name, memsize)] = Machine(prof, memsize)
    return machine


def run_bare(case: GuestCase, *, coverage: IsaCoverage | None = None) -> Run:
    prof = profile_of(case)
    machine = _bare_machine(prof, case.memsize)
    machine.load(case.image(prof))
    states, steps, halted = [], [], False
    for chunk in checkpoints(case):
        n, halted = run_observed(machine, chunk, coverage)
        steps.append(n)
        states.append(GuestState.from_machine(machine))
    return Run(states, steps, halted)


# --------------------------------------------------------------------------
# Under a VMM
# --------------------------------------------------------------------------
@lru_cache(maxsize=8)
def _canary(size: int, mask: int) -> list[int]:
    """A pattern no plausible guest write reproduces by accident."""
    return [(0xA5A5 ^ (a * 0x9E37)) & mask for a in range(size)]


@lru_cache(maxsize=8)
def _zeros(size: int) -> list[int]:
    return [0] * size


@lru_cache(maxsize=8)
def _sink(size: int) -> list[int]:
    """Storage for hosts whose case is over (see `run_vmm`): never read."""
    return [0] * size


_lent = threading.local()


def _borrow_storage(fill: list[int]) -> list[int]:
    """Host storage holding ``fill`` (the canary, or zeros), for one case.

    The list a case gave back is lent again: making a fresh 2**word-word list
    per case cost more than copying it, because the garbage collector then
    traversed its 65,536 slots at every young-generation collection while it
    was new (in a Hypothesis campaign those run several times per case).
    It is compared whole with ``fill`` before it is lent, so a plug-in that
    wrote into it after its case ended cannot reach the next case."""
    free: dict = _lent.__dict__.setdefault("free", {})
    storage = free.pop(id(fill), None)
    if storage is None or storage != fill:
        storage = list(fill)
    return storage


def _give_back(storage: list[int], fill: list[int]) -> None:
    """A case is done with its host storage: refill it, keep it for the next."""
    if storage != fill:
        storage[:] = fill
    _lent.__dict__.setdefault("free", {})[id(fill)] = storage


def _first_change(M: list[int], canary: list[int], kept: list[range]) -> int | None:
    """The first host word outside every ``kept`` range that no longer holds
    the canary, or None.  The kept ranges are set back to the canary first,
    so storage is compared in one pass and no copy of it is made (the case
    is done with ``M``)."""
    size = len(M)
    for r in kept:
        if r.step < 0:
            r = r[::-1]  # the same words, counted upwards
        a = r.start if r.start >= 0 else r.start + -(r.start // r.step) * r.step  # first word >= 0
        b = min(size, r.stop)
        if a < b:  # only the words the range holds: a step leaves the words between checked
            M[a : b : r.step] = canary[a : b : r.step]
    if M == canary:
        return None
    return next(a for a in range(size) if M[a] != canary[a])


def _ranges(value: Any, method: str) -> list[range]:
    """``reserved()``'s answer, checked: a list or tuple of ranges."""
    if not all(isinstance(r, range) for r in value):
        kinds = sorted({type(r).__name__ for r in value if not isinstance(r, range)})
        raise TypeError(f"{method}() must return ranges, got {', '.join(kinds)}")
    return list(value)


class _ResourceWatch:
    """Wraps ``host.run`` so that real resources changed by guest code
    running directly (not by the VMM) are caught, and counts the steps the
    host ran: no guest step ran directly but in one of them."""

    def __init__(self, host: Machine):
        self.host = host
        self.violations: list[str] = []
        self.host_steps = 0
        self._run = host.run
        self._vtx = host.arch.vtx
        host.run = self.run  # type: ignore[method-assign]

    def _snap(self) -> tuple[int, ...]:
        S = self.host.S
        if self._vtx and S[st.GUEST]:  # the host's own resources wait in the VMCS
            from popek.spec.vtx import host_state

            saved = host_state(S, self.host.M)
            return tuple(saved.get(i, S[i]) for i in WATCHED)
        return _watched_slots(S)

    def _compare(self, before: tuple[int, ...], where: str | Callable[[], str]) -> None:
        after = self._snap()
        if after != before and len(self.violations) < 3:
            where = where if isinstance(where, str) else where()
            changed = ", ".join(
                f"{st.FIELD_NAMES[slot]} {a}->{b}"
                for slot, a, b in zip(WATCHED, before, after)
                if a != b
            )
            self.violations.append(f"real {changed} changed by guest code, not by the VMM ({where})")

    def run(self, max_steps: int, on_trap: Callable | None = None, *, compiled: bool = True):
        if on_trap is None:
            result = self._run(max_steps, None, compiled=compiled)
            self.host_steps += result.steps
            return result
        state = {"before": self._snap()}

        def hook(machine: Machine, cause: int, info: int):
            self._compare(state["before"], lambda: f"before a {st.Cause(cause).name.lower()} trap")
            stop = on_trap(machine, cause, info)
            state["before"] = self._snap()
            return stop

        result = self._run(max_steps, hook, compiled=compiled)
        self.host_steps += result.steps
        self._compare(state["before"], "when host.run returned")
        return result


def run_vmm(
    vmm_cls: type[VMM],
    case: GuestCase,
    *,
    timeout: float = CALL_TIMEOUT,
    safety: bool = True,
) -> Run:
    """Run ``case`` under a fresh instance of ``vmm_cls`` on a fresh host."""
    prof = profile_of(case)
    label = getattr(vmm_cls, "name", vmm_cls.__name__)
    problems: list[Problem] = []

    def call(method: str, fn: Callable, *args: Any, returns=None, **kw: Any) -> Any:
        return guard.call(label, method, fn, *args, timeout=timeout, returns=returns, **kw)

    size, mask = 1 << prof.arch.word, prof.arch.mask
    # with the safety watch on, the host starts with the canary in storage
    fill = _canary(size, mask) if safety else _zeros(size)
    storage = _borrow_storage(fill)
    host = Machine(prof, size, storage=storage)
    host.hot = HOST_HOT
    if safety:
        watch = _ResourceWatch(host)
    states: list[GuestState] = []
    steps: list[int] = []
    halted = False
    counters = None
    try:
        vmm = call("__init__", vmm_cls, host)
        call("load", vmm.load, case.image(prof), memsize=case.memsize)
        for chunk in checkpoints(case):
            r = call("run", vmm.run, chunk, returns=GuestRun)
            if not 0 <= r.steps <= chunk:
                problems.append(Problem(
                    "safety",
                    f"run({chunk}) reports {r.steps} guest steps: the VMM did not stop within its bound",
                    checkpoint=sum(steps) + chunk,
                ))  # fmt: skip
            steps.append(r.steps)
            halted = r.halted
            state = call("guest_state", vmm.guest_state, returns=GuestState)
            try:  # at every checkpoint: a wrong value later would crash the comparison
                state.validate()
            except TypeError as e:
                problems.append(Problem("contract", f"guest_state(): {e}", checkpoint=sum(steps)))
                break
            states.append(state)
        counters = call("counters", vmm.counters, returns=Counters)
        try:
            counters.validate()
        except TypeError as e:
            problems.append(Problem("contract", f"counters(): {e}"))
        else:
            if counters.guest_steps != sum(steps):
                problems.append(Problem(
                    "contract",
                    f"counters() say direct {counters.direct} + emulated {counters.emulated} = "
                    f"{counters.guest_steps} guest steps, but run() reported {sum(steps)}",
                ))  # fmt: skip
            if safety and counters.direct > watch.host_steps:  # efficiency rests on this count
                problems.append(Problem(
                    "contract",
                    f"counters() say {counters.direct} guest steps ran directly, "
                    f"but the host machine ran only {watch.host_steps} steps",
                ))  # fmt: skip
        if safety:
            alloc = call("allocation", vmm.allocation, returns=range)
            reserved = call("reserved", vmm.reserved, returns=(list, tuple))
            try:
                kept = [alloc, *_ranges(reserved, "reserved")]
            except TypeError as e:
                problems.append(Problem("contract", str(e)))
            else:
                bad = _first_change(host.M, fill, kept)
                if bad is not None:
                    problems.append(Problem(
                        "safety",
                        f"host word {bad:#06x} (outside the guest's allocation "
                        f"[{alloc.start:#x}, {alloc.stop:#x}) and the VMM's reserved ranges) "
                        f"changed: {fill[bad]:#06x} -> {host.M[bad]:#06x}",
                    ))  # fmt: skip
            for v in watch.violations:
                problems.append(Problem("safety", v))
    except guard.PluginFailure as e:
        problems.append(Problem("crash", str(e), checkpoint=sum(steps)))
    except GuestRefused as e:  # a declared answer, not a failure: nothing to compare
        return Run([], [], False, None, [], refused=str(e) or type(e).__name__)
    finally:
        _give_back(storage, fill)
        # The finished host may outlive the case (reference cycles wait for
        # the collector), and a plug-in's teardown may still write through it:
        # such writes go to a sink, not to the storage the next case borrows.
        # (Code the host compiled keeps the list itself; only running the
        # old host again could reach it.)
        host.M = _sink(size)
    return Run(states, steps, halted, counters, problems)
