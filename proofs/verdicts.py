"""Popek and Goldberg's conditions, decided per profile from the classification.

Theorem 1: a VMM may be constructed if the set of sensitive instructions is
a subset of the set of privileged instructions.  Theorem 3: a hybrid VMM
may be constructed if the set of *user*-sensitive instructions is a subset
of the privileged ones.  Both conditions are sufficient, not necessary, and
the report says so: a failing condition names the instructions that break
it (each with the witness that shows it sensitive and the one that shows it
unprivileged); it never claims that no VMM can exist.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from popek.spec.profiles import Profile

from .classify import NO, SENSITIVITY, UNKNOWN, YES, Classification, classify_profile
from .witness import Witness

HOLDS, FAILS = "holds", "fails"


@dataclass
class Offender:
    insn: str
    kinds: list[str]  # which sensitivities were shown (control, mode, location, ...)
    sensitive: Witness | None  # a witness of the sensitivity
    unprivileged: Witness | None  # a witness that it is not privileged


@dataclass
class Condition:
    theorem: int
    statement: str
    status: str  # HOLDS, FAILS or UNKNOWN
    offenders: list[Offender] = field(default_factory=list)
    undecided: list[str] = field(default_factory=list)  # instructions Z3 could not settle

    def sentence(self) -> str:
        """The verdict in the paper's terms: sufficient, not necessary."""
        what = {1: "a VMM", 3: "a hybrid VMM"}[self.theorem]
        if self.status == HOLDS:
            return (f"Theorem {self.theorem}'s condition holds ({self.statement}): "
                    f"{what} can be built for this machine.")
        if self.status == FAILS:
            names = ", ".join(o.insn for o in self.offenders)
            return (f"Theorem {self.theorem}'s condition fails ({self.statement}), because of: "
                    f"{names}.  The condition is sufficient, not necessary: this does not "
                    f"show that no {what[2:]} can exist, only that the theorem does not "
                    "promise one.")
        return (f"Theorem {self.theorem}'s condition is undecided ({self.statement}): Z3 "
                f"answered unknown for {', '.join(self.undecided)}.")


@dataclass
class ProfileVerdict:
    profile: str
    classes: list[Classification]
    theorem1: Condition
    theorem3: Condition


def _condition(theorem: int, classes: list[Classification], column: str) -> Condition:
    statement = {
        1: "every sensitive instruction is privileged",
        3: "every user-sensitive instruction is privileged",
    }[theorem]
    offenders: list[Offender] = []
    undecided: list[str] = []
    for c in classes:
        sens, priv = c.facts[column], c.facts["privileged"]
        if sens.answer == NO or priv.answer == YES:
            continue
        if sens.answer == YES and priv.answer == NO:
            if column == "user_sensitive":
                kinds = [k for k in SENSITIVITY if c.facts[k].user == YES]
            else:
                kinds = [k for k in SENSITIVITY if c.facts[k].answer == YES]
            offenders.append(Offender(c.insn, kinds, sens.witness, priv.witness))
        else:
            undecided.append(c.insn)
    status = FAILS if offenders else (UNKNOWN if undecided else HOLDS)
    return Condition(theorem, statement, status, offenders, undecided)


def decide(profile: Profile) -> ProfileVerdict:
    """Classify ``profile`` and decide both conditions."""
    classes = classify_profile(profile)
    return ProfileVerdict(
        profile.name,
        classes,
        _condition(1, classes, "sensitive"),
        _condition(3, classes, "user_sensitive"),
    )
