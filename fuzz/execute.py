"""Running one guest case: on the bare reference machine, and under a VMM.

Both runs stop at the same *checkpoints* (the case's ``chunks``: the run
under the VMM is split into that many ``run()`` calls, and the bare run
pauses at the same step counts), so fidelity is compared at every
checkpoint, not only at the end.

The VMM runs in a `popek.session.Session`, which guards every call (a
plug-in that raises, hangs or returns the wrong type becomes a `Problem` of
kind ``crash``, never a crash of the harness), checks the contract, and
observes safety rather than assuming it:

* host storage outside ``allocation()`` and ``reserved()`` is filled with a
  canary before the VMM is built and compared afterwards;
* the host's real mode, R, PTBR and IE must not change while guest code
  runs on the host (only the VMM may change them);
* guest code on the host must not be able to reach (read or write) a host
  word outside its allocation, through the real R or the real page tables;
* ``run(n)`` must return having run at most ``n`` guest steps (the VMM
  regains control within the bound it was given), within the guard's time
  limit.
"""

from __future__ import annotations

import dataclasses
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from popek.model.machine import Machine
from popek.spec import profiles
from popek.spec.profiles import Profile
from popek.isolation import is_isolated, run_remote
from popek.session import Observed, Session, SessionError, UnsafeRun
from popek.vmm import GuestRefused, VMM, Counters, GuestState

from .guest import GuestCase
from .isa_coverage import IsaCoverage, run_observed

CALL_TIMEOUT = 10.0  # seconds for one call into a VMM during fuzzing
# A case runs a few hundred guest steps and its jumps go forward, so little
# of its code runs more than a handful of times: the host compiles a block
# (about 1 ms) only for code that has run this often.
HOST_HOT = 32


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
    # what the host itself recorded (with the safety watch on)
    observed: Observed | None = None
    # the last chunk alone, in a run of several: the bare side's ISA counts
    # (when counted), or what the host retired directly (with the watch on)
    last: Any = None


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
    chunks = checkpoints(case)
    before = None
    for k, chunk in enumerate(chunks):
        if coverage is not None and k == len(chunks) - 1 and k:
            before = Counter(coverage.counts)
        n, halted = run_observed(machine, chunk, coverage)
        steps.append(n)
        states.append(GuestState.from_machine(machine))
    last = IsaCoverage(coverage.counts - before) if before is not None else None
    return Run(states, steps, halted, last=last)


def situations_reached(case: GuestCase) -> set[str]:
    """The situations ``case`` reaches on the bare machine, from a run of
    its own (a campaign counts them on the bare run it makes anyway)."""
    cov = IsaCoverage()
    run_bare(case, coverage=cov)
    cov.settle()
    return set(cov.situations)


# --------------------------------------------------------------------------
# Under a VMM
# --------------------------------------------------------------------------
def run_vmm(
    vmm_cls: type[VMM],
    case: GuestCase,
    *,
    timeout: float = CALL_TIMEOUT,
    safety: bool = True,
) -> Run:
    """Run ``case`` under a fresh instance of ``vmm_cls`` on a fresh host
    (a `popek.session.Session`: every call guarded, the contract checked,
    the host observed).  A session error ends the case as a `Problem` of
    its kind; with ``safety`` on, what the session saw is added.  An
    isolated plug-in runs the whole case in its own process, in one request."""
    if is_isolated(vmm_cls):
        try:
            bare_case = dataclasses.replace(case)  # without its cached image, which holds the profile
            return run_remote(vmm_cls, "popek.fuzz.execute:run_vmm", bare_case, timeout=timeout, safety=safety)
        except GuestRefused as e:
            return Run([], [], False, None, [], refused=str(e) or type(e).__name__)
        except SessionError as e:  # its process died or overran: the case is a crash finding
            return Run([], [], False, None, [Problem(e.kind, str(e))])
    prof = profile_of(case)
    problems: list[Problem] = []
    states: list[GuestState] = []
    steps: list[int] = []
    halted = False
    counters = None
    observed = None
    last = None
    label = getattr(vmm_cls, "name", vmm_cls.__name__)
    try:
        with Session(vmm_cls, prof, label=label, timeout=timeout, watch=safety, canary=safety, hot=HOST_HOT) as s:
            observed = s.observed if safety else None
            try:
                s.load(case.image(prof), memsize=case.memsize)
                chunks = checkpoints(case)
                for k, chunk in enumerate(chunks):
                    if observed is not None and k == len(chunks) - 1 and k:
                        before = Counter(observed.direct)
                    r = s.run(chunk)
                    steps.append(r.steps)
                    halted = r.halted
                    states.append(s.state())
                counters = s.counters()
                if observed is not None and len(chunks) > 1 and len(steps) == len(chunks):
                    last = observed.direct - before
                if safety:
                    problems += [Problem("safety", v) for v in s.safety_problems()]
            except SessionError as e:
                at = sum(steps) + (chunk if isinstance(e, UnsafeRun) else 0)  # where it broke
                problems.append(Problem(e.kind, str(e), checkpoint=at))
    except GuestRefused as e:  # a declared answer, not a failure: nothing to compare
        return Run([], [], False, None, [], refused=str(e) or type(e).__name__)
    except SessionError as e:  # the VMM could not even be built
        problems.append(Problem(e.kind, str(e)))
    return Run(states, steps, halted, counters, problems, observed=observed, last=last)
