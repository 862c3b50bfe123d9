"""Safety (resource control), proved per instruction for all user-mode states.

The VMM must keep control of the machine: whatever the guest runs directly
in user mode must not reach beyond what the VMM gave it.  For every
instruction of a profile we ask Z3 for a user-mode state (paging off) where
the instruction retires (does not trap) and either

* writes storage outside ``[base, base + bound)``, the relocation window the
  VMM set, or
* changes a resource (``spec.state.RESOURCES``: mode, base, bound, IE,
  PTBR, and also the timer, pending tick and halt latch) or writes the
  output port.

UNSAT proves the instruction safe.  A satisfying state is a witness that
replays on the concrete machine.  Paging is off because with it on the
relocation window is not where stores land (the page table, which the VMM
owns, decides that); confining a guest's paging is the memory layer's proof.
Note what this does *not* catch: x86's ``popf`` in user mode leaves IE as
it was, so it is safe, and its failure is one of fidelity (simulation.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import z3

from popek.spec.instructions import Insn
from popek.spec.profiles import Profile
from popek.spec.state import BASE, BOUND, MODE, RESOURCES, USER

from . import solver
from .classify import YES, NO, UNKNOWN, preferred_quiet, operands_in, about_to_run
from .concrete import from_model
from .symbolic import fresh_operands, fresh_state, step
from .witness import Witness


@dataclass
class SafetyResult:
    insn: str
    safe: str  # YES (proved safe), NO (witness) or UNKNOWN
    witness: Witness | None = None
    note: str = ""


def check_insn(profile: Profile, insn: Insn) -> SafetyResult:
    arch = profile.arch
    st, ops = fresh_state("s", arch), fresh_operands("op", arch)
    o = step(insn, st, ops)
    base, bound = st.fields[BASE], st.fields[BOUND]
    escapes = [z3.Not(z3.ULT(addr - base, bound)) for addr, _ in o.writes]
    changed = [o.post.fields[r] != st.fields[r] for r in RESOURCES if r in st.fields]
    if o.outputs:
        changed.append(z3.BoolVal(True))
    cs = about_to_run(insn, st, ops) + [
        st.fields[MODE] == USER,
        z3.Not(o.trapped),
        z3.Or(z3.BoolVal(False), *escapes, *changed),
    ]
    answer = solver.check(cs, prefer=preferred_quiet(st), portfolio=solver.ARITHMETIC_PORTFOLIO)
    if answer.status == solver.UNSAT:
        return SafetyResult(insn.name, YES)
    if answer.status == solver.UNKNOWN:
        return SafetyResult(insn.name, UNKNOWN, note=answer.reason)
    w = Witness(f"{insn.name}/unsafe", "unsafe", insn.name, operands_in(answer.model, ops),
                [from_model(answer.model, st)], ["user"])
    return SafetyResult(insn.name, NO, w)


@dataclass
class SafetyReport:
    profile: str
    results: list[SafetyResult]

    @property
    def status(self) -> str:
        answers = [r.safe for r in self.results]
        if NO in answers:
            return NO
        return UNKNOWN if UNKNOWN in answers else YES

    @property
    def failures(self) -> list[SafetyResult]:
        return [r for r in self.results if r.safe == NO]


def prove_safety(profile: Profile) -> SafetyReport:
    return SafetyReport(profile.name, [check_insn(profile, i) for i in profile.insns])
