"""One-step fidelity of trap-and-emulate, proved for all states.

A trap-and-emulate VMM runs its guest directly on the machine in real user
mode and keeps the guest's *virtual* state; every trap comes to the VMM,
which emulates the trapping instruction on the virtual state.  We prove
that it simulates the bare machine one instruction at a time, for every
state (Z3, not sampling), by exhibiting its abstraction function and
checking two obligations per instruction.

The abstraction function alpha (virtual state V, VMM allocation) |-> real state R
----------------------------------------------------------------------------------
The VMM owns real storage ``[alloc_base, alloc_base + alloc_size)`` and
gives it to the guest as the guest's whole physical storage (the guest's
MEMSIZE is ``alloc_size``).  Then R = alpha(V) is:

* registers, flags, PC:   R's = V's;
* mode:                   user, whatever V's mode (the VMM keeps V's mode);
* base:                   alloc_base + V.base (R composed with the allocation);
* bound:                  V.bound clipped to the allocation:
                          min(V.bound, alloc_size - V.base), 0 if V.base > alloc_size;
* IE:                     on (the VMM keeps V's IE and delivers its interrupts);
* PTBR:                   0, and V's PTBR is 0 (guest paging is the memory layer's
                          business: shadow or nested tables, not this proof);
* timer, pending tick:    the VMM's own (any values); V's are kept by the VMM;
* halted:                 0;
* storage:                R[alloc_base + a] = V[a] for a < alloc_size; every other
                          word is the host's (any values).

The VMM keeps V's mode, IE, timer, pending tick, halted latch and PTBR
("kept fields"): nothing the guest does directly can change them, so a
directly run instruction must leave them as they were in V.

The obligations, for every instruction I of the profile
-------------------------------------------------------
1. **Direct execution commutes.**  For every V and allocation, if the real
   machine at R = alpha(V) fetches I and I does not trap in real user mode,
   then I does not trap on V either, I's result on V has the kept fields
   unchanged, and alpha(I(V)) = I(R): same registers, flags, PC, R, IE,
   storage inside *and outside* the allocation, output.
2. **Trapping execution is emulated.**  If I traps on R, the trap changed
   nothing (the spec's rule: a trapping instruction has no effect), so the
   VMM still holds V; it emulates I by applying the same spec semantics to
   V (``symbolic.step``, or the concrete machine compiled from the same
   definition), giving exactly the bare machine's virtual result.  What must
   be proved is that the VMM can find I: the virtual fetch at V's PC reads
   the same words as the real one, and faults exactly when the real fetch
   faults, with the same cause and fault address (obligation 0, checked
   once per profile).

With obligation 0 and, for every instruction, obligation 1 (2 holds by
construction), one step of the guest under the VMM equals one step of the
bare machine under alpha, and fidelity of every program follows by
induction on the number of steps.  Timer interrupts are the VMM's to
deliver and are outside this one-instruction proof.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import z3

from popek.spec.instructions import Insn
from popek.spec.profiles import Profile
from popek.spec.state import (
    BASE,
    BOUND,
    FIELD_NAMES,
    HALTED,
    IE,
    MODE,
    PEND,
    PTBR,
    TIMER,
    USER,
    Arch,
)

from . import solver
from .opaque import access_inputs, opaque_trace, translation
from .classify import extension_slots
from .concrete import ConcreteState, array_words, from_model, run_step
from .symbolic import (
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

PROVED, FAILED, UNKNOWN = "proved", "failed", "unknown"


def kept_fields(arch: Arch) -> list[int]:
    """The virtual fields the VMM keeps (not visible in the real state)."""
    return [MODE, IE, TIMER, PEND, HALTED, PTBR] + extension_slots(arch)


@dataclass(frozen=True)
class Allocation:
    """The VMM's share of real storage, as Z3 terms or as integers."""

    base: z3.BitVecRef | int
    size: z3.BitVecRef | int


# --------------------------------------------------------------------------
# alpha, once per back end (Z3 terms for the proof, integers for replay)
# --------------------------------------------------------------------------
def _clipped_bound_z3(vbase, vbound, size):
    room = size - vbase
    return z3.If(z3.ULE(vbase, size), z3.If(z3.ULE(vbound, room), vbound, room), z3.BitVecVal(0, vbase.size()))


