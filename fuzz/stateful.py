"""Stateful tests: guest execution interleaved with a VMM's declared capabilities.

`vmm_state_machine(VMMClass, profile)` builds a Hypothesis
`RuleBasedStateMachine` that loads a generated guest on the bare machine
and under the VMM, then applies a random sequence of rules:

* ``run(n)``: both run ``n`` guest steps (always available);
* ``snapshot`` / ``restore``: when the class declares ``snapshot``, the VMM
  saves and restores the whole guest, and the bare machine does the same
  with a copy of its state;
* ``switch``: when the class declares ``multi-guest``, a second guest runs
  beside the first and the rules alternate between them.

After every rule the selected guest must equal its bare twin.  Use it from
a test module::

    from popek.fuzz.stateful import vmm_state_machine
    TestMyVMM = vmm_state_machine(MyVMM, "pg").TestCase

Multi-guest signatures assumed (the contract names the methods only):
``add_guest(image, *, memsize) -> id``, ``select_guest(id)``,
``guests() -> list of ids``.
"""

from __future__ import annotations

from hypothesis import reject, settings
from hypothesis import strategies as hs
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from popek.model.machine import Machine
from popek.session import Session
from popek.spec import profiles
from popek.vmm import VMM, GuestRefused, GuestState

from . import strategies
from .execute import CALL_TIMEOUT
from .isa_coverage import run_observed


class _Twin:
    """A bare machine standing beside one guest."""

    def __init__(self, prof, case):
        self.m = Machine(prof, case.memsize)
        self.m.load(case.image(prof))

    def save(self):
        m = self.m
        return (list(m.S), list(m.M[: m.memsize]), list(m.out))

    def load(self, saved) -> None:
        m = self.m
        m.S[:], m.M[: m.memsize], m.out[:] = saved[0], saved[1], saved[2]
        m.flush()


def vmm_state_machine(
    vmm_cls: type[VMM], profile: str, *, max_run: int = 60, guests=None
) -> type[RuleBasedStateMachine]:
    """A state machine class for ``vmm_cls`` on ``profile`` (see the module
    docstring).  ``guests``: the guest strategy (default
    ``from_profile(profile, split_runs=False)``)."""
    prof = profiles.get(profile)
    caps = frozenset(getattr(vmm_cls, "capabilities", ()))
    label = getattr(vmm_cls, "name", vmm_cls.__name__)
    if guests is None:
        guests = strategies.from_profile(prof, split_runs=False)

    class VMMStateMachine(RuleBasedStateMachine):
        @initialize(case=guests, snap_first=hs.booleans())
        def load(self, case, snap_first: bool) -> None:
            self.session = Session(vmm_cls, prof, label=label, timeout=CALL_TIMEOUT, watch=False)
            self.vmm = self.session.vmm
            try:
                self.session.load(case.image(prof), memsize=case.memsize)
            except GuestRefused:  # the design declines this guest: not a case, draw another
                self.session.close()
                reject()
            self.twins = {None: _Twin(prof, case)}
            self.current = None
            self.saved = None
            if snap_first and "snapshot" in caps:
                # a snapshot of the fresh guest makes "run, then restore" likely
                self.snapshot()

        @rule(n=hs.integers(0, max_run))
        def run(self, n: int) -> None:
            twin = self.twins[self.current]
            bare_steps, _ = run_observed(twin.m, n, None)
            r = self.session.run(n)
            assert r.steps == bare_steps, f"run({n}): VMM ran {r.steps} guest steps, bare {bare_steps}"

        @precondition(lambda self: "snapshot" in caps)
        @rule()
        def snapshot(self) -> None:
            self.saved = (self.current, self.session.call("snapshot", self.vmm.snapshot), self.twins[self.current].save())

        @precondition(lambda self: "snapshot" in caps and self.saved is not None)
        @rule()
        def restore(self) -> None:
            which, snap, bare = self.saved
            if which != self.current:
                return  # a snapshot is restored into the guest it came from
            self.session.call("restore", self.vmm.restore, snap)
            self.twins[which].load(bare)

        @precondition(lambda self: "multi-guest" in caps)
        @rule(case=guests)
        def add_and_switch(self, case) -> None:
            if len(self.twins) > 1:
                ids = [k for k in self.twins if k != self.current]
                self.current = ids[0]
                self.session.select_guest(self.current)
                return
            try:
                gid = self.session.add_guest(case.image(prof), memsize=case.memsize)
            except GuestRefused:  # a refused second guest is no failure: nothing was added
                return
            first = self.session.guests()[0]
            self.twins = {first: self.twins[None], gid: _Twin(prof, case)}
            self.current = gid
            self.session.select_guest(gid)

        def teardown(self) -> None:
            if hasattr(self, "session"):
                self.session.close()

        @invariant()
        def faithful(self) -> None:
            if not hasattr(self, "vmm"):
                return
            state = self.session.state()
            diffs = GuestState.from_machine(self.twins[self.current].m).differences(state)
            assert not diffs, f"guest state differs from its bare twin: {diffs[:6]}"

    VMMStateMachine.__name__ = f"StateMachine_{vmm_cls.__name__}_{profile}"
    VMMStateMachine.TestCase.settings = settings(max_examples=25, stateful_step_count=12, deadline=None)
    return VMMStateMachine
