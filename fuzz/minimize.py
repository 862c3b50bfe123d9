"""Making a finding small, and naming where it goes wrong.

Hypothesis shrinks the choices that drew a case; some simplifications are
hard to reach that way (moving an instruction out of a trap handler into the
kernel, dropping the whole user program).  `minimize` works on the
`GuestCase` itself, greedily: it tries each simplification and keeps it when
the case still fails the same way (``still_fails``), until none applies or
the time budget runs out.  Each try is one run of the case, so the pass
costs at most a few hundred runs.

A campaign's finding gets that pass with a budget of tries
(`minimize_finding`: the same finding shrinks to the same case however
loaded the machine is), its *culprit* (`culprit_of`: the instruction at
which the VMM first departs from the bare machine), and, when it is still
long, a focused search for a short guest with the same culprit (`focus`).
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Callable, Iterator

from .guest import GuestCase

if TYPE_CHECKING:
    from popek.vmm import VMM

    from .campaign_config import CampaignConfig
    from .execute import Problem, Run

MINIMIZE_TRIES = 300  # runs `minimize_finding` may spend on one finding
MINIMIZE_CAP = 30.0  # seconds: a cap for a very slow VMM, not the budget
FOCUS_ABOVE = 6  # counterexamples longer than this get a focused search (`focus`)
FOCUS_EXAMPLES = 300
FOCUS_ROUNDS = 3


def _structural(case: GuestCase) -> Iterator[GuestCase]:
    """Whole-scaffold simplifications, biggest first."""
    every = case.kernel + (case.handler or ()) + (case.user or ())
    if case.handler is not None or case.user is not None:
        yield replace(case, kernel=every, handler=None, user=None, timer=0)
        yield replace(case, handler=None, user=None, timer=0)
    if case.user is not None:
        yield replace(case, kernel=case.kernel + case.user, user=None, timer=0)
    if case.timer:
        yield replace(case, timer=0)
    if case.chunks:
        yield replace(case, chunks=())
    if case.kdata:
        yield replace(case, kdata=())
    if case.page_perms is not None:
        yield replace(case, page_perms=None)


def _deletions(case: GuestCase) -> Iterator[GuestCase]:
    for name in ("kernel", "handler", "user"):
        ops = getattr(case, name)
        if not ops:
            continue
        for k in range(len(ops)):
            yield replace(case, **{name: ops[:k] + ops[k + 1 :]})


def minimize(
    case: GuestCase, still_fails: Callable[[GuestCase], bool], *, seconds: float = 10.0
) -> GuestCase:
    """The smallest case this pass reaches that ``still_fails``."""
    deadline = time.monotonic() + seconds
    improved = True
    while improved and time.monotonic() < deadline:
        improved = False
        for gen in (_structural, _deletions):
            for candidate in gen(case):
                if time.monotonic() >= deadline:
                    return case
                if candidate.instructions <= case.instructions and still_fails(candidate):
                    case = candidate
                    improved = True
                    break
            if improved:
                break
    return case


def minimize_finding(current: dict[str, Any], vmm_cls: type[VMM], config: CampaignConfig,
                     reference: Callable[[GuestCase], Run] | None = None,
                     seconds: float = MINIMIZE_CAP) -> None:  # fmt: skip
    """After Hypothesis's shrinking, `minimize`'s pass over the finding
    ``current`` (its ``case`` and ``problem``, replaced when it shrinks)."""
    from . import properties

    kind = current["problem"].kind
    tries = [0]

    def outcome(case):
        return properties.check(
            vmm_cls, case, efficiency=config.efficiency, label=config.vmm, reference=reference
        )

    def still_fails(case) -> bool:
        # a budget of tries, not of seconds: the same finding shrinks to the
        # same case on a quiet and on a loaded machine (the seconds are a cap)
        tries[0] += 1
        return tries[0] <= MINIMIZE_TRIES and outcome(case).first((kind,)) is not None

    small = minimize(current["case"], still_fails, seconds=seconds)
    if small != current["case"]:
        problem = outcome(small).first((kind,))
        if problem is not None:
            current["case"], current["problem"] = small, problem


def culprit_of(vmm_cls: type[VMM], case: GuestCase, problem: Problem) -> dict | None:
    """The instruction at which a fidelity finding first diverges."""
    from . import properties

    if problem.kind != "fidelity":
        return None
    try:
        hit = properties.first_divergence(vmm_cls, case)
    except Exception:  # the VMM misbehaving while stepped: no culprit named
        return None
    if hit is None:
        return None
    step, insn, mode = hit
    return {"step": step, "insn": insn, "mode": mode}


def focus(current: dict[str, Any], vmm_cls: type[VMM], config: CampaignConfig, culprit: dict,
          excluded: list[str]) -> None:  # fmt: skip
    """A long counterexample whose culprit is known: look for a short one.

    Bugs first seen deep in an operating system (a handler, a time slice)
    often show in two kernel instructions too, but shrinking cannot always
    get there: the failure hangs on the scaffold's timing.  So search the
    simplest guests (kernel code only) for a case with the same culprit, and
    let Hypothesis shrink that; keep it if it is shorter."""
    from hypothesis import HealthCheck, Phase, given, settings

    from popek.spec import profiles

    from . import properties, strategies
    from .families import shape

    target = culprit["insn"]
    prof = profiles.get(config.profile)
    if target not in prof.by_name:  # a fetch fault or an interrupt: no instruction to aim at
        return
    # the culprit's own family, and what sets up values and the stack
    families = tuple(dict.fromkeys((shape(prof[target], prof.arch).family, "alu", "memory")))
    strategy = strategies.from_profile(
        prof, os_scaffold=False, max_instructions=8, steps=config.steps, exclude=excluded,
        families=families,
    )  # fmt: skip

    kind = current["problem"].kind

    def same_bug(case) -> bool:
        if properties.check(vmm_cls, case, label=config.vmm).first((kind,)) is None:
            return False
        hit = properties.first_divergence(vmm_cls, case)
        return hit is not None and hit[1] == target

    best: dict = {}

    class Found(Exception):
        """The search found a case with the culprit: Hypothesis shrinks it."""

    @settings(
        max_examples=FOCUS_EXAMPLES, database=None, deadline=None,
        phases=[Phase.generate, Phase.shrink], suppress_health_check=list(HealthCheck),
    )  # fmt: skip
    @given(strategy)
    def search(case) -> None:
        if same_bug(case):
            if "case" not in best or case.instructions <= best["case"].instructions:
                best["case"] = case
            raise Found()

    for _round in range(FOCUS_ROUNDS):  # one run sometimes misses what the next finds
        try:
            search()
        except Exception:  # Found (perhaps wrapped by Hypothesis), or the VMM failing otherwise
            pass
        if "case" in best:
            break
    small = best.get("case")
    if small is None:
        return
    if small.instructions < current["case"].instructions:
        problem = properties.check(vmm_cls, small, label=config.vmm).first((kind,))
        if problem is not None:
            current["case"], current["problem"] = small, problem
            hit = properties.first_divergence(vmm_cls, small)
            if hit:
                culprit.update(step=hit[0], insn=hit[1], mode=hit[2])
