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

from collections import Counter
from dataclasses import dataclass
from typing import Iterable, Mapping

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


# --------------------------------------------------------------------------
# Per instruction, from the host's own record
# --------------------------------------------------------------------------
BOTH_MODES = frozenset({"user", "supervisor"})


@dataclass(frozen=True)
class DirectRule:
    """What a design declared efficient promises, as popek checks it: every
    innocuous instruction (the proofs name them) that the guest executes in
    one of ``modes`` runs directly on the host, also while the guest's
    paging is on when ``paged``."""

    innocuous: frozenset[str]
    modes: frozenset[str] = BOTH_MODES
    paged: bool = True

    def to_json(self) -> dict:
        return {"innocuous": sorted(self.innocuous), "modes": sorted(self.modes), "paged": self.paged}

    @classmethod
    def from_json(cls, d: dict) -> "DirectRule":
        return cls(frozenset(d["innocuous"]), frozenset(d["modes"]), bool(d["paged"]))


@dataclass(frozen=True)
class EmulatedInnocuous:
    """An innocuous instruction that the host did not retire as often as
    the guest executed it: some of its executions were emulated."""

    insn: str
    modes: tuple[str, ...]  # the virtual modes the guest executed it in
    # times the host retired it, and times the guest retired it on the bare
    # machine in those modes: counts in one case, weighted ones (`CASE_WEIGHT`:
    # the direct count a fraction) over a campaign's `DirectLedger`
    direct: float
    executions: float
    late: bool = False  # counted in the last chunk of long runs only (`DirectLedger`)

    @property
    def where(self) -> str:
        """Where it was judged, in words."""
        return f"in virtual {' or '.join(self.modes)} mode" + (" late in long runs" if self.late else "")

    def describe(self) -> str:
        return f"{self.insn} {self.where} ran emulated ({self.direct:g} of {self.executions:g} executions direct)"


def paged(bare: IsaCoverage) -> bool:
    """Did the guest load its page-table base?  (Its only way to turn paging on.)"""
    return any(n for (name, _m, o), n in bare.counts.items() if name == "lptb" and o == RETIRED)


def declared_executions(rule: DirectRule, bare: IsaCoverage) -> dict[str, dict[str, int]]:
    """What the rule judges in one case: innocuous instruction -> declared
    virtual mode -> times the guest retired it there (bare run); nothing
    for a paged case the rule does not cover."""
    if not rule.paged and paged(bare):
        return {}
    out: dict[str, dict[str, int]] = {}
    for (name, mode, outcome), n in bare.counts.items():
        if outcome == RETIRED and mode in rule.modes and name in rule.innocuous and n:
            modes = out.setdefault(name, {})
            modes[mode] = modes.get(mode, 0) + n
    return out


def emulated_innocuous(
    rule: DirectRule, bare: IsaCoverage, direct: Mapping[str, int]
) -> list[EmulatedInnocuous]:
    """Innocuous instructions of one case that ran emulated at least once:
    the bare run's count in the declared modes against the host's count of
    the same instruction retired directly.  The host cannot say in which
    virtual mode it ran an instruction, so its whole count stands against
    the declared modes' (necessary, not sufficient: an emulated execution
    in a declared mode can hide behind a direct one in another).  Meant for
    a case the VMM ran faithfully: only then are the two runs the same."""
    want = declared_executions(rule, bare)
    out = []
    for name, modes in sorted(want.items()):
        executions = sum(modes.values())
        got = direct.get(name, 0)
        if got < executions:
            out.append(EmulatedInnocuous(name, tuple(sorted(modes, reverse=True)), got, executions))
    return out


# Fewer (weighted: `CASE_WEIGHT`) executions of an instruction than this,
# over a campaign, are no sample to judge its direct share by: at least 5
# cases that executed it.
ENOUGH_EXECUTIONS = 20


# Most executions of one instruction that one case adds to a share (per
# instruction and per mode), its direct ones in proportion (`DirectLedger.add`)
CASE_WEIGHT = 4


def weighted(executions: int, direct: int) -> tuple[int, float]:
    """One case's ``executions`` of an instruction, ``direct`` of them run
    directly, as they count toward a campaign's share: at most `CASE_WEIGHT`
    executions, the direct ones in proportion."""
    k = min(executions, CASE_WEIGHT)
    return k, direct * k / executions


