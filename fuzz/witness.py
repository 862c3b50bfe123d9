"""A short guest that shows an efficiency verdict: the instruction emulated.

A campaign judges efficiency over all its faithful cases
(`popek.fuzz.efficiency.DirectLedger`): an innocuous instruction whose
direct share is below the threshold makes the design *not efficient*.  Like
an unfaithful verdict, that one comes with a counterexample a user can
read and replay: a guest, as short as Hypothesis can shrink it, in which
the instruction ran emulated, found by searching the simplest guests that
draw it (kernel code only first; with the operating-system scaffold when
the promise covers only virtual user mode).
"""

from __future__ import annotations

from typing import Any

from .efficiency import DirectRule, EmulatedInnocuous
from .guest import GuestCase

EXAMPLES = 300  # cases per search
ROUNDS = 2  # searches (each with its own seed) before giving up


def efficiency_witness(
    vmm_cls: type,
    profile: str,
    rule: DirectRule,
    insn: str,
    *,
    steps: int,
    seed: int = 0,
    label: str | None = None,
) -> tuple[GuestCase, Any] | None:
    """(case, problem): a shrunk guest in which ``insn`` ran emulated under
    ``vmm_cls``, and its efficiency `Problem`; None if none was found."""
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as hseed

    from popek.spec import profiles

    from . import properties, strategies
    from .families import shape

    prof = profiles.get(profile)
    if insn not in prof.by_name:
        return None
    only = DirectRule(frozenset({insn}), rule.modes, rule.paged)
    families = tuple(dict.fromkeys((shape(prof[insn], prof.arch).family, "alu", "memory")))
    scaffolds = ([False] if "supervisor" in rule.modes else []) + [True]
    best: dict[str, Any] = {}

    def emulated(case: GuestCase):
        outcome = properties.check(vmm_cls, case, direct=only, label=label)
        if any(p.kind != "efficiency" for p in outcome.problems):
            return None  # another failure: not a clean witness of this one
        return outcome.first(("efficiency",))

    class Found(Exception):
        pass

    for os_scaffold in scaffolds:
        strategy = strategies.from_profile(
            prof, os_scaffold=os_scaffold, max_instructions=8, steps=steps, families=families, vary=False,
        )  # fmt: skip
        for round_ in range(ROUNDS):

            @hseed(seed * 7919 + round_ * 2 + int(os_scaffold))
            @settings(
                max_examples=EXAMPLES, database=None, deadline=None,
                phases=[Phase.generate, Phase.shrink], suppress_health_check=list(HealthCheck),
            )  # fmt: skip
            @given(strategy)
            def search(case: GuestCase) -> None:
                problem = emulated(case)
                if problem is not None:
                    if "case" not in best or case.instructions <= best["case"].instructions:
                        best["case"], best["problem"] = case, problem
                    raise Found()

            try:
                search()
            except Found:  # anything else is a harness failure: the caller reports it
                pass
            if "case" in best:
                return best["case"], best["problem"]
    return None


def describe_share(e: EmulatedInnocuous) -> str:
    """The campaign's figure for an instruction judged emulated."""
    share = e.direct / e.executions if e.executions else 0.0
    return f"{e.insn} {e.where} ran directly in {e.direct:g} of {e.executions:g} executions ({share:.0%})"
