"""Classify every instruction of a profile, each fact decided by Z3.

Nothing here says what any instruction does: every query is built from the
instruction's traced effects (``popek.proofs.symbolic.step``) over free
symbolic states.  The definitions (docs/theory.md states them beside Popek
and Goldberg's):

* **privileged**: for every pair of states differing only in mode, neither
  of which memory-traps (cause MEMORY or PAGE), the instruction traps in
  the user state and not in the supervisor state.  Decided by asking for a
  counterexample pair; UNSAT proves it.
* **control-sensitive**: some state where it retires (does not trap) and
  changes a resource (``spec.state.RESOURCES``: mode, base, bound, IE, PTBR,
  timer, pend, halted, ...) or writes the output port.
* **mode-sensitive**: two states differing only in mode, neither traps, and
  the results differ in some part other than mode itself.
* **location-sensitive**: two states whose R.base and storage differ by a
  relocation x != 0 (storage moved cyclically by x), neither traps, and the
  results differ once the second is moved back by x.
* **resource-sensitive** (our extension), for bound, IE and PTBR: two
  states differing only in that field, neither traps, results differ in
  some other part.  For PTBR both states have paging on and both page
  tables hold the same entries (so every translation is the same): the
  paging analogue of location-sensitivity.
* **user-sensitive**: sensitive with a user-mode state in the witness.
* **innocuous**: not sensitive.

Every state also satisfies: the instruction is in storage at PC and its
fetch does not fault, no interrupt is due, the machine is not halted, and
(except for PTBR-sensitivity) paging is off (PTBR = 0).  Paging, like R, is
virtualized by the memory layer; with it on, every load would read a
different word in the second state of a location pair, and so would look
location-sensitive.  A vtx machine is classified in host mode (GUEST = 0).
Witness states prefer the timer stopped, so replaying them is one clean
instruction.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import z3

from popek.spec.bits import var
from popek.spec.instructions import Insn
from popek.spec.profiles import Profile
from popek.spec.sem import Sem
from popek.spec.state import (
    BASE,
    BOUND,
    FIELD_NAMES,
    HALTED,
    IE,
    MODE,
    NSLOTS,
    PEND,
    PTBR,
    RESOURCES,
    SUPERVISOR,
    TIMER,
    USER,
    Arch,
)

from . import solver
from .concrete import ConcreteState, from_model
from .opaque import access_inputs, causes_known, opaque_trace, translation
from .symbolic import (
    Operands,
    Outcome,
    SymState,
    Translator,
    apply_effects,
    differs,
    fetches,
    fresh_operands,
    fresh_state,
    outputs_differ,
    step,
    well_formed,
)
from .witness import MEMORY_CAUSES, Witness

YES, NO, UNKNOWN = "yes", "no", "unknown"

# Fields whose sensitivity we decide besides mode and location.
RESOURCE_SENSITIVITY = {"bound": BOUND, "ie": IE, "ptbr": PTBR}

# The table's columns, in order.
COLUMNS = (
    "privileged",
    "control",
    "mode",
    "location",
    "bound",
    "ie",
    "ptbr",
    "sensitive",
    "user_sensitive",
    "innocuous",
)


@dataclass
class Fact:
    """One decided property of one instruction."""

    answer: str  # YES, NO or UNKNOWN
    witness: Witness | None = None  # for YES (and for privileged NO: the counterexample)
    user: str = NO  # the answer when a user-mode state must be in the witness
    user_witness: Witness | None = None
    note: str = ""  # why unknown


@dataclass
class Classification:
    insn: str
    facts: dict[str, Fact] = field(default_factory=dict)

    def answer(self, column: str) -> str:
        return self.facts[column].answer


# --------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------
def extension_slots(arch: Arch) -> list[int]:
    """Slots past the classic ones (the vtx extension's), held at 0: a
    machine without the extension never reads them, and a vtx machine is
    classified in host mode."""
    return list(range(HALTED + 1, NSLOTS))


def about_to_run(insn: Insn, st: SymState, ops: Operands, *, paging: bool = False) -> list[z3.BoolRef]:
    """A state in which the machine is about to run ``insn``."""
    cs = [well_formed(st), fetches(insn, st, ops)]
    if not paging:
        cs.append(st.fields[PTBR] == 0)
    cs += [st.fields[s] == 0 for s in extension_slots(st.arch) if s in st.fields]
    return cs


def preferred_quiet(*states: SymState) -> list[z3.BoolRef]:
    """Preferred (not required) in witnesses: the timer stopped, nothing pending."""
    out: list[z3.BoolRef] = []
    for s in states:
        out += [s.fields[TIMER] == 0, s.fields[PEND] == 0]
    return out


def _memtrap(o: Outcome) -> z3.BoolRef:
    return z3.And(o.trapped, z3.Or(*[o.cause == c for c in sorted(MEMORY_CAUSES)]))


def operands_in(model: z3.ModelRef, ops: Operands) -> tuple[int, int, int]:
    """The operands a Z3 model chose, as a witness shows them."""
    return tuple(model.eval(x, model_completion=True).as_long() for x in (ops.rd, ops.rs, ops.imm))  # type: ignore[return-value]


def _mode_pair(st: SymState) -> tuple[SymState, SymState]:
    return st.with_fields(mode=SUPERVISOR), st.with_fields(mode=USER)


def _relocated(st: SymState, x: z3.BitVecRef) -> SymState:
    """``st`` with R.base and all of storage moved up by ``x`` (cyclically)."""
    w = st.arch.word
    a = z3.BitVec("reloc.a", w)
    mem = z3.Lambda([a], z3.Select(st.mem, a - x))
    moved = st.with_fields(base=st.fields[BASE] + x)
    return SymState(moved.fields, moved.regs, mem, moved.memsize, st.arch)


def _relocate_concrete(s: ConcreteState, shift: int, mask: int) -> ConcreteState:
    """`_relocated` on a concrete state."""
    S = list(s.S)
    S[BASE] = (S[BASE] + shift) & mask
    return ConcreteState(S, {(a + shift) & mask: v for a, v in s.mem.items()}, s.default, s.memsize)


def _same_tables(st: SymState, p1: z3.BitVecRef, p2: z3.BitVecRef) -> z3.BoolRef:
    """The page tables at ``p1`` and ``p2`` read the same entry for every
    page (entries read through the spec's physical load)."""
    arch = st.arch
    k = z3.BitVec("pte.k", arch.word)
    load = Sem(arch).load_phys(var("pte.addr", arch.word))
    one = Translator(st, {"pte.addr": p1 + k})(load)
    two = Translator(st, {"pte.addr": p2 + k})(load)
    pages = 1 << (arch.word - arch.page_bits)
    return z3.ForAll([k], z3.Implies(z3.ULT(k, pages), one == two))


# --------------------------------------------------------------------------
# The queries
# --------------------------------------------------------------------------
class _Classifier:
    def __init__(self, arch: Arch, insn: Insn):
        self.insn = insn
        self.arch = arch
        self.prefix = insn.name

    def _witness(self, claim: str, model, ops, states, labels, **kw) -> Witness:
        concrete = [from_model(model, states[0])]
        if "shift" in kw:  # a relocated pair: the second state is the first moved
            kw["shift"] = shift = model.eval(kw["shift"], model_completion=True).as_long()
            concrete.append(_relocate_concrete(concrete[0], shift, self.arch.mask))
        else:
            concrete += [from_model(model, s) for s in states[1:]]
        return Witness(
            f"{self.prefix}/{claim}", claim, self.insn.name, operands_in(model, ops), concrete,
            labels, **kw,
        )

    # -- privileged ----------------------------------------------------------
    def privileged(self) -> Fact:
        st, ops = fresh_state("s", self.arch), fresh_operands("op", self.arch)
        sup, usr = _mode_pair(st)
        o_sup, o_usr = step(self.insn, sup, ops), step(self.insn, usr, ops)
        base = about_to_run(self.insn, sup, ops) + about_to_run(self.insn, usr, ops)
        base += [z3.Not(_memtrap(o_sup)), z3.Not(_memtrap(o_usr))]
        counter = solver.check(
            base + [z3.Or(z3.Not(o_usr.trapped), o_sup.trapped)], prefer=preferred_quiet(st)
        )
        labels = ["supervisor", "user"]
        rel = "differ only in mode"
        if counter.status == solver.SAT:
            w = self._witness("unprivileged", counter.model, ops, [sup, usr], labels, relation=rel)
            return Fact(NO, w)
        if counter.status == solver.UNKNOWN:
            return Fact(UNKNOWN, note=counter.reason)
        example = solver.check(base + [o_usr.trapped, z3.Not(o_sup.trapped)], prefer=preferred_quiet(st))
        if example.status == solver.UNKNOWN:
            return Fact(UNKNOWN, note=example.reason)
        if example.status == solver.UNSAT:
            # P&G's definition holds vacuously: no pair avoids a memory trap
            return Fact(YES, note="vacuously: every pair of states memory-traps")
        w = self._witness("privileged", example.model, ops, [sup, usr], labels, relation=rel)
        return Fact(YES, w)

    # -- a property with a user-mode variant ------------------------------------
    def _with_user(self, claim: str, build) -> Fact:
        """Decide ``claim`` first with a user-mode state (a YES then answers
        both), else without the restriction."""
        cs, prefer, ops, states, labels, kw, user_mode = build()
        user = solver.check(cs + ([user_mode] if user_mode is not None else []), prefer=prefer)
        if user.status == solver.SAT:
            name = f"{claim}_user" if user_mode is not None else claim
            w = self._witness(name, user.model, ops, states, labels, **kw)
            return Fact(YES, w, YES, w)
        user_answer = UNKNOWN if user.status == solver.UNKNOWN else NO
        if user_mode is None:  # every witness has a user-mode state: one query decides
            return Fact(user_answer, None, user_answer, note=user.reason)
        any_mode = solver.check(cs, prefer=prefer)
        if any_mode.status == solver.SAT:
            w = self._witness(claim, any_mode.model, ops, states, labels, **kw)
            return Fact(YES, w, user_answer)
        if any_mode.status == solver.UNKNOWN:
            return Fact(UNKNOWN, None, user_answer, note=any_mode.reason)
        return Fact(NO, None, NO)  # no witness in any mode, so none in user mode

    def control(self) -> Fact:
        def build():
            st, ops = fresh_state("s", self.arch), fresh_operands("op", self.arch)
            o = step(self.insn, st, ops)
            changed = [o.post.fields[r] != st.fields[r] for r in RESOURCES if r in st.fields]
            if o.outputs:
                changed.append(z3.BoolVal(True))
            cs = about_to_run(self.insn, st, ops) + [z3.Not(o.trapped), z3.Or(z3.BoolVal(False), *changed)]
            return cs, preferred_quiet(st), ops, [st], ["state"], {}, st.fields[MODE] == USER

        return self._with_user("control", build)

    def mode(self) -> Fact:
        def build():
            st, ops = fresh_state("s", self.arch), fresh_operands("op", self.arch)
            sup, usr = _mode_pair(st)
            o1, o2 = step(self.insn, sup, ops), step(self.insn, usr, ops)
            cs = about_to_run(self.insn, sup, ops) + about_to_run(self.insn, usr, ops)
            cs += [z3.Not(o1.trapped), z3.Not(o2.trapped)]
            cs.append(z3.Or(differs(o1.post, o2.post, skip=(MODE,)), outputs_differ(o1, o2)))
            kw = {"relation": "differ only in mode"}
            return cs, preferred_quiet(st), ops, [sup, usr], ["supervisor", "user"], kw, None

        return self._with_user("mode", build)

    def location(self) -> Fact:
        if relocation_lemma(self.arch) and self._location_opaque_unsat():
            return Fact(NO, None, NO)
        x = z3.BitVec("reloc.x", self.arch.word)

        def build():
            st, ops = fresh_state("s", self.arch), fresh_operands("op", self.arch)
            moved = _relocated(st, x)
            o1, o2 = step(self.insn, st, ops), step(self.insn, moved, ops)
            cs = about_to_run(self.insn, st, ops) + about_to_run(self.insn, moved, ops)
            cs += [x != 0, z3.Not(o1.trapped), z3.Not(o2.trapped)]
            cs.append(z3.Or(differs(o1.post, o2.post, shift=x), outputs_differ(o1, o2)))
            kw = {"relation": "R.base and storage moved by x", "shift": x}
            return cs, preferred_quiet(st), ops, [st, moved], ["state", "relocated"], kw, st.fields[MODE] == USER

        return self._with_user("location", build)

    def _location_opaque_unsat(self) -> bool:
        """Location-sensitivity with translation opaque (``proofs/opaque.py``):
        each access of the relocated run lands x above the same access of the
        first run (`relocation_lemma`).  UNSAT proves the instruction not
        location-sensitive, in any mode, without Z3 redoing address
        arithmetic; anything else sends the question to the full query."""
        arch = self.arch
        x = z3.BitVec("reloc.x", arch.word)
        st, ops = fresh_state("s", arch), fresh_operands("op", arch)
        moved = _relocated(st, x)
        fx, accesses = opaque_trace(self.insn, arch)
        ins1 = {**ops.as_dict(), **access_inputs("one", accesses, arch)}
        ins2 = {**ops.as_dict(), **access_inputs("two", accesses, arch)}
        o1, o2 = apply_effects(fx, st, ins1), apply_effects(fx, moved, ins2)
        cs = [well_formed(st), well_formed(moved), st.fields[PTBR] == 0, x != 0,
              z3.Not(o1.trapped), z3.Not(o2.trapped)]
        cs += [st.fields[s] == 0 for s in extension_slots(arch) if s in st.fields]
        cs += causes_known(accesses, arch, ins1) + causes_known(accesses, arch, ins2)
        for vaddr, name, _write in accesses:
            same = Translator(st, ins1)(vaddr) == Translator(moved, ins2)(vaddr)
            ok = z3.And(ins1[f"{name}.fault"] == 0, ins2[f"{name}.fault"] == 0)
            cs.append(z3.Implies(z3.And(same, ok),
                                 ins2[f"{name}.phys"] == ins1[f"{name}.phys"] + x))
        cs.append(z3.Or(differs(o1.post, o2.post, shift=x), outputs_differ(o1, o2)))
        return solver.check(cs).status == solver.UNSAT

    def resource(self, name: str) -> Fact:
        slot = RESOURCE_SENSITIVITY[name]
        paging = slot == PTBR

        def build():
            st, ops = fresh_state("s", self.arch), fresh_operands("op", self.arch)
            other = z3.BitVec(f"{name}.other", st.fields[slot].size())
            two = st.with_fields(**{FIELD_NAMES[slot]: other})
            o1, o2 = step(self.insn, st, ops), step(self.insn, two, ops)
            cs = about_to_run(self.insn, st, ops, paging=paging) + about_to_run(self.insn, two, ops, paging=paging)
            cs += [other != st.fields[slot], z3.Not(o1.trapped), z3.Not(o2.trapped)]
            if paging:
                cs += [st.fields[PTBR] != 0, other != 0, _same_tables(st, st.fields[PTBR], other)]
            cs.append(z3.Or(differs(o1.post, o2.post, skip=(slot,)), outputs_differ(o1, o2)))
            kw = {"relation": f"differ only in {name}", "varied": slot}
            return cs, preferred_quiet(st), ops, [st, two], ["state", f"other {name}"], kw, st.fields[MODE] == USER

        return self._with_user(name, build)

    def classify(self) -> Classification:
        c = Classification(self.insn.name)
        c.facts["privileged"] = self.privileged()
        c.facts["control"] = self.control()
        c.facts["mode"] = self.mode()
        c.facts["location"] = self.location()
        for name in RESOURCE_SENSITIVITY:
            c.facts[name] = self.resource(name)
        _derive(c)
        return c


@lru_cache(maxsize=None)
def relocation_lemma(arch: Arch) -> bool:
    """Proved (True) or not: with paging off, when an address translates
    without a fault both in a state and in its copy relocated by x, the
    copy's physical address is the first's plus x.  Reads and writes."""
    x, a = z3.BitVec("lemma.x", arch.word), z3.BitVec("lemma.vaddr", arch.word)
    for write in (False, True):
        fx, phys, _ = translation(arch, write)
        st = fresh_state("lemma", arch)
        moved = _relocated(st, x)
        o1, o2 = apply_effects(fx, st, {"vaddr": a}), apply_effects(fx, moved, {"vaddr": a})
        p1, p2 = Translator(st, {"vaddr": a})(phys), Translator(moved, {"vaddr": a})(phys)
        cs = [st.fields[PTBR] == 0, z3.Not(o1.trapped), z3.Not(o2.trapped), p2 != p1 + x]
        cs += [st.fields[s] == 0 for s in extension_slots(arch) if s in st.fields]
        if solver.check(cs).status != solver.UNSAT:
            return False
    return True


def _any(answers: list[str]) -> str:
    if YES in answers:
        return YES
    return UNKNOWN if UNKNOWN in answers else NO


SENSITIVITY = ("control", "mode", "location", *RESOURCE_SENSITIVITY)


def _derive(c: Classification) -> None:
    """sensitive, user-sensitive and innocuous follow from the decided facts."""
    facts = [c.facts[k] for k in SENSITIVITY]
    sensitive = _any([f.answer for f in facts])
    first = next((f.witness for f in facts if f.answer == YES), None)
    c.facts["sensitive"] = Fact(sensitive, first)
    user = _any([f.user for f in facts])
    first_user = next((f.user_witness for f in facts if f.user_witness is not None), None)
    c.facts["user_sensitive"] = Fact(user, first_user)
    innocuous = {YES: NO, NO: YES, UNKNOWN: UNKNOWN}[sensitive]
    c.facts["innocuous"] = Fact(innocuous)


@lru_cache(maxsize=None)
def _classify_definition(insn: Insn, arch: Arch) -> Classification:
    return _Classifier(arch, insn).classify()


def classify_insn(profile: Profile, insn: Insn) -> Classification:
    """The classification of one instruction of ``profile``.

    Cached per definition and machine: an instruction object shared by
    several profiles (pg's ``add`` is x86's) is decided once, and its
    witnesses replay on any profile that has it (same opcode, same
    behaviour)."""
    return _classify_definition(insn, profile.arch)


def classify_profile(profile: Profile) -> list[Classification]:
    return [classify_insn(profile, i) for i in profile.insns]