def mode_key(name: str, mode: str) -> str:
    """The per-mode ledger's key for ``name`` executed in virtual ``mode``."""
    return f"{name}@{mode}"


class DirectLedger:
    """Per innocuous instruction, over the cases a VMM ran faithfully: how
    often the guest executed it in the declared modes (bare run) and how
    many of those the host retired directly (its own record, capped per
    case at the executions, so that direct runs in other modes cannot make
    up for emulated ones).  Each case counts at most `CASE_WEIGHT`
    executions of an instruction, its direct ones in proportion (a float):
    a share is over cases, so that one guest looping through a path a
    design emulates by necessity (a nested guest a design interprets for
    398 steps, most of them `mov`) cannot decide it alone.

    And per instruction *and declared mode*: the host's record does not say
    in which virtual mode it ran an instruction, so the campaign-wide count
    lets a design that runs its guest's kernel directly and interprets the
    user program pass (kernels execute most of the instructions).  So each
    case in which the guest executed an instruction in one mode only (on
    the bare machine, in any mode) also counts toward that instruction in
    that mode (`mode_executions`, `mode_direct`, keyed by `mode_key`): there
    the host's count can only be that mode's, and each declared mode must
    reach the threshold on its own."""

    def __init__(self, rule: DirectRule):
        self.rule = rule
        self.executions: Counter = Counter()
        self.direct: Counter = Counter()
        self.mode_executions: Counter = Counter()
        self.mode_direct: Counter = Counter()
        # the same, over the last chunk of long runs only (`add_late`)
        self.late_executions: Counter = Counter()
        self.late_direct: Counter = Counter()
        self.cases = 0  # cases judged (faithful, and paged only if the rule covers it)

    def add_late(self, whole: IsaCoverage, last: IsaCoverage, host_direct_last: Mapping[str, int]) -> None:
        """The last chunk of a long run: its bare counts (``last``) against
        what the host retired directly in it.  A design that turns slow
        after a while (a counter trips, a cache fills) passes on the whole
        run's counts, since short runs are most of a campaign; the end of a
        long run is where it shows.  ``whole``: the case's counts, for
        whether it is judged at all (paging)."""
        if not self.rule.paged and paged(whole):
            return
        for name, modes in declared_executions(self.rule, last).items():
            n = sum(modes.values())
            self.late_executions[name] += n
            self.late_direct[name] += min(n, host_direct_last.get(name, 0))

    def add(self, bare: IsaCoverage, host_direct: Mapping[str, int]) -> None:
        if not self.rule.paged and paged(bare):
            return
        self.cases += 1
        ran_in: dict[str, set[str]] = {}  # instruction -> every mode it retired in
        for (name, mode, outcome), n in bare.counts.items():
            if outcome == RETIRED and n:
                ran_in.setdefault(name, set()).add(mode)
        for name, modes in declared_executions(self.rule, bare).items():
            n = sum(modes.values())
            # at most CASE_WEIGHT executions a case, the direct ones in
            # proportion: one guest looping through a path the design
            # emulates by necessity (a handler pushing onto a write-protected
            # page, 23 times; a nested guest interpreted for 398 steps) must
            # not decide a share alone
            k, got = weighted(n, min(n, host_direct.get(name, 0)))
            self.executions[name] += k
            self.direct[name] += got
            if len(ran_in.get(name, ())) == 1:  # one mode only: the host's count is that mode's
                key = mode_key(name, next(iter(modes)))
                self.mode_executions[key] += k
                self.mode_direct[key] += got

    def merge(self, other: "DirectLedger") -> None:
        self.executions.update(other.executions)
        self.direct.update(other.direct)
        self.mode_executions.update(other.mode_executions)
        self.mode_direct.update(other.mode_direct)
        self.late_executions.update(other.late_executions)
        self.late_direct.update(other.late_direct)
        self.cases += other.cases

    def shares(self) -> dict[str, float]:
        """Every judged direct share (enough executions): per instruction, and
        per instruction in one declared mode (``"add (user)"``) when the rule
        declares both modes."""
        out = {n: self.direct[n] / k for n, k in self.executions.items() if k >= ENOUGH_EXECUTIONS}
        if len(self.rule.modes) > 1:
            for key, k in self.mode_executions.items():
                if k >= ENOUGH_EXECUTIONS:
                    name, _, mode = key.partition("@")
                    out[f"{name} ({mode})"] = self.mode_direct[key] / k
        for name, k in self.late_executions.items():
            if k >= ENOUGH_EXECUTIONS:
                out[f"{name} (late)"] = self.late_direct[name] / k
        return out

    def share(self, name: str) -> float | None:
        n = self.executions.get(name, 0)
        return self.direct.get(name, 0) / n if n else None

    def emulated(self, threshold: float = DOMINANT) -> list[EmulatedInnocuous]:
        """Instructions (with enough executions) whose direct share is below
        ``threshold``, lowest share first."""
        modes = tuple(sorted(self.rule.modes, reverse=True))
        out = [
            EmulatedInnocuous(name, modes, self.direct[name], n)
            for name, n in self.executions.items()
            if n >= ENOUGH_EXECUTIONS and self.direct[name] < threshold * n
        ]
        if len(self.rule.modes) > 1:  # each declared mode on its own (see the class docstring)
            for key, n in self.mode_executions.items():
                if n >= ENOUGH_EXECUTIONS and self.mode_direct[key] < threshold * n:
                    name, _, mode = key.partition("@")
                    out.append(EmulatedInnocuous(name, (mode,), self.mode_direct[key], n))
        for name, n in self.late_executions.items():  # the end of long runs on its own
            if n >= ENOUGH_EXECUTIONS and self.late_direct[name] < threshold * n:
                out.append(EmulatedInnocuous(name, modes, self.late_direct[name], n, late=True))
        return sorted(out, key=lambda e: (e.direct / e.executions, e.insn, e.modes, e.late))

    def grid(self) -> dict[str, float]:
        """Each executed instruction's direct share, however few its
        executions (the report's grid; the verdict reads `shares`)."""
        return {n: round(self.direct[n] / k, 4) for n, k in sorted(self.executions.items()) if k}

    def label(self, e: EmulatedInnocuous) -> str:
        """``e`` named as `shares` names it: ``add``, ``add (user)``, ``add (late)``."""
        if e.late:
            return f"{e.insn} (late)"
        if len(self.rule.modes) > 1 and len(e.modes) == 1:
            return f"{e.insn} ({e.modes[0]})"
        return e.insn

    def judged(self) -> int:
        """How many instructions had enough executions to be judged."""
        return sum(n >= ENOUGH_EXECUTIONS for n in self.executions.values())

    def describe(self, threshold: float = DOMINANT) -> str:
        """One line: the verdict per instruction, as a campaign summary says it."""
        judged = self.judged()
        if not judged:
            return f"innocuous instructions: none executed {ENOUGH_EXECUTIONS} times in {self.cases} faithful cases"
        low = self.emulated(threshold)
        if low:
            worst = ", ".join(f"{self.label(e)} {e.direct:g}/{e.executions:g}" for e in low[:4])
            return (
                f"innocuous instructions: {len({e.insn for e in low})} of {judged} ran directly in under {threshold:.0%} "
                f"of their executions ({worst}): NOT efficient"
            )
        shares = self.shares()
        lowest = min(shares, key=lambda n: (shares[n], n))
        return (
            f"innocuous instructions: all {judged} ran directly in at least {threshold:.0%} of their "
            f"executions (lowest: {lowest} {shares[lowest]:.0%}), over {self.cases} faithful cases"
        )

    def to_json(self) -> dict:
        return {"cases": self.cases, "executions": dict(self.executions), "direct": dict(self.direct),
                "mode_executions": dict(self.mode_executions), "mode_direct": dict(self.mode_direct),
                "late_executions": dict(self.late_executions), "late_direct": dict(self.late_direct)}

    @classmethod
    def from_json(cls, rule: DirectRule, d: dict) -> "DirectLedger":
        ledger = cls(rule)
        ledger.cases = int(d.get("cases", 0))
        ledger.executions.update({str(k): int(v) for k, v in d.get("executions", {}).items()})
        # direct counts are weighted (`CASE_WEIGHT`): fractions
        ledger.direct.update({str(k): float(v) for k, v in d.get("direct", {}).items()})
        ledger.mode_executions.update({str(k): int(v) for k, v in d.get("mode_executions", {}).items()})
        ledger.mode_direct.update({str(k): float(v) for k, v in d.get("mode_direct", {}).items()})
        ledger.late_executions.update({str(k): int(v) for k, v in d.get("late_executions", {}).items()})
        ledger.late_direct.update({str(k): int(v) for k, v in d.get("late_direct", {}).items()})
        return ledger


