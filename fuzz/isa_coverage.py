"""ISA-feature coverage: which instruction ran in which mode, with which outcome.

Observed on the *bare* machine (the reference) through its own performance
counters (`Machine.census`): the machine counts every step it takes as the
instruction it ran (or an interrupt, a fetch fault, an undecodable word),
the mode before the step, and whether it trapped.  The run is the bare run.
A campaign merges the counts of every case and every worker, and names the
(instruction, mode) pairs that no case reached.

The same bare run also detects *situations* (`popek.fuzz.situations`):
`run_observed` watches the machine for them, and an `IsaCoverage` counts,
per situation, the cases that reached it (``situations``, over
``observed`` cases), beside the instruction counts.
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
        self.situations: Counter = Counter()  # situation name -> cases that reached it
        self.observed = 0  # cases whose situations are counted
        self._pending = None  # the observation of the case being run (situations.Observation)

    def settle(self) -> None:
        """Count the situations of the case being observed, if any."""
        obs, self._pending = self._pending, None
        if obs is not None:
            self.situations.update(obs.situations())
            self.observed += 1

    def situations_json(self, profile: Profile | None = None) -> dict:
        from . import situations

        self.settle()
        return situations.to_json(dict(self.situations), self.observed, profile)

    def add_situations(self, doc: dict | None) -> None:
        """Add situation counts written by `situations_json` (another worker's)."""
        from . import situations

        counts: dict[str, int] = {}
        self.observed += situations.merge_json(counts, doc)
        self.situations.update(counts)

    def add(self, name: str, mode: int, outcome: str, n: int = 1) -> None:
        self.counts[(name, MODES[mode], outcome)] += n

    def merge(self, other: "IsaCoverage") -> None:
        self.counts.update(other.counts)
        other.settle()
        self.situations.update(other.situations)
        self.observed += other.observed

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
    With it, the run's situations are observed too (`popek.fuzz.situations`):
    successive calls on a machine left where the last one stopped are
    chunks of one case; a call on a machine in any other state starts the
    next case.
    """
    if coverage is None:
        r = machine.run(steps)
        return r.steps, r.halted
    from . import situations

    census: Counter = Counter()
    machine.census = census
    obs = situations.observation_for(coverage, machine)
    try:
        with situations.observe(machine, obs):
            r = machine.run(steps, compiled=False)  # one at a time: situations watch each instruction
    finally:
        machine.census = None
    obs.chunk_done(steps, r.steps)
    for (name, mode, trapped), n in census.items():
        coverage.add(name, mode, TRAPPED if trapped else RETIRED, n)
    return r.steps, r.halted
