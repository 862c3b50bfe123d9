"""The conformance check a VMM author runs from their own test suite.

Like Hypothesis's provider conformance test, `check_vmm` takes your class
and exercises the plug-in contract (`popek.vmm`), not fidelity::

    from popek.conformance import check_vmm
    from mypkg.vmm import MyVMM

    def test_my_vmm_meets_the_contract():
        check_vmm(MyVMM)

It checks what the class declares (name, supports, capabilities), the type
of every value the plug-in returns, that a run stops where it must, that
counters add up (``direct + emulated`` equals the guest steps run), that
the VMM is deterministic (two instances on the same guest agree), that
``run(a); run(b)`` ends where ``run(a + b)`` does, and that each declared
capability works (a snapshot restores the state it saved and replays the
same future, on the same instance and on a fresh one; a suspended guest
runs nothing; a migration moves the guest whole, within the link's cap,
and leaves nothing running on the source).  A VMM may refuse a workload (`GuestRefused`, as a
paravirtualizing pass does for a guest it cannot prove safe): that workload
is listed as refused and skipped, but refusing every workload of a profile
fails.  Whether the guest behaves as on bare hardware is fidelity,
which ``popek check`` decides; it is not checked here.

Every call into the plug-in goes through a `popek.session.Session`, so a
plug-in that raises, loops or returns the wrong type fails with a message
naming it; each failure is a `ConformanceError` (an AssertionError, so pytest
shows it as a test failure with that message).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterable, Iterator

from popek.model.machine import Machine
from popek.isolation import is_isolated, run_remote
from popek.registry import PluginError, validate_class
from popek.session import Session, SessionError
from popek.spec import profiles as profile_table
from popek.spec.asm import assemble
from popek.spec.image import Image
from popek.spec.profiles import Profile
from popek.vmm import VMM, Counters, GuestRefused, GuestRun, GuestState

MEMSIZE = 1024  # guest storage used by the checks
STEPS = 400  # guest steps per check run; the workloads below need more to halt


class ConformanceError(AssertionError):
    """A VMM class that does not meet the plug-in contract."""


# Workloads built from instructions every profile has: they exercise
# relocation, a system call, the timer and user mode, enough to reach the
# code paths a VMM's bookkeeping goes through.  The first never halts
# within STEPS; the second halts early.
_KERNEL = """
start:  li   r1, 0x20
        st   r1, 8(r0)
        li   r1, handler
        st   r1, 9(r0)
        st   r0, 10(r0)
        li   r1, 0x400
        st   r1, 11(r0)
        li   r1, 0x10          ; enter user mode with interrupts on
        st   r1, 0(r0)
        st   r0, 1(r0)
        li   r1, 0x200
        st   r1, 2(r0)
        li   r1, 0x100
        st   r1, 3(r0)
        li   r1, 31
        stimer r1
        rti
handler: ld  r2, 4(r0)
        out  r2
        cmpi r2, 5
        jz   again
        ld   r2, 1(r0)
        addi r2, 2
        st   r2, 1(r0)
        rti
again:  li   r1, 31
        stimer r1
        rti
        .org 0x200
user:   li   r3, 0
        li   sp, 0x100
loop:   addi r3, 3
        push r3
        sys  1
        jmp  4
"""
_SHORT = """
start:  li   r1, 5
again:  out  r1
        addi r1, -1
        jnz  again
        halt
