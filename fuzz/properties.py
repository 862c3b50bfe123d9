"""The Popek-Goldberg requirements as checks on one guest case.

* **fidelity**: at every checkpoint the guest state under the VMM equals the
  bare machine's after the same steps (``GuestState.differences``), and both
  ran the same number of steps;
* **efficiency**: ``Counters.efficiency`` (share of guest steps executed
  directly) is at least a threshold the caller sets;
* **safety**: host storage outside the guest's allocation and the VMM's
  reserved words unchanged, real resources changed only by the VMM, control
  back within the step bound (see ``popek.fuzz.execute``).

Use from a VMM author's own test suite::

    from hypothesis import given
    from popek.fuzz import properties, strategies

    @given(strategies.from_profile("pg"))
    def test_faithful(case):
        properties.assert_faithful(MyVMM, case)

A failing assertion's message is the full counterexample report: the guest
as assembly, the differing fields side by side, and a replay command line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from popek.spec.state import MODE as st_MODE
from popek.vmm import VMM, Counters, GuestState

from . import execute
from .efficiency import DirectRule, emulated_innocuous
from .execute import Problem, Run
from .guest import GuestCase
from .isa_coverage import IsaCoverage

KINDS = ("fidelity", "efficiency", "safety", "contract", "crash")
# Efficiency per instruction compares the two runs step for step: only a
# run with none of these problems was the same run as the bare one.
TRUSTED = ("fidelity", "contract", "crash")


class PropertyFailed(AssertionError):
    """A VMM broke a requirement on a case; ``str()`` is the full report."""

    def __init__(self, report: str, outcome: "Outcome"):
        super().__init__(report)
        self.outcome = outcome


@dataclass
class Outcome:
    """A case run on the reference and under the VMM, and what was wrong."""

    case: GuestCase
    vmm: str  # how the VMM was named (registry name or module:Class)
    reference: Run
    run: Run
    problems: list[Problem] = field(default_factory=list)
    # the bare run's ISA coverage of this one case, when it was counted
    bare: IsaCoverage | None = None

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def counters(self) -> Counters | None:
        return self.run.counters

    def first(self, kinds: tuple[str, ...] = KINDS) -> Problem | None:
        return next((p for p in self.problems if p.kind in kinds), None)


def compare_runs(reference: Run, run: Run, case: GuestCase) -> list[Problem]:
    """Fidelity: the first checkpoint at which the two runs differ."""
    at = 0
    for k, (ref_state, state) in enumerate(zip(reference.states, run.states)):
        at += execute.checkpoints(case)[k]
        diffs = ref_state.differences(state)
        if reference.steps[k] != run.steps[k]:
            diffs.insert(0, ("steps run", reference.steps[k], run.steps[k]))
        if diffs:
            names = ", ".join(d[0] for d in diffs[:6])
            return [Problem("fidelity", f"guest state differs after {at} steps: {names}", diffs, at)]
    return []


def check(
    vmm_cls: type[VMM],
    case: GuestCase,
    *,
    efficiency: float | None = None,
    safety: bool = True,
    coverage: IsaCoverage | None = None,
    reference: Callable[[GuestCase], Run] | None = None,
    label: str | None = None,
    direct: DirectRule | None = None,
) -> Outcome:
    """Run ``case`` on the reference (the bare machine by default) and under
    ``vmm_cls``; collect every problem.  Raises nothing.

    ``direct``: what the design's efficiency declaration promises; on a
    case the VMM ran faithfully, an innocuous instruction the host did not
    retire as often as the bare machine did is an efficiency problem (the
    host's own record, with the safety watch on, is the evidence)."""
    # coverage counts only guests the VMM ran: a refused guest tested nothing
    judge_direct = direct is not None and reference is None and safety
    seen = IsaCoverage() if coverage is not None or judge_direct else None
    ref = reference(case) if reference else execute.run_bare(case, coverage=seen)
    run = execute.run_vmm(vmm_cls, case, safety=safety)
    if run.refused is not None:  # the design declines this guest: no verdict on it
        return Outcome(case, label or getattr(vmm_cls, "name", vmm_cls.__name__), ref, run, [], seen)
    if coverage is not None and seen is not None:
        coverage.merge(seen)
    problems = list(run.problems)
    if not any(p.kind == "crash" for p in problems):
        problems += compare_runs(ref, run, case)
    if judge_direct and run.observed is not None and not any(p.kind in TRUSTED for p in problems):
        missed = emulated_innocuous(direct, seen, run.observed.direct)  # type: ignore[arg-type]
        if missed:
            problems.append(Problem("efficiency", "; ".join(m.describe() for m in missed[:3])))
    if efficiency is not None and run.counters is not None and run.counters.guest_steps:
        eff = run.counters.efficiency
        if eff < efficiency:
            problems.append(Problem(
                "efficiency",
                f"{eff:.1%} of guest steps ran directly; the threshold is {efficiency:.1%}",
            ))  # fmt: skip
    name = label or getattr(vmm_cls, "name", vmm_cls.__name__)
    return Outcome(case, name, ref, run, problems, seen)


def _raise(outcome: Outcome, kinds: tuple[str, ...]) -> None:
    problem = outcome.first(kinds)
    if problem is not None:
        from .report import format_outcome

        raise PropertyFailed(format_outcome(outcome, problem), outcome)


def assert_faithful(vmm_cls: type[VMM], case: GuestCase, **kw) -> Outcome:
    """Fidelity (and that the VMM did not crash or break its contract)."""
    outcome = check(vmm_cls, case, safety=False, **kw)
    _raise(outcome, ("crash", "contract", "fidelity"))
    return outcome


def assert_safe(vmm_cls: type[VMM], case: GuestCase, **kw) -> Outcome:
    outcome = check(vmm_cls, case, safety=True, **kw)
    _raise(outcome, ("crash", "safety"))
    return outcome


def assert_efficient(vmm_cls: type[VMM], case: GuestCase, threshold: float, **kw) -> Outcome:
    outcome = check(vmm_cls, case, safety=False, efficiency=threshold, **kw)
    _raise(outcome, ("crash", "efficiency"))
    return outcome


def assert_all(
    vmm_cls: type[VMM], case: GuestCase, *, efficiency: float | None = None, **kw
) -> Outcome:
    """Every requirement at once: what ``popek fuzz`` checks."""
    outcome = check(vmm_cls, case, efficiency=efficiency, safety=True, **kw)
    _raise(outcome, KINDS)
    return outcome


def assert_equivalent(a: type[VMM], b: type[VMM], case: GuestCase) -> Outcome:
    """Two VMMs against each other: ``a`` plays the reference."""
    outcome = check(b, case, safety=False, reference=lambda c: execute.run_vmm(a, c, safety=False))
    if outcome.reference.problems:
        outcome.problems = outcome.reference.problems + outcome.problems
    _raise(outcome, ("crash", "contract", "fidelity"))
    return outcome


def first_divergence(
    vmm_cls: type[VMM], case: GuestCase, *, limit: int | None = None
) -> tuple[int, str, str] | None:
    """Step the bare machine and the VMM one guest step at a time: the first
    step after which their guest states differ, with the instruction the
    bare machine ran at that step and its mode, or None if they never do.

    This names a finding's *culprit*; a campaign excludes it from later
    cases to find the next distinct bug."""
    from popek.model.machine import Machine
    from popek.session import Session
    from popek.spec import profiles

    from .isa_coverage import MODES, run_observed

    prof = profiles.get(case.profile)
    bare = Machine(prof, case.memsize)
    bare.load(case.image(prof))
    label = getattr(vmm_cls, "name", vmm_cls.__name__)
    with Session(vmm_cls, prof, label=label, timeout=execute.CALL_TIMEOUT, watch=False) as vmm:
        vmm.load(case.image(prof), memsize=case.memsize)
        for step in range(1, (limit or case.steps) + 1):
            cov = IsaCoverage()
            mode = MODES[bare.S[st_MODE]]
            n, _ = run_observed(bare, 1, cov)
            vmm.run(1)
            if GuestState.from_machine(bare).differences(vmm.state(), limit=1):
                name = next(iter(cov.counts))[0] if cov.counts else "<none>"
                return step, name, mode
            if n == 0:
                return None
    return None