def abstraction(v: SymState, alloc: Allocation, host: SymState) -> SymState:
    """alpha(V) as Z3 terms.  ``host`` supplies what alpha leaves to the VMM:
    storage outside the allocation, the real timer and pending tick, and the
    real MEMSIZE."""
    arch = v.arch
    w = arch.word
    fields = dict(v.fields)
    fields[MODE] = z3.BitVecVal(USER, 1)
    fields[IE] = z3.BitVecVal(1, 1)
    fields[BASE] = alloc.base + v.fields[BASE]
    fields[BOUND] = _clipped_bound_z3(v.fields[BASE], v.fields[BOUND], alloc.size)
    fields[PTBR] = z3.BitVecVal(0, w)
    fields[HALTED] = z3.BitVecVal(0, 1)
    fields[TIMER] = host.fields[TIMER]
    fields[PEND] = host.fields[PEND]
    for s in extension_slots(arch):
        if s in fields:
            fields[s] = z3.BitVecVal(0, fields[s].size())
    a = z3.BitVec("alpha.a", w)
    inside = z3.ULT(a - alloc.base, alloc.size)
    mem = z3.Lambda([a], z3.If(inside, z3.Select(v.mem, a - alloc.base), z3.Select(host.mem, a)))
    return SymState(fields, v.regs, mem, host.memsize, arch)


def abstraction_concrete(
    v: ConcreteState, alloc_base: int, alloc_size: int, host: ConcreteState, mask: int
) -> ConcreteState:
    """alpha(V) on integers (for replaying a counterexample)."""
    S = list(v.S)
    S[MODE], S[IE], S[PTBR], S[HALTED] = USER, 1, 0, 0
    S[BASE] = (alloc_base + v.S[BASE]) & mask
    vb, vl = v.S[BASE], v.S[BOUND]
    S[BOUND] = min(vl, alloc_size - vb) if vb <= alloc_size else 0
    S[TIMER], S[PEND] = host.S[TIMER], host.S[PEND]
    for s in _extra_slots_concrete(len(S)):
        S[s] = 0
    mem = {a: x for a, x in host.mem.items() if not (a - alloc_base) & mask < alloc_size}
    for k in range(alloc_size):
        word = v.word(k)
        if word != host.default:
            mem[(alloc_base + k) & mask] = word
    return ConcreteState(S, mem, host.default, host.memsize)


def _extra_slots_concrete(nslots: int) -> list[int]:
    return [s for s in range(HALTED + 1, nslots)]


# --------------------------------------------------------------------------
# The proof
# --------------------------------------------------------------------------
@dataclass
class SimWitness:
    """A virtual state and allocation where direct execution does not commute."""

    insn: str
    ops: tuple[int, int, int]
    virtual: ConcreteState
    real: ConcreteState
    alloc_base: int
    alloc_size: int
    host: ConcreteState  # the host storage and timer the allocation sits in

    def to_json(self) -> dict:
        return {
            "insn": self.insn,
            "operands": dict(zip(("rd", "rs", "imm"), self.ops)),
            "allocation": {"base": self.alloc_base, "size": self.alloc_size},
            "virtual": self.virtual.describe(),
            "real": {"fields": self.real.describe()["fields"], "memsize": self.real.memsize},
        }


@dataclass
class SimResult:
    insn: str
    status: str  # PROVED, FAILED or UNKNOWN
    witness: SimWitness | None = None
    note: str = ""


@dataclass
class SimReport:
    profile: str
    fetch: SimResult  # obligation 0: the translation lemma (fetch included)
    results: list[SimResult]

    @property
    def status(self) -> str:
        all_ = [self.fetch] + self.results
        if any(r.status == FAILED for r in all_):
            return FAILED
        if any(r.status == UNKNOWN for r in all_):
            return UNKNOWN
        return PROVED

    @property
    def failures(self) -> list[SimResult]:
        return [r for r in self.results if r.status == FAILED]


