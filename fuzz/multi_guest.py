"""Several guests at once, checked: isolation, fidelity per guest, no starvation.

For any plug-in that declares "multi-guest" (`popek check` runs this):

* **fidelity, per guest**: n generated guests, hostile ones among them
  (they write all over their storage, fault, loop with interrupts
  masked), run interleaved in slices; after each slice the guest that ran
  must equal its own bare twin after the same number of its steps;
* **safety, between guests**: no two guests' allocations share a host word
  (nor a guest's allocation and the VMM's reserved words), and no host word
  outside all allocations and reserved ranges changes (a canary, as in
  every campaign, but against every guest's allocation);
* **no starvation**: under the time-slicing scheduler
  (`popek.model.scheduler`), a guest that masks interrupts and loops for
  ever does not keep the others from finishing: each halts with its bare
  step count, within the time its share of the CPU allows;
* **stateful** (`multi_guest_state_machine`): add a guest, select one, run
  it, remove one (when the design has ``remove_guest``), in any order,
  each guest equal to its bare twin throughout.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as hs
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from popek.model.machine import Machine
from popek.model.scheduler import run_guests
from popek.session import Session, SessionError, canary, first_change
from popek.spec import profiles
from popek.spec.asm import assemble
from popek.spec.profiles import Profile
from popek.vmm import VMM, GuestRefused, GuestState

from . import guest as g
from .execute import CALL_TIMEOUT
from .report import assembly
from .strategies import from_profile

# A guest that never yields: interrupts off, a tight loop, no trap.
HOG = """
start:  di
spin:   jmp  spin
"""


@dataclass
class MultiProblem:
    kind: str  # fidelity | safety | starvation | crash | contract
    message: str
    cases: list[g.GuestCase] = field(default_factory=list)

    def report(self) -> str:
        lines = [f"{self.kind.upper()}: {self.message}"]
        for k, case in enumerate(self.cases, 1):
            lines += ["", f"guest {k} (assembly):", assembly(case).rstrip("\n")]
        return "\n".join(lines)


def overlaps(named: dict, reserved: Sequence[range] = ()) -> str | None:
    """The first shared host word between two guests' allocations, or a
    guest's and the VMM's reserved words, said in one line."""
    items = sorted(named.items(), key=lambda kv: kv[1].start)
    for (ga, a), (gb, b) in zip(items, items[1:]):
        if b.start < a.stop:
            n = min(a.stop, b.stop) - b.start
            return (f"guests {ga} and {gb} share {n} host word(s) from {b.start:#06x}: "
                    f"allocations [{a.start:#x}, {a.stop:#x}) and [{b.start:#x}, {b.stop:#x})")  # fmt: skip
    for gid, a in items:
        for r in reserved:
            if a.start < r.stop and r.start < a.stop:
                return f"guest {gid}'s allocation [{a.start:#x}, {a.stop:#x}) overlaps reserved [{r.start:#x}, {r.stop:#x})"
    return None


def check_guests(
    vmm_cls: type[VMM], profile: Profile, cases: Sequence[g.GuestCase], slices: Sequence[int]
) -> MultiProblem | None:
    """Fidelity per guest and safety between guests, the guests run in turn
    for the given slice lengths (cycled), each for its case's steps."""
    label = getattr(vmm_cls, "name", vmm_cls.__name__)
    try:
        with Session(vmm_cls, profile, label=label, timeout=CALL_TIMEOUT, watch=False, canary=True) as s:
            twins, gids = [], []
            try:
                for k, case in enumerate(cases):
                    image = case.image(profile)
                    if k == 0:
                        s.load(image, memsize=case.memsize)
                        gid = s.guests()[0]
                    else:
                        gid = s.add_guest(image, memsize=case.memsize)
                    gids.append(gid)
                    twin = Machine(profile, case.memsize)
                    twin.load(image)
                    twins.append(twin)
                allocs = {}
                for gid in gids:
                    s.select_guest(gid)
                    allocs[gid] = s.allocation()
                clash = overlaps(allocs, s.reserved())
                if clash:
                    return MultiProblem("safety", clash, list(cases))
                left = [case.steps for case in cases]
                turn = 0
                while any(left):
                    k = turn % len(cases)
                    n = min(slices[turn % len(slices)], left[k])
                    turn += 1
                    if n == 0:
                        continue
                    s.select_guest(gids[k])
                    r = s.run(n)
                    bare = twins[k].run(r.steps)
                    left[k] = 0 if r.halted or r.steps < n else left[k] - r.steps
                    if bare.steps != r.steps or r.halted != bool(bare.halted):
                        return MultiProblem("fidelity", f"guest {k + 1} ran {r.steps} steps, {bare.steps} bare",
                                            list(cases))  # fmt: skip
                    diffs = GuestState.from_machine(twins[k]).differences(s.state())
                    if diffs:
                        names = ", ".join(d[0] for d in diffs[:4])
                        return MultiProblem(
                            "fidelity", f"guest {k + 1} differs from its bare twin after a slice: {names}", list(cases)
                        )
                kept = [*allocs.values(), *s.reserved()]
                size = len(s.host.M)
                bad = first_change(s.host.M, canary(size, profile.arch.mask), kept)
                if bad is not None:
                    return MultiProblem("safety", f"host word {bad:#06x}, outside every guest and the VMM's "
                                                  "reserved words, changed", list(cases))  # fmt: skip
            except GuestRefused:
                return None  # a declared answer: nothing to compare
            except SessionError as e:
                return MultiProblem(e.kind, str(e), list(cases))
    except SessionError as e:
        return MultiProblem(e.kind, str(e), list(cases))
    return None