"""
WORKLOADS = {"kernel": _KERNEL, "short": _SHORT}


def _images(profile: Profile) -> dict[str, Image]:
    return {name: assemble(text, profile, file=f"<conformance:{name}>") for name, text in WORKLOADS.items()}


class _Checker:
    """The checks, each on fresh `popek.session.Session` s; a session error
    becomes a `ConformanceError` with the same one-line message."""

    def __init__(self, cls: type[VMM], label: str, timeout: float):
        self.cls, self.label, self.timeout = cls, label, timeout
        self._open: list[Session] = []

    def fail(self, message: str) -> ConformanceError:
        return ConformanceError(f"VMM {self.label!r}: {message}")

    @contextmanager
    def translated(self) -> Iterator[None]:
        """Session errors as conformance failures; sessions closed after each check."""
        try:
            try:
                yield
            finally:
                opened, self._open = self._open, []
                for s in opened:
                    s.close()  # an isolated plug-in's finalizer that raised is seen here
        except SessionError as e:
            raise ConformanceError(str(e)) from None

    # -- one fresh VMM with a guest loaded ---------------------------------
    def fresh(self, profile: Profile, image: Image) -> Session:
        s = Session(self.cls, profile, label=self.label, timeout=self.timeout, watch=False)
        self._open.append(s)
        s.load(image, memsize=MEMSIZE)
        return s

    def run(self, vmm: Session, steps: int) -> GuestRun:
        r = vmm.run(steps)
        if not r.halted and r.steps != steps:
            raise self.fail(f"run({steps}) stopped after {r.steps} steps without the guest halting")
        return r

    def state(self, vmm: Session) -> GuestState:
        return vmm.state()

    def counters(self, vmm: Session) -> Counters:
        return vmm.counters(totals=False)  # the sum is checked run by run (`counts_add_up`)

    # -- the checks --------------------------------------------------------
    def layout(self, profile: Profile, image: Image) -> None:
        vmm = self.fresh(profile, image)
        alloc = vmm.allocation()
        for r in vmm.reserved():
            if r.step == 1 and len(r) and (r.start < alloc.stop and alloc.start < r.stop):
                raise self.fail(f"reserved() {r!r} overlaps allocation() {alloc!r}")

    def counts_add_up(self, profile: Profile, image: Image) -> None:
        vmm = self.fresh(profile, image)
        total = 0
        for steps in (0, 1, 37, STEPS):
            before = self.counters(vmm).guest_steps
            r = self.run(vmm, steps)
            total += r.steps
            c = self.counters(vmm)
            if c.guest_steps - before != r.steps:
                raise self.fail(
                    f"counters: direct + emulated grew by {c.guest_steps - before} "
                    f"over run({steps}), which ran {r.steps} guest steps"
                )
        c = self.counters(vmm)
        if c.guest_steps != total:
            raise self.fail(
                f"counters: direct + emulated is {c.direct} + {c.emulated}, "
                f"but the runs ran {total} guest steps"
            )

    def run_zero_is_noop(self, profile: Profile, image: Image) -> None:
        vmm = self.fresh(profile, image)
        self.run(vmm, 13)
        s = self.state(vmm)
        r = self.run(vmm, 0)
        if r.steps != 0 or self.state(vmm) != s:
            raise self.fail("run(0) changed the guest")

    def deterministic(self, profile: Profile, image: Image) -> None:
        a, b = self.fresh(profile, image), self.fresh(profile, image)
        ra, rb = self.run(a, STEPS), self.run(b, STEPS)
        if ra != rb:
            raise self.fail(f"two instances on the same guest ran differently: {ra} vs {rb}")
        diffs = self.state(a).differences(self.state(b), limit=3)
        if diffs:
            raise self.fail(f"two instances on the same guest disagree: {diffs}")
        ca, cb = self.counters(a).as_dict(), self.counters(b).as_dict()
        if ca != cb:
            raise self.fail(f"two instances on the same guest count differently: {ca} vs {cb}")

    def split_runs(self, profile: Profile, image: Image) -> None:
        whole = self.fresh(profile, image)
        rw = self.run(whole, STEPS)
        parts = self.fresh(profile, image)
        done = 0
        for chunk in (1, 2, 50, 97, STEPS):
            done += self.run(parts, min(chunk, STEPS - done)).steps
        diffs = self.state(whole).differences(self.state(parts), limit=3)
        if diffs or done != rw.steps:
            raise self.fail(
                f"runs split into pieces end elsewhere than one run of {STEPS} steps "
                f"({done} vs {rw.steps} steps): {diffs}"
            )

    def halted_stays(self, profile: Profile, image: Image) -> None:
        vmm = self.fresh(profile, image)
        r = self.run(vmm, STEPS)
        bare = Machine(profile, MEMSIZE)
        bare.load(image)
        if not r.halted:
            if bare.run(STEPS).halted:  # the guest halts within STEPS on bare hardware
                raise self.fail(f"run({STEPS}) never reported the halt the guest reaches")
            return
        s = self.state(vmm)
        again = self.run(vmm, 10)
        if again.steps != 0 or not again.halted or self.state(vmm) != s:
            raise self.fail(f"run() after the guest halted returned {again}")

    def reload(self, profile: Profile, image: Image) -> None:
        vmm = self.fresh(profile, image)
        first = self.state(vmm)
        self.run(vmm, 50)
        vmm.load(image, memsize=MEMSIZE)
        diffs = first.differences(self.state(vmm), limit=3)
        if diffs:
            raise self.fail(f"load() again does not reset the guest: {diffs}")

    def snapshot(self, profile: Profile, image: Image) -> None:
        vmm = self.fresh(profile, image)
        self.run(vmm, 60)
        saved_state = self.state(vmm)
        snap = vmm.call("snapshot", vmm.vmm.snapshot)
        self.run(vmm, 100)
        later = self.state(vmm)
        vmm.call("restore", vmm.vmm.restore, snap)
        diffs = saved_state.differences(self.state(vmm), limit=3)
        if diffs:
            raise self.fail(f"restore() does not bring back the snapshot's state: {diffs}")
        self.run(vmm, 100)
        diffs = later.differences(self.state(vmm), limit=3)
        if diffs:
            raise self.fail(f"after restore(), the same run ends elsewhere: {diffs}")
        fresh = Session(self.cls, profile, label=self.label, timeout=self.timeout, watch=False)
        self._open.append(fresh)
        fresh.call("restore", fresh.vmm.restore, snap)  # a fresh instance, no guest loaded
        fresh.take_sizes((MEMSIZE, MEMSIZE, {}))
        self.run(fresh, 100)
        diffs = later.differences(self.state(fresh), limit=3)
        if diffs:
            raise self.fail(f"restore() on a fresh instance, then the same run, ends elsewhere: {diffs}")

    def straight(self, profile: Profile, image: Image, steps: int) -> GuestState:
        vmm = self.fresh(profile, image)
        self.run(vmm, steps)
        return self.state(vmm)

    def suspend(self, profile: Profile, image: Image) -> None:
        vmm = self.fresh(profile, image)
        self.run(vmm, 60)
        frozen = self.state(vmm)
        vmm.call("suspend", vmm.vmm.suspend)
        r = vmm.run(50)
        if r.steps or self.state(vmm) != frozen:
            raise self.fail(f"run(50) on a suspended guest ran {r.steps} steps or changed it")
        vmm.call("resume", vmm.vmm.resume)
        self.run(vmm, 100)
        diffs = self.straight(profile, image, 160).differences(self.state(vmm), limit=3)
        if diffs:
            raise self.fail(f"suspend()/resume() changed where the guest goes: {diffs}")

    def migration(self, profile: Profile, image: Image) -> None:
        from popek.model.migration import Link, MigrationReport

        vmm = self.fresh(profile, image)
        self.run(vmm, 60)
        target = Session(self.cls, profile, label=self.label, timeout=self.timeout, watch=False)
        self._open.append(target)
        link = Link(16, cap=3 * MEMSIZE + 4096, max_rounds=3)
        report = vmm.call("migrate_to", vmm.vmm.migrate_to, target.vmm, link, returns=MigrationReport)
        if link.over_cap():
            raise self.fail(f"migrate_to() sent {link.words} words over a link capped at {link.cap}")
        left = vmm.call("allocation", vmm.vmm.allocation, returns=range)
        if len(left) or vmm.run(10).steps:
            raise self.fail("after migrate_to() the guest still runs on the source")
        target.take_sizes((MEMSIZE, MEMSIZE, {}))
        moved = self.state(target)
        diffs = self.straight(profile, image, 60 + report.guest_steps).differences(moved, limit=3)
        if diffs:
            raise self.fail(f"migrate_to() did not move the guest whole: {diffs}")
        alloc = target.allocation()
        held, size = target.host.M[alloc.start : alloc.stop], profile.arch.page_size
        for a in range(0, len(held), size):
            sent = link.pages.get(a // size)
            if (list(sent) if sent is not None else [0] * len(held[a : a + size])) != held[a : a + size]:
                raise self.fail(f"after migrate_to() the target host's storage does not hold guest page "
                                f"{a // size} as it crossed the link (or it never crossed)")  # fmt: skip


def check_vmm_outcome(
    cls: type[VMM], profiles: list[str] | None, *, call_timeout: float
) -> tuple[list[str] | None, str | None]:
    """`check_vmm` as plain data (the checks run, or the failure's message),
    for an isolated plug-in's process to send back whole."""
    try:
        return check_vmm(cls, profiles, timeout=call_timeout), None
    except ConformanceError as e:
        return None, str(e)


def check_vmm(
    cls: type[VMM],
    profiles: Iterable[str] | None = None,
    *,
    timeout: float = 20.0,
) -> list[str]:
    """Check ``cls`` against the plug-in contract; raise `ConformanceError`.

    ``profiles``: names to check on (default: every profile the class
    declares in ``supports`` that is registered).  ``timeout`` bounds each
    call into the plug-in.  Returns the checks run, as "profile: check".
    """
    label = getattr(cls, "name", None) or getattr(cls, "__name__", repr(cls))
    try:
        validate_class(cls, str(label))
    except PluginError as e:
        raise ConformanceError(str(e)) from None
    if is_isolated(cls):  # every check where the plug-in lives: a migration's target is its neighbour there
        try:
            checks, problem = run_remote(
                cls, "popek.conformance:check_vmm_outcome", None if profiles is None else list(profiles),
                timeout=timeout, call_timeout=timeout,
            )  # fmt: skip
        except SessionError as e:  # its process died, or a call never returned
            raise ConformanceError(str(e)) from None
        if problem is not None:
            raise ConformanceError(problem)
        return checks
    declared = list(cls.supports)
    if profiles is None:
        names = [p for p in declared if p in {q.name for q in profile_table.all_profiles()}]
        if not names:
            raise ConformanceError(
                f"VMM {label!r}: none of its supported profiles {declared} is registered"
            )
    else:
        names = list(profiles)
        for p in names:
            if p not in declared:
                raise ConformanceError(f"VMM {label!r} does not declare support for profile {p!r}")
    checker = _Checker(cls, str(label), timeout)
    checks: list[tuple[str, Callable[[Profile, Image], None]]] = [
        ("layout", checker.layout),
        ("counters add up", checker.counts_add_up),
        ("run(0) does nothing", checker.run_zero_is_noop),
        ("deterministic", checker.deterministic),
        ("run(a)+run(b) == run(a+b)", checker.split_runs),
        ("halted guest stays halted", checker.halted_stays),
        ("load() resets", checker.reload),
    ]
    # the capabilities last, once the plain contract held on every workload
    lifecycle: list[tuple[str, Callable[[Profile, Image], None]]] = []
    if "snapshot" in cls.capabilities:
        lifecycle.append(("snapshot/restore", checker.snapshot))
    if "suspend" in cls.capabilities:
        lifecycle.append(("suspend/resume", checker.suspend))
    if "migration" in cls.capabilities:
        lifecycle.append(("migration", checker.migration))
    done: list[str] = []
    for pname in names:
        profile = profile_table.get(pname)
        accepted: dict[str, Image] = {}
        for wname, image in _images(profile).items():
            try:
                with checker.translated():
                    checks[0][1](profile, image)
            except GuestRefused as e:  # the VMM may decline a guest; then nothing can be checked on it
                done.append(f"{pname}/{wname}: refused ({e})")
                continue
            accepted[wname] = image
            done.append(f"{pname}/{wname}: {checks[0][0]}")
            _run_checks(checker, checks[1:], pname, wname, profile, image, done)
        for wname, image in accepted.items():
            _run_checks(checker, lifecycle, pname, wname, profile, image, done)
        if not accepted:
            raise checker.fail(f"refuses every conformance workload on {pname}: nothing could be checked")
    return done


def _run_checks(checker: _Checker, checks, pname: str, wname: str, profile: Profile, image: Image,
                done: list[str]) -> None:  # fmt: skip
    for what, check in checks:
        try:
            with checker.translated():
                check(profile, image)
        except GuestRefused as e:
            raise checker.fail(f"refused the {wname!r} workload on {pname} after accepting it: {e}") from None
        done.append(f"{pname}/{wname}: {what}")
