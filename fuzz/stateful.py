"""Stateful tests: guest execution interleaved with a VMM's declared capabilities.

`vmm_state_machine(VMMClass, profile)` builds a Hypothesis
`RuleBasedStateMachine` that loads a generated guest on the bare machine
and under the VMM, then applies a random sequence of rules:

* ``run(n)``: both run ``n`` guest steps (always available);
* ``snapshot`` / ``restore``: when the class declares ``snapshot``, the VMM
  saves and restores the whole guest, and the bare machine does the same
  with a copy of its state;
* ``switch``: when the class declares ``multi-guest``, a second guest runs
  beside the first and the rules alternate between them;
* ``run_to_trap``: both run up to a trap the bare machine takes (just
  before it, or just after it is delivered), so that the lifecycle rules
  below meet the VMM in the middle of its trap handling;
* ``file_round_trip`` ("snapshot"): the snapshot goes through a snapshot
  file (`popek.snapshot_file`) and is restored on a fresh instance on a
  fresh host, which carries on from there;
* ``suspend_resume`` ("suspend"): while suspended, a run must run nothing;
* ``migrate`` ("migration"): the guest moves to a fresh instance on a fresh
  host over a counting `popek.model.migration.Link` (a drawn bandwidth and
  round cap, so that rounds end at arbitrary guest steps) and carries on
  there; the bare twin runs the steps the report says the guest ran
  meanwhile.  A migration that leaves the guest running on the source,
  leaves the target host's storage without it, puts there a page that never
  crossed the link, or sends more than the link's cap is a failure.

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

import os
import tempfile
from collections import Counter
from dataclasses import dataclass

from popek import snapshot_file
from popek.model.machine import Machine
from popek.model.migration import Link, MigrationReport
from popek.session import Session
from popek.spec import profiles
from popek.spec.state import OLD_PSW
from popek.vmm import VMM, GuestRefused, GuestRun, GuestState

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

    def steps_to_trap(self, limit: int) -> int | None:
        """Steps until the bare machine has just taken a trap (or an
        interrupt), at most ``limit``; None if it takes none.  The twin is
        left where it was."""
        saved, m = self.save(), self.m
        census: Counter = Counter()
        m.census = census
        try:
            for k in range(1, limit + 1):
                psw = m.M[OLD_PSW : OLD_PSW + 6]
                r = m.step()
                if r.steps == 0:
                    return None
                # a trap or an interrupt stores the old PSW (whatever its cause)
                if m.M[OLD_PSW : OLD_PSW + 6] != psw or any(trapped for (_, _, trapped) in census):
                    return k
            return None
        finally:
            m.census = None
            self.load(saved)


@dataclass(frozen=True)
class WriterCase:
    """A guest that loops storing a counter to a few words across its
    storage, in its kernel or in a user program (interrupts on), with a
    system call each round and a timer ticking every ``timer`` steps if
    asked: what a dirty log, a restore and a suspend must all get right
    (`writer_guests`)."""

    user: bool
    addresses: tuple[int, ...]  # guest-physical words stored to each round
    syscall: bool
    timer: int = 0  # 0: no timer
    memsize: int = 0x400

    def text(self) -> str:
        base = 0x200 if self.user else 0
        stores = "".join(f"        li   r4, {a - base}\n        st   r3, 0(r4)\n" for a in self.addresses)
        loop = f"        addi r3, 1\n{stores}" + ("        sys  1\n" if self.syscall else "")
        arm = f"        li   r1, {self.timer}\n        stimer r1\n" if self.timer else ""
        handler = ("handler: ld r2, 4(r0)\n        cmpi r2, 5\n        jz   tick\n"
                   "        ld   r2, 1(r0)\n        addi r2, 2\n        st   r2, 1(r0)\n        rti\n"
                   f"tick:\n{arm}        rti\n")  # fmt: skip
        setup = ("start:  li   r1, 0x20\n        st   r1, 8(r0)\n        li   r1, handler\n        st   r1, 9(r0)\n"
                 f"        st   r0, 10(r0)\n        li   r1, {self.memsize}\n        st   r1, 11(r0)\n{arm}")  # fmt: skip
        if not self.user:
            return setup + f"        li   r3, 0\nloop:\n{loop}        jmp  loop\n{handler}"
        enter = ("        li   r1, 0x10\n        st   r1, 0(r0)\n        st   r0, 1(r0)\n"
                 f"        li   r1, {base}\n        st   r1, 2(r0)\n        li   r1, {self.memsize - base}\n"
                 "        st   r1, 3(r0)\n        rti\n")  # fmt: skip
        return setup + enter + handler + f"        .org {base}\nuser:   li   r3, 0\n{loop}        jmp  2\n"

    def image(self, profile=None):
        from popek.spec.asm import assemble

        return assemble(self.text(), profiles.get(profile) if isinstance(profile, str) else profile,
                        file="<writer guest>")  # fmt: skip


def writer_guests(memsize: int = 0x400) -> hs.SearchStrategy[WriterCase]:
    """Looping guests that store across their storage (`WriterCase`): the
    generated guests seldom still run and write while a migration's pages
    are in flight, and a dirty log that misses a kind of write is found
    only by one that does."""
    # a few words spread over the pages past the code (few distinct guests:
    # a design that analyses each guest at load sees the same ones again)
    spots = [a for a in (0x240, 0x27F, 0x2C0, 0x300, 0x35A, 0x3C1, 0x3FF) if a < memsize]
    addresses = hs.lists(hs.sampled_from(spots), min_size=1, max_size=3, unique=True)
    return hs.builds(WriterCase, user=hs.booleans(), addresses=addresses.map(tuple), syscall=hs.booleans(),
                     timer=hs.sampled_from([0, 7, 13, 31]), memsize=hs.just(memsize))  # fmt: skip


# Guest words of traffic a migration may send beyond 3 copies of the guest
# (its CPU state, the design's bookkeeping): what the checks' link allows.
STATE_ALLOWANCE = 4096


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
    if "migration" in caps or "snapshot" in caps:  # guests that go on writing, too
        guests = hs.one_of(guests, writer_guests())

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

        @rule(before=hs.booleans(), limit=hs.integers(1, max_run))
        def run_to_trap(self, before: bool, limit: int) -> None:
            twin = self.twins[self.current]
            k = twin.steps_to_trap(limit)
            if k is None:
                return
            self.run(k - 1 if before else k)

        @precondition(lambda self: "snapshot" in caps and self.current is None)
        @rule()
        def file_round_trip(self) -> None:
            snap = self.session.call("snapshot", self.vmm.snapshot)
            fd, path = tempfile.mkstemp(suffix=".snap")
            os.close(fd)
            try:
                snapshot_file.write(path, snap, profile=prof.name, vmm_cls=vmm_cls)
                _, back = snapshot_file.read(path, profile=prof.name, vmm_cls=vmm_cls)
            finally:
                os.unlink(path)
            fresh = Session(vmm_cls, prof, label=label, timeout=CALL_TIMEOUT, watch=False)
            try:
                fresh.call("restore", fresh.vmm.restore, back)
            except BaseException:
                fresh.close()
                raise
            fresh.take_sizes(self.session.sizes())
            self.session.close()
            self.session, self.vmm = fresh, fresh.vmm
            self.saved = None  # a snapshot is restored where it was taken, or on a fresh instance

        @precondition(lambda self: "suspend" in caps)
        @rule(n=hs.integers(1, max_run))
        def suspend_resume(self, n: int) -> None:
            before = self.session.state()
            self.session.call("suspend", self.vmm.suspend)
            r = self.session.run(n)
            assert r.steps == 0, f"run({n}) on a suspended guest ran {r.steps} guest steps"
            diffs = before.differences(self.session.state())
            assert not diffs, f"a suspended guest changed: {diffs[:6]}"
            self.session.call("resume", self.vmm.resume)

        @precondition(lambda self: "migration" in caps and self.current is None)
        @rule(bandwidth=hs.sampled_from([2, 16, 64, 200]), rounds=hs.integers(0, 5), after=hs.integers(0, max_run))
        def migrate(self, bandwidth: int, rounds: int, after: int) -> None:
            twin = self.twins[None]
            memsize = self.session.memsize
            link = Link(bandwidth, cap=3 * memsize + STATE_ALLOWANCE, max_rounds=rounds)
            target = Session(vmm_cls, prof, label=label, timeout=CALL_TIMEOUT, watch=False)
            try:
                report = self.session.call("migrate_to", self.vmm.migrate_to, target.vmm, link,
                                           returns=MigrationReport)  # fmt: skip
            except BaseException:
                target.close()
                raise
            target.take_sizes(self.session.sizes())
            source, self.session, self.vmm = self.session, target, target.vmm
            self.saved = None
            try:
                where = f"migrate_to(bandwidth {bandwidth}, round cap {rounds})"
                assert not link.over_cap(), f"{where} sent {link.words} words, over the link's cap of {link.cap}"
                ran, _ = run_observed(twin.m, report.guest_steps, None)
                assert ran == report.guest_steps, (
                    f"{where} says the guest ran {report.guest_steps} steps on the source; it halts after {ran}"
                )
                left = source.call("allocation", source.vmm.allocation, returns=range)
                r = source.call("run", source.vmm.run, max(after, 1), returns=GuestRun)
                assert r.steps == 0 and len(left) == 0, (
                    f"after {where} the source still runs the guest (allocation {left!r}, "
                    f"run({max(after, 1)}) ran {r.steps} steps)"
                )
                alloc = target.allocation()
                held = target.host.M[alloc.start : alloc.stop]
                size = prof.arch.page_size
                for a in range(0, len(held), size):
                    page, sent = a // size, link.pages.get(a // size)
                    if sent is None and any(held[a : a + size]):
                        raise AssertionError(f"after {where} the target holds guest page {page}, "
                                             "which never crossed the link")  # fmt: skip
                    if sent is not None and list(sent) != held[a : a + size]:
                        raise AssertionError(f"after {where} the target host's storage does not hold guest "
                                             f"page {page} as it last crossed the link")  # fmt: skip
            finally:
                source.close()
            diffs = GuestState.from_machine(twin.m).differences(self.session.state())
            assert not diffs, f"after {where} the guest on the target differs from the unmigrated guest: {diffs[:6]}"
            self.run(after)

        @precondition(lambda self: "migration" in caps and self.current is None)
        @rule(bandwidth=hs.integers(4, 12), rounds=hs.integers(1, 4), after=hs.integers(0, max_run))
        def migrate_slowly(self, bandwidth: int, rounds: int, after: int) -> None:
            """Pre-copy over a slow link: the guest runs (and writes) long
            while pages are in flight, which is when a dirty log is tried."""
            self.migrate(bandwidth, rounds, after)

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