def check_starvation(
    vmm_cls: type[VMM], profile: Profile, cases: Sequence[g.GuestCase], slice_steps: int = 50
) -> MultiProblem | None:
    """A never-yielding guest beside ``cases``, scheduled in slices of
    ``slice_steps``: every case must finish as on bare hardware, and no
    later than its own host steps plus, for each of its slices and one
    more, a slice of every other guest (counted at the dearest host cost
    per guest step seen: traps and emulation make a slice dearer)."""
    label = getattr(vmm_cls, "name", vmm_cls.__name__)
    hog = assemble(HOG, profile)
    with Session(vmm_cls, profile, label=label, timeout=CALL_TIMEOUT, watch=False) as s:
        try:
            s.load(hog, memsize=g.MIN_MEMSIZE)
            budgets = {s.guests()[0]: 10 * sum(c.steps for c in cases) + 1000}
            bare: dict = {}
            for case in cases:
                gid = s.add_guest(case.image(profile), memsize=case.memsize)
                twin = Machine(profile, case.memsize)
                twin.load(case.image(profile))
                r = twin.run(case.steps)
                bare[gid] = (r.steps, r.halted, GuestState.from_machine(twin))
                budgets[gid] = case.steps
            sched = run_guests(s, budgets, cpus=[s.host], slice_steps=slice_steps)
        except GuestRefused:
            return None
        except SessionError as e:
            return MultiProblem(e.kind, str(e), list(cases))
        n = len(budgets)
        # a slice of another guest may cost more host steps than guest steps
        # (its traps, emulated instructions): the slack is a slice at the
        # dearest per-step cost the schedule saw, not a slice of bare steps
        # (the generated guests' cost only: the looping guest's slices are what is judged)
        cost = max([1.0] + [sched.guests[gid].host_steps / sched.guests[gid].steps
                            for gid in bare if sched.guests[gid].steps])  # fmt: skip
        for k, (gid, (steps, halted, state)) in enumerate(bare.items(), 1):
            share = sched.guests[gid]
            if share.steps != steps:
                return MultiProblem("starvation", f"guest {k} ran {share.steps} of its {steps} steps beside a "
                                                  "guest looping with interrupts masked", list(cases))  # fmt: skip
            # round robin: between two of its slices, each other guest has at most one
            limit = int(share.host_steps + (share.slices + 1) * (n - 1) * slice_steps * cost)
            if (share.finished_at or 0) > limit:
                return MultiProblem("starvation", f"guest {k} finished after {share.finished_at} steps of elapsed "
                                                  f"time, more than its fair {limit}", list(cases))  # fmt: skip
            s.select_guest(gid)
            diffs = state.differences(s.state())
            if diffs:
                return MultiProblem("fidelity", f"guest {k} differs from its bare twin: {diffs[0][0]}", list(cases))
    return None


def guest_sets(profile: Profile, *, most: int = 4, max_instructions: int = 10):
    """Two to ``most`` generated guests (hostile code is what generated
    guests are: stores anywhere they may, faults, loops)."""
    one = from_profile(profile, max_instructions=max_instructions, split_runs=False, steps=150)
    return hs.lists(one, min_size=2, max_size=most)


