"""ISA-feature coverage: which instruction ran in which mode, with which outcome.

Observed on the *bare* machine (the reference) through its own performance
counters (`Machine.census`): the machine counts every step it takes as the
instruction it ran (or an interrupt, a fetch fault, an undecodable word),
the mode before the step, and whether it trapped.  The run is the bare run.
A campaign merges the counts of every case and every worker, and names the
(instruction, mode) pairs that no case reached.
"""

from __future__ import annotations

from collections import Counter
from typing import Iterable, Mapping

from popek.model.machine import FETCH_FAULT, ILLEGAL, INTERRUPT, Machine
from popek.spec import state as st
from popek.spec.profiles import Profile

MODES = {st.SUPERVISOR: "supervisor", st.USER: "user"}
RETIRED, TRAPPED = "retired", "trapped"
# INTERRUPT, FETCH_FAULT and ILLEGAL (from the model) name steps that ran no instruction


class IsaCoverage:
    """Counts of (instruction name, mode, outcome)."""

    def __init__(self, counts: Mapping[tuple[str, str, str], int] | None = None):
        self.counts: Counter = Counter(counts or {})

    def add(self, name: str, mode: int, outcome: str, n: int = 1) -> None:
        self.counts[(name, MODES[mode], outcome)] += n

    def merge(self, other: "IsaCoverage") -> None:
        self.counts.update(other.counts)

    def reached(self) -> set[tuple[str, str]]:
        return {(n, m) for (n, m, _o), c in self.counts.items() if c}

    def unreached(self, profile: Profile) -> list[tuple[str, str]]:
        """(instruction, mode) pairs of the profile that no step reached."""
        got = self.reached()
        return [
            (i.name, m)
            for i in sorted(profile.insns, key=lambda i: i.name)
            for m in MODES.values()
            if (i.name, m) not in got
        ]

    def fraction(self, profile: Profile) -> float:
        total = 2 * len(profile.insns)
        return (total - len(self.unreached(profile))) / total if total else 1.0

    def table(self, profile: Profile) -> dict[str, dict[str, dict[str, int]]]:
        """instruction -> mode -> outcome -> count, for every instruction."""
        out: dict[str, dict[str, dict[str, int]]] = {}
        names = sorted(i.name for i in profile.insns) + [INTERRUPT, FETCH_FAULT, ILLEGAL]
        for n in names:
            out[n] = {
                m: {o: self.counts.get((n, m, o), 0) for o in (RETIRED, TRAPPED)}
                for m in MODES.values()
            }
        return out

    def to_json(self) -> list[list]:
        return [[n, m, o, c] for (n, m, o), c in sorted(self.counts.items())]

    @classmethod
    def from_json(cls, rows: Iterable[list]) -> "IsaCoverage":
        return cls({(n, m, o): c for n, m, o, c in rows})


def run_observed(
    machine: Machine, steps: int, coverage: IsaCoverage | None
) -> tuple[int, bool]:
    """Run the bare ``machine`` for up to ``steps`` steps, counting coverage.

    Returns (steps run, halted).  Without ``coverage`` it is a plain run.
    """
    if coverage is None:
        r = machine.run(steps)
        return r.steps, r.halted
    census: Counter = Counter()
    machine.census = census
    try:
        r = machine.run(steps)
    finally:
        machine.census = None
    for (name, mode, trapped), n in census.items():
        coverage.add(name, mode, TRAPPED if trapped else RETIRED, n)
    return r.steps, r.halted