# --------------------------------------------------------------------------
# The figures, named alike wherever they are printed
# --------------------------------------------------------------------------
@dataclass(frozen=True)
class Figures:
    """The efficiency figures of one campaign, under one set of names.

    Three different shares used to be printed as "efficiency" (``popek
    fuzz`` said 45.8% where ``popek verify`` said "efficient (100%)"), and
    users compared them.  They measure different things: the verdict rests
    on each innocuous instruction's own direct share (the lowest is shown);
    the share of *all* guest steps run directly includes the sensitive
    instructions, which a faithful VMM must emulate; the innocuous steps'
    share is an upper bound from the totals.  Campaign summaries, the
    verdict table, the JSON and the HTML report all come from here."""

    efficient: bool | None  # the verdict; None: not judged
    lowest_insn: str | None = None  # the innocuous instruction with the lowest direct share
    lowest_share: float | None = None
    all_steps: float | None = None  # share of all guest steps run directly
    innocuous_at_most: float | None = None  # upper bound on the innocuous steps' direct share
    innocuous_steps: int = 0
    by_finding: bool = False  # not efficient because an efficiency finding says so

    def verdict_text(self) -> str:
        """The verdict column: ``efficient (add 100% direct)``."""
        if self.efficient is None:
            if self.innocuous_steps:
                return f"? ({self.innocuous_steps} innocuous steps)"
            return "-" if self.all_steps is None else f"? ({self.all_steps:.0%} of all steps direct)"
        word = "efficient" if self.efficient else "not efficient"
        if self.lowest_insn is None or self.lowest_share is None:
            return f"{word} (finding)"
        return f"{word} ({self.lowest_insn} {self.lowest_share:.0%} direct)"

    def detail_text(self) -> str:
        """The other two figures, each named for what it counts."""
        parts = []
        if self.all_steps is not None:
            parts.append(f"all guest steps {self.all_steps:.1%} direct (sensitive ones included)")
        if self.innocuous_at_most is not None:
            parts.append(f"innocuous steps at most {self.innocuous_at_most:.0%} direct")
        return "; ".join(parts)

    def to_json(self) -> dict:
        r = lambda x: None if x is None else round(x, 4)  # noqa: E731
        return {
            "efficient": self.efficient,
            "lowest_innocuous": None if self.lowest_insn is None else
            {"insn": self.lowest_insn, "direct_share": r(self.lowest_share)},
            "all_steps_direct_share": r(self.all_steps),
            "innocuous_steps_direct_share_at_most": r(self.innocuous_at_most),
            "verdict_text": self.verdict_text(),
        }  # fmt: skip


def figures(
    *, ledger: "DirectLedger | None", threshold: float, steps: int, direct: int,
    bound: Efficiency | None, inefficient_finding: bool = False,
) -> Figures:
    """The figures from what a campaign counted (see `Figures`)."""
    efficient = lowest = share = None
    if ledger is not None and ledger.judged():
        shares = ledger.shares()  # per instruction, per declared mode, and late in long runs
        lowest = min(shares, key=lambda n: (shares[n], n))
        share = shares[lowest]
        efficient = not ledger.emulated(threshold)
    if inefficient_finding:
        efficient = False
    return Figures(
        efficient=efficient, lowest_insn=lowest, lowest_share=share,
        all_steps=direct / steps if steps else None,
        innocuous_at_most=None if bound is None else bound.direct_share,
        innocuous_steps=0 if bound is None else bound.innocuous,
        by_finding=inefficient_finding,
    )  # fmt: skip