def _setup(arch: Arch):
    """Free V, allocation and host, and R = alpha(V).

    Storage is built the other way round, which is the same relation and
    far easier for Z3: real storage is free, and V's storage is the window
    of it at the allocation (``V[a] = R[alloc_base + a]``; V's words at or
    beyond its MEMSIZE = alloc_size do not exist, so nothing reads them).
    Then alpha's storage for this V is R's storage itself."""
    w = arch.word
    host = fresh_state("host", arch)
    alloc = Allocation(z3.BitVec("alloc.base", w), z3.BitVec("alloc.size", w))
    free_v = fresh_state("virt", arch)
    a = z3.BitVec("window.a", w)
    window = z3.Lambda([a], z3.Select(host.mem, alloc.base + a))
    v = SymState(free_v.fields, free_v.regs, window, free_v.memsize, arch)
    alpha = abstraction(v, alloc, host)
    real = SymState(alpha.fields, alpha.regs, host.mem, host.memsize, arch)
    cs = [
        well_formed(v),
        well_formed(real),
        v.fields[PTBR] == 0,
        v.memsize == alloc.size,
        z3.ULE(alloc.size, host.memsize),
        z3.ULE(alloc.base, host.memsize - alloc.size),
    ]
    cs += [v.fields[s] == 0 for s in extension_slots(arch) if s in v.fields]
    prefer = [v.fields[TIMER] == 0, v.fields[PEND] == 0, host.fields[TIMER] == 0,
              alloc.base != 0]
    return v, host, alloc, real, cs, prefer


def _concretize(model, v, host, alloc, arch, insn_name, ops) -> SimWitness:
    mask = arch.mask

    def num(t) -> int:
        return model.eval(t, model_completion=True).as_long()

    ab, size = num(alloc.base), num(alloc.size)
    entries, default = array_words(model, host.mem)
    host_c = from_model(model, SymState(host.fields, v.regs, host.mem, host.memsize, arch))
    cv = from_model(model, SymState(v.fields, v.regs, host.mem, v.memsize, arch))
    cv.mem = {(a - ab) & mask: x for a, x in entries.items()
              if (a - ab) & mask < size and x != default}
    cv.default = default
    real = abstraction_concrete(cv, ab, size, host_c, mask)
    op_values = tuple(num(x) for x in ops) if ops else (0, 0, 0)
    return SimWitness(insn_name, op_values, cv, real, ab, size, host_c)


# --------------------------------------------------------------------------
# Translation, proved once; instructions, with translation opaque
# --------------------------------------------------------------------------
def _related(
    real: SymState, virt: SymState, alloc: Allocation, accesses, ins_r: dict, ins_v: dict
) -> list[z3.BoolRef]:
    """What the translation lemma says about each access of a real and a
    virtual run: at the same virtual address, the real translation faults
    exactly when the virtual one does, with the same cause and info, and
    otherwise lands at the virtual physical address moved into the
    allocation (which it lies inside)."""
    arch = real.arch
    out: list[z3.BoolRef] = []
    for vaddr, name, write in accesses:
        causes = translation(arch, write)[2]
        va_r, va_v = Translator(real, ins_r)(vaddr), Translator(virt, ins_v)(vaddr)
        fr, fv = ins_r[f"{name}.fault"] == 1, ins_v[f"{name}.fault"] == 1
        cr, cv = ins_r[f"{name}.cause"], ins_v[f"{name}.cause"]
        ir, iv = ins_r[f"{name}.info"], ins_v[f"{name}.info"]
        pr, pv = ins_r[f"{name}.phys"], ins_v[f"{name}.phys"]
        out += [
            z3.Implies(fr, z3.Or(*[cr == int(c) for c in causes])),
            z3.Implies(fv, z3.Or(*[cv == int(c) for c in causes])),
            z3.Implies(
                va_r == va_v,
                z3.And(
                    fr == fv,
                    z3.Implies(fr, z3.And(cr == cv, ir == iv)),
                    z3.Implies(z3.Not(fr), z3.And(pr == alloc.base + pv, z3.ULT(pv, alloc.size))),
                ),
            ),
        ]
    return out


