"""Popek and Goldberg's efficiency, judged from what a campaign counted.

Efficiency asks that the innocuous instructions (those that are not
sensitive) run directly on the hardware; a VMM may spend its own code on
the rest.  "A statistically dominant subset" is a threshold: by default a
majority, and the user may set it.

A VMM reports only *how many* guest steps it ran directly and how many it
emulated (its `Counters`), not *which*.  The bare run's ISA coverage says
how many steps retired an innocuous instruction; every other step (a
sensitive instruction, a trap, an interrupt) the VMM may emulate at no cost
to efficiency.  So when it emulated more steps than those, the surplus were
innocuous steps it emulated.  That is a lower bound no honest counter can
argue with, and it is what the verdict rests on: *not efficient* means
"at least this many innocuous steps were emulated", as *unfaithful* means
"here is a counterexample".  *Efficient* means the bound leaves a dominant
share that may have run directly: within the budget, nothing showed
otherwise.

Which instructions are innocuous is the proofs' answer (``popek.proofs``
classifies every instruction with Z3); the caller passes it in, so this
module stays on the fuzzing side of the data flow.  An instruction whose
classification is unknown counts as not innocuous, which can only make a
design look *more* efficient, never less.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from .isa_coverage import RETIRED, IsaCoverage

DOMINANT = 0.5  # the default threshold: a majority of the innocuous steps
# Fewer innocuous steps than this are no sample to judge a design by (a
# campaign that stops at an early counterexample has run a handful of cases).
ENOUGH = 1000


@dataclass(frozen=True)
class Efficiency:
    """What the counts prove about one VMM on one profile's guests."""

    steps: int  # guest steps the VMM ran
    emulated: int  # of which it reports emulating this many
    innocuous: int  # guest steps that retired an innocuous instruction (bare run)
    emulated_innocuous: int  # at least this many of those were emulated

    @property
    def direct_share(self) -> float | None:
        """The most the innocuous steps' direct share can be."""
        if not self.innocuous:
            return None
        return 1.0 - self.emulated_innocuous / self.innocuous

    def efficient(self, threshold: float = DOMINANT) -> bool | None:
        """None when too few innocuous steps ran to judge by."""
        share = self.direct_share
        return None if share is None or self.innocuous < ENOUGH else share >= threshold

    def describe(self) -> str:
        if self.direct_share is None:
            return "no innocuous steps"
        if self.innocuous < ENOUGH:
            return f"not judged: {self.innocuous} innocuous steps (fewer than {ENOUGH})"
        return (
            f"at least {self.emulated_innocuous} of {self.innocuous} innocuous steps emulated "
            f"(at most {self.direct_share:.0%} direct)"
        )


def judge(
    coverage: IsaCoverage, *, steps: int, direct: int, innocuous: Iterable[str]
) -> Efficiency:
    """The bound from a campaign's ISA coverage (bare runs) and the VMM's
    counts over the same cases.  ``innocuous``: instruction names."""
    names = frozenset(innocuous)
    inn = sum(n for (name, _mode, outcome), n in coverage.counts.items() if outcome == RETIRED and name in names)
    bare_steps = sum(coverage.counts.values())
    emulated = steps - direct
    # steps the VMM may emulate at no cost: every step that was not an
    # innocuous instruction retiring (should an unfaithful VMM have run more
    # steps than the bare machine, its extra steps count as free too)
    free = max(bare_steps, steps) - inn
    surplus = max(0, min(emulated - free, inn))
    return Efficiency(steps=steps, emulated=emulated, innocuous=inn, emulated_innocuous=surplus)