def search(
    vmm_cls: type[VMM], profile: Profile, *, cases: int = 20, seed_value: int = 0
) -> tuple[int, MultiProblem | None]:
    """Up to ``cases`` guest sets through `check_guests`, each with drawn
    slices, then `check_starvation` on each; the first problem is shrunk."""
    found: list[MultiProblem] = []
    ran = [0]

    @seed(seed_value)
    @settings(max_examples=cases, database=None, deadline=None, suppress_health_check=list(HealthCheck),
              phases=[Phase.generate, Phase.shrink])  # fmt: skip
    @given(guest_sets(profile), hs.lists(hs.integers(1, 80), min_size=1, max_size=4))
    def probe(cases_, slices):
        ran[0] += 1
        problem = check_guests(vmm_cls, profile, cases_, slices) or check_starvation(vmm_cls, profile, cases_[:3])
        if problem is not None:
            found[:] = [problem]
            raise AssertionError(problem.message)

    try:
        probe()
    except AssertionError:
        pass
    return ran[0], (found[0] if found else None)


def multi_guest_state_machine(vmm_cls: type[VMM], profile: str | Profile) -> type[RuleBasedStateMachine]:
    """Add, select, run and remove guests in any order; every guest equal
    to its bare twin after every rule."""
    prof = profiles.get(profile) if isinstance(profile, str) else profile
    label = getattr(vmm_cls, "name", vmm_cls.__name__)
    guests = from_profile(prof, max_instructions=8, split_runs=False)
    removable = hasattr(vmm_cls, "remove_guest")

    class MultiGuestMachine(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.session = Session(vmm_cls, prof, label=label, timeout=CALL_TIMEOUT, watch=False)
            self.twins: dict = {}
            self.current = None

        @rule(case=guests)
        def add(self, case: g.GuestCase) -> None:
            if len(self.twins) >= 4:
                return
            image = case.image(prof)
            if not self.twins and self.current is None and not self.session.guests():
                self.session.load(image, memsize=case.memsize)
                gid = self.session.guests()[0]
                self.session.select_guest(gid)
                self.current = gid
            else:
                gid = self.session.add_guest(image, memsize=case.memsize)
            twin = Machine(prof, case.memsize)
            twin.load(image)
            self.twins[gid] = twin

        @precondition(lambda self: bool(self.twins))
        @rule(k=hs.integers(0, 3))
        def select(self, k: int) -> None:
            gid = sorted(self.twins)[k % len(self.twins)]
            self.session.select_guest(gid)
            self.current = gid

        @precondition(lambda self: self.current in self.twins)
        @rule(n=hs.integers(0, 80))
        def run(self, n: int) -> None:
            r = self.session.run(n)
            bare = self.twins[self.current].run(r.steps)
            assert bare.steps == r.steps, f"ran {r.steps} steps, the bare twin {bare.steps}"

        @precondition(lambda self: removable and len(self.twins) > 1)
        @rule(k=hs.integers(0, 3))
        def remove(self, k: int) -> None:
            gid = sorted(self.twins)[k % len(self.twins)]
            self.session.call("remove_guest", self.session.vmm.remove_guest, gid)
            del self.twins[gid]
            if gid == self.current:
                self.current = sorted(self.twins)[0]
                self.session.select_guest(self.current)

        @invariant()
        def every_guest_is_its_twin(self) -> None:
            if self.current not in self.twins:
                return
            for gid, twin in self.twins.items():
                self.session.select_guest(gid)
                diffs = GuestState.from_machine(twin).differences(self.session.state())
                assert not diffs, f"guest {gid} differs from its bare twin: {diffs[:4]}"
            self.session.select_guest(self.current)

        def teardown(self) -> None:
            self.session.close()

    MultiGuestMachine.__name__ = f"MultiGuest_{vmm_cls.__name__}_{prof.name}"
    MultiGuestMachine.TestCase.settings = settings(max_examples=10, stateful_step_count=10, deadline=None)
    return MultiGuestMachine


def check_section(vmm_cls: type[VMM], profile_names: Sequence[str], *, cases: int = 20, seed_value: int = 0):
    """`popek check`'s multi-guest lines: (passed, line) per profile the
    design is faithful on (elsewhere one guest is already unfaithful)."""
    out = []
    for name in profile_names:
        support = vmm_cls.supports.get(name)
        if support is None or not support.faithful:
            continue
        ran, problem = search(vmm_cls, profiles.get(name), cases=cases, seed_value=seed_value)
        if problem is None:
            out.append((True, f"multi-guest on {name}: {ran} sets of 2-4 guests: each faithful, "
                              "isolated, and not starved by a guest looping with interrupts masked"))  # fmt: skip
        else:
            out.append((False, f"multi-guest on {name}: {problem.report()}"))
    return out