@lru_cache(maxsize=None)
def translation_lemma(arch: Arch, write: bool) -> SimResult:
    """For every V, allocation and virtual address: translating it in R =
    alpha(V) faults exactly when translating it in V does, with the same
    cause and info, and otherwise gives V's physical address moved into the
    allocation.  Decided per case of alpha's bound (V.base beyond the
    allocation, V's R inside it, V's R clipped), which Z3 finds far easier
    than the whole at once."""
    name = f"(translation, {'write' if write else 'read'})"
    fx, phys, _ = translation(arch, write)
    v, host, alloc, real, cs, prefer = _setup(arch)
    a = z3.BitVec("lemma.vaddr", arch.word)
    o_r, o_v = apply_effects(fx, real, {"vaddr": a}), apply_effects(fx, v, {"vaddr": a})
    p_r, p_v = Translator(real, {"vaddr": a})(phys), Translator(v, {"vaddr": a})(phys)
    vb, vl, size = v.fields[BASE], v.fields[BOUND], alloc.size
    cases = (
        z3.UGT(vb, size),
        z3.And(z3.ULE(vb, size), z3.ULE(vl, size - vb)),
        z3.And(z3.ULE(vb, size), z3.UGT(vl, size - vb)),
    )
    wrong = (
        z3.And(o_r.trapped, z3.Not(o_v.trapped)),
        z3.And(z3.Not(o_r.trapped), o_v.trapped),
        z3.And(o_r.trapped, z3.Or(o_r.cause != o_v.cause, o_r.info != o_v.info)),
        z3.And(z3.Not(o_r.trapped),
               z3.Or(p_r != alloc.base + p_v, z3.Not(z3.ULT(p_v, alloc.size)))),
    )
    for case in cases:
        for bad in wrong:
            answer = solver.check(cs + [case, bad], prefer=prefer)
            if answer.status == solver.UNKNOWN:
                return SimResult(name, UNKNOWN, note=answer.reason)
            if answer.status == solver.SAT:
                return SimResult(name, FAILED, _concretize(answer.model, v, host, alloc, arch,
                                                           name, None))
    return SimResult(name, PROVED)


def direct_commutes(profile: Profile, insn: Insn) -> SimResult:
    """Obligation 1 for one instruction.

    Proved with translation opaque (`_OpaqueMemory`, related by the
    translation lemma, which `prove_trap_and_emulate` proves separately):
    the remaining query has no address arithmetic and is quick.  If that
    query finds a counterexample, the full semantics (real translation and
    the instruction fetched from storage) is asked for one, so a reported
    failure is a genuine, replayable one."""
    arch = profile.arch
    v, host, alloc, real, cs, prefer = _setup(arch)
    ops = fresh_operands("op", arch)
    fx, accesses = opaque_trace(insn, arch)
    ins_r = {**ops.as_dict(), **access_inputs("real", accesses, arch)}
    ins_v = {**ops.as_dict(), **access_inputs("virt", accesses, arch)}
    o_r, o_v = apply_effects(fx, real, ins_r), apply_effects(fx, v, ins_v)
    fast = cs + _related(real, v, alloc, accesses, ins_r, ins_v)
    fast += [z3.Not(o_r.trapped), _mismatch(o_r, o_v, v, host, alloc, exact=False)]
    answer = solver.check(fast)
    if answer.status == solver.UNSAT:
        return SimResult(insn.name, PROVED)
    o_r, o_v = step(insn, real, ops), step(insn, v, ops)
    exact = cs + [fetches(insn, real, ops), z3.Not(o_r.trapped),
                  z3.Or(z3.Not(fetches(insn, v, ops)), _mismatch(o_r, o_v, v, host, alloc, exact=True))]
    answer = solver.check(exact, prefer=prefer, portfolio=solver.ARITHMETIC_PORTFOLIO)
    if answer.status == solver.UNSAT:
        return SimResult(insn.name, PROVED)
    if answer.status == solver.UNKNOWN:
        return SimResult(insn.name, UNKNOWN, note=answer.reason)
    w = _concretize(answer.model, v, host, alloc, arch, insn.name, (ops.rd, ops.rs, ops.imm))
    return SimResult(insn.name, FAILED, w)


def _mismatch(o_r, o_v, v: SymState, host: SymState, alloc: Allocation, *, exact: bool) -> z3.BoolRef:
    """I(R) is not alpha(I(V)), or I changed a kept field of V, or I trapped on V.

    Storage is compared exactly (every word, inside and outside the
    allocation) or, when ``exact`` is false, by the sufficient condition
    that write k of the real run is write k of the virtual run moved into
    the allocation (both runs record the same writes in the same order:
    they trace the one definition)."""
    arch = v.arch
    alpha_post = abstraction(o_v.post, alloc, host)
    r = z3.FreshConst(z3.BitVecSort(arch.reg_bits), "which_reg")
    parts = [
        o_v.trapped,
        z3.Or(*[o_r.post.fields[s] != alpha_post.fields[s] for s in o_r.post.fields]),
        z3.Select(o_r.post.regs, r) != z3.Select(alpha_post.regs, r),
        outputs_differ(o_r, o_v),
        *[o_v.post.fields[s] != v.fields[s] for s in kept_fields(arch) if s in v.fields],
    ]
    if exact:
        parts.append(differs(o_r.post, alpha_post))
    else:
        parts += [
            z3.Or(pr != alloc.base + pv, z3.Not(z3.ULT(pv, alloc.size)), xr != xv)
            for (pr, xr), (pv, xv) in zip(o_r.writes, o_v.writes)
        ]
    return z3.Or(*parts)


def prove_trap_and_emulate(profile: Profile) -> SimReport:
    lemma = [translation_lemma(profile.arch, write) for write in (False, True)]
    failed = [r for r in lemma if r.status != PROVED]
    return SimReport(
        profile.name,
        failed[0] if failed else SimResult("(translation)", PROVED),
        [direct_commutes(profile, i) for i in profile.insns],
    )


# --------------------------------------------------------------------------
# Replay of a counterexample on the concrete machine
# --------------------------------------------------------------------------
@dataclass
class SimReplay:
    ok: bool  # the counterexample reproduces: direct execution really diverges
    message: str


def replay_sim(profile: Profile, w: SimWitness) -> SimReplay:
    """Run the real state one cycle (in real user mode, trap recorded, not
    taken) and the virtual state one cycle on a bare machine of the guest's
    size; the witness reproduces when the real step retires and its result
    is not alpha of the virtual one (or a kept field changed)."""
    mask = profile.arch.mask
    real_rec = run_step(profile, w.real)
    virt_rec = run_step(profile, w.virtual)
    if real_rec.trapped:
        return SimReplay(False, f"the real step trapped ({real_rec.summary()}): it is emulated")
    if virt_rec.trapped:
        return SimReplay(True, f"runs directly on the real machine but traps on the bare one "
                         f"({virt_rec.summary()})")
    v_post = ConcreteState(virt_rec.S, {**w.virtual.mem, **virt_rec.writes}, w.virtual.default,
                           w.virtual.memsize)
    host_after = ConcreteState(list(w.host.S), dict(w.host.mem), w.host.default, w.host.memsize)
    expected = abstraction_concrete(v_post, w.alloc_base, w.alloc_size, host_after, mask)
    differ = []
    kept = [FIELD_NAMES[s] for s in kept_fields(profile.arch)
            if s < len(w.virtual.S) and virt_rec.S[s] != w.virtual.S[s]]
    if kept:
        differ.append("virtual " + "/".join(kept) + " changed behind the VMM's back")
    for s, (x, y) in enumerate(zip(real_rec.S, expected.S)):
        if s in (TIMER, PEND):  # the real timer ticks on its own; alpha leaves it to the VMM
            continue
        if x != y:
            differ.append(f"real {FIELD_NAMES[s]}={x:#x}, alpha gives {y:#x}")
    real_mem = {**w.real.mem, **real_rec.writes}
    addrs = set(real_mem) | set(expected.mem)
    bad = [a for a in sorted(addrs)
           if real_mem.get(a, w.real.default) != expected.mem.get(a, expected.default)]
    if bad:
        differ.append(f"storage differs at {', '.join(hex(a) for a in bad[:4])}")
    if real_rec.out != virt_rec.out:
        differ.append(f"output {real_rec.out} vs {virt_rec.out}")
    return SimReplay(bool(differ), "; ".join(differ) or "no difference")
