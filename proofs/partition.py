"""Type 0 (partitioning), proved: what the partition register buys, and what it cannot.

On a partitioned CPU (``spec/partition.py``) a guest's kernel runs in real
supervisor mode with nothing between it and the hardware.  Trap-and-emulate
must catch every sensitive instruction; a partitioned host catches none, so
the question changes: does each instruction, run *directly, in either
mode*, inside a partition ``(PBASE, PSIZE)``, do exactly what it does on a
bare machine of ``PSIZE`` words?  The abstraction function is the identity
on every register and field (mode, R, IE, PTBR, timer, ...: the guest's
are the CPU's), and storage is relocated: real word ``PBASE + a`` is
guest word ``a`` for ``a < PSIZE``.

For every instruction, and for the trap mechanism, `prove_insn` asks Z3
for a bare state V (any mode, paging on or off, the instruction in storage
at PC) and a partition such that the partitioned CPU in the same state
with V's storage at ``PBASE`` differs from the bare machine: in whether it
traps, the cause or info, any field or register, any word of the
partition (relocated), the output, or any host word *outside* the
partition (confinement: safety in supervisor mode).  UNSAT proves the
instruction native.  The machine is configured as `Machine.set_partition`
requires: ``PSIZE >= 32`` and ``PBASE + PSIZE <= MEMSIZE``.

`partition_report` puts this beside the base profile's classification
(``classify.py``): the instructions that are sensitive or privileged there,
the ones a VMM must trap or translate, are the ones that *stop being a
problem* once proved native here.  And it says what is not virtualized:
the resources the guest writes directly on the CPU (found in the traced
effects, each shown by a Z3 witness: a supervisor state inside a partition
where the instruction changes it without trapping) are dedicated, not
virtualized (there is one timer per CPU, and it is the guest's); the
partition register is read by every access and written by no
instruction, so it is not virtualized at all: a partitioned guest cannot
partition its own guests.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import z3

from popek.spec.instructions import Insn
from popek.spec.partition import PBASE, PSIZE, partitioned
from popek.spec.profiles import Profile
from popek.spec.state import FIELD_NAMES, HALTED, MODE, RESOURCES, SUPERVISOR, Arch
from popek.spec.trace import trace, trace_trap

from . import solver
from .classify import NO, UNKNOWN, YES, extension_slots, preferred_quiet
from .symbolic import (
    MIN_MEMSIZE,
    Outcome,
    SymState,
    apply_effects,
    fetches,
    fresh_operands,
    fresh_state,
    well_formed,
)

TRAP = "<trap>"  # the trap mechanism, proved like an instruction


@dataclass
class NativeResult:
    insn: str
    native: str  # YES: runs in the partition exactly as on bare; NO; UNKNOWN
    note: str = ""  # for NO: what differed, and where


@dataclass
class Dedicated:
    """A resource the guest changes directly on its CPU, with the witness."""

    resource: str
    insn: str
    before: int
    after: int


@dataclass
class PartitionReport:
    profile: str
    native: list[NativeResult]
    problems: dict[str, list[str]] = field(default_factory=dict)  # column -> insns, on the base profile
    dedicated: list[Dedicated] = field(default_factory=list)
    partition_readers: int = 0  # instructions whose effects read the partition register
    partition_writers: int = 0  # ... and write it (none can: it is no state slot)

    @property
    def solved(self) -> list[str]:
        """Instructions that need a VMM on the base profile and run natively here."""
        ok = {r.insn for r in self.native if r.native == YES}
        return sorted({i for names in self.problems.values() for i in names} & ok)


def _partition_inputs(arch: Arch) -> tuple[z3.BitVecRef, z3.BitVecRef]:
    return z3.BitVec("part.base", arch.word), z3.BitVec("part.size", arch.word)


def _relocated_view(real: SymState, pbase: z3.BitVecRef, psize: z3.BitVecRef, arch: Arch) -> SymState:
    """The bare machine the partition stands for: the same fields and
    registers, storage read through the partition, PSIZE words of it."""
    a = z3.BitVec("guest.addr", arch.word)
    mem = z3.Lambda([a], z3.Select(real.mem, pbase + a))
    return SymState(real.fields, real.regs, mem, psize, arch)


def _configured(real: SymState, pbase: z3.BitVecRef, psize: z3.BitVecRef) -> list[z3.BoolRef]:
    w = real.arch.word
    end = z3.ZeroExt(1, pbase) + z3.ZeroExt(1, psize)
    return [z3.UGE(psize, MIN_MEMSIZE), z3.ULE(end, z3.ZeroExt(1, real.memsize)), z3.UGE(real.memsize, MIN_MEMSIZE)] + [
        z3.BitVecVal(0, 1) == z3.Extract(w, w, end)
    ]


def _differs(r: Outcome, v: Outcome, real: SymState, pbase, psize, arch: Arch) -> tuple[z3.BoolRef, list[tuple[str, z3.BoolRef]]]:
    """Some observable difference between the partitioned run ``r`` and the
    bare run ``v``, with each part named (for the note of a failure)."""
    parts: list[tuple[str, z3.BoolRef]] = [("trapped", r.trapped != v.trapped)]
    parts.append(("cause/info", z3.And(v.trapped, z3.Or(r.cause != v.cause, r.info != v.info))))
    ran = z3.Not(v.trapped)
    for s in v.post.fields:
        parts.append((FIELD_NAMES[s], z3.And(ran, r.post.fields[s] != v.post.fields[s])))
    k = z3.FreshConst(z3.BitVecSort(arch.reg_bits), "which_reg")
    parts.append(("a register", z3.And(ran, z3.Select(r.post.regs, k) != z3.Select(v.post.regs, k))))
    # Storage, write by write (both runs record the same writes in the same
    # order: one trace, two address translations): each lands inside the
    # partition, at the bare write's address moved up by PBASE, with the
    # same value.  That makes the partition's words the bare machine's,
    # relocated, and leaves every host word outside the partition as it
    # was; Z3 decides it far faster than a comparison of whole storages.
    if len(r.writes) != len(v.writes):
        parts.append(("the storage written", ran))
    for k, ((ra, rv), (va, vv)) in enumerate(zip(r.writes, v.writes)):
        parts.append((f"storage write {k + 1} (outside the partition, or moved)",
                      z3.And(ran, z3.Or(ra != pbase + va, z3.Not(z3.ULT(va, psize))))))
        parts.append((f"storage write {k + 1}'s value", z3.And(ran, rv != vv)))
    if len(r.outputs) != len(v.outputs):
        parts.append(("the output", ran))
    else:
        parts += [("the output", z3.And(ran, p != q)) for p, q in zip(r.outputs, v.outputs)]
    return z3.Or(*[c for _, c in parts]), parts


def prove_insn(profile: Profile, insn: Insn | None) -> NativeResult:
    """Is ``insn`` (None: the trap mechanism) native in a partition of
    ``profile``'s partitioned machine?  See the module docstring."""
    base_arch = profile.arch
    part_arch = partitioned(profile).arch
    real = fresh_state("real", part_arch)
    pbase, psize = _partition_inputs(part_arch)
    inputs = {PBASE: pbase, PSIZE: psize}
    bare = _relocated_view(real, pbase, psize, base_arch)
    bare_arch_state = SymState(bare.fields, bare.regs, bare.mem, bare.memsize, base_arch)
    if insn is None:
        w = base_arch.word
        extra = {"cause": z3.BitVec("trap.cause", w), "info": z3.BitVec("trap.info", w)}
        v = apply_effects(trace_trap(base_arch), bare_arch_state, extra)
        r = apply_effects(trace_trap(part_arch), real, {**extra, **inputs})
        pre = [well_formed(bare_arch_state)]
        name = TRAP
    else:
        ops = fresh_operands("op", part_arch)
        v = apply_effects(trace(insn, base_arch), bare_arch_state, ops.as_dict())
        r = apply_effects(trace(insn, part_arch), real, {**ops.as_dict(), **inputs})
        pre = [well_formed(bare_arch_state), fetches(insn, bare_arch_state, ops)]
        name = insn.name
    pre += [real.fields[s] == 0 for s in extension_slots(base_arch) if s in real.fields]
    pre += _configured(real, pbase, psize)
    _, parts = _differs(r, v, real, pbase, psize, base_arch)
    # One query per observable part: each is small, where their disjunction
    # is one query Z3 often cannot finish for a store under paging.
    unknown = []
    for label, part in parts:
        answer = solver.check(pre + [part], prefer=preferred_quiet(real), portfolio=solver.ARITHMETIC_PORTFOLIO)
        if answer.status == solver.UNKNOWN:
            unknown.append(f"{label}: {answer.reason}")
        elif answer.status == solver.SAT:
            model = answer.model
            at = {k: model.eval(x, model_completion=True).as_long() for k, x in (("pbase", pbase), ("psize", psize))}
            return NativeResult(name, NO, f"{label} differs (partition base {at['pbase']:#x}, size {at['psize']:#x})")
    if unknown:
        return NativeResult(name, UNKNOWN, "; ".join(unknown))
    return NativeResult(name, YES)


def dedicated_resources(profile: Profile) -> list[Dedicated]:
    """Each resource some instruction's traced effects write, with a Z3
    witness that the instruction changes it without trapping, in real
    supervisor mode inside a partition: the guest's own, not virtualized."""
    part = partitioned(profile)
    arch = part.arch
    found: list[Dedicated] = []
    seen: set[str] = set()
    for insn in part.insns:
        fx = trace(insn, arch)
        targets = [s for s in RESOURCES if s in fx.field_writes and s not in extension_slots(arch)]
        if fx.outputs and "output port" not in seen:
            found += _output_witness(insn, fx, profile)
            seen.add("output port")
        for slot in targets:
            name = FIELD_NAMES[slot]
            if name in seen:
                continue
            real = fresh_state("ded", arch)
            pbase, psize = _partition_inputs(arch)
            ops = fresh_operands("dop", arch)
            o = apply_effects(fx, real, {**ops.as_dict(), PBASE: pbase, PSIZE: psize})
            bare = _relocated_view(real, pbase, psize, profile.arch)
            cs = [well_formed(bare), fetches(insn, bare, ops), real.fields[MODE] == SUPERVISOR, z3.Not(o.trapped),
                  o.post.fields[slot] != real.fields[slot], real.fields[HALTED] == 0]  # fmt: skip
            cs += [real.fields[s] == 0 for s in extension_slots(arch) if s in real.fields]
            cs += _configured(real, pbase, psize)
            answer = solver.check(cs, portfolio=solver.ARITHMETIC_PORTFOLIO)
            if answer.status == solver.SAT:
                m = answer.model
                before = m.eval(real.fields[slot], model_completion=True).as_long()
                after = m.eval(o.post.fields[slot], model_completion=True).as_long()
                found.append(Dedicated(name, insn.name, before, after))
                seen.add(name)
    return found


def _output_witness(insn: Insn, fx, profile: Profile) -> list[Dedicated]:
    """The output port: a supervisor state in a partition where ``insn``
    writes it without trapping (the port is the CPU's, not a copy)."""
    arch = partitioned(profile).arch
    real = fresh_state("out", arch)
    pbase, psize = _partition_inputs(arch)
    ops = fresh_operands("oop", arch)
    o = apply_effects(fx, real, {**ops.as_dict(), PBASE: pbase, PSIZE: psize})
    bare = _relocated_view(real, pbase, psize, profile.arch)
    cs = [well_formed(bare), fetches(insn, bare, ops), real.fields[MODE] == SUPERVISOR, z3.Not(o.trapped)]
    cs += [real.fields[s] == 0 for s in extension_slots(arch) if s in real.fields]
    answer = solver.check(cs + _configured(real, pbase, psize), portfolio=solver.ARITHMETIC_PORTFOLIO)
    if answer.status != solver.SAT:
        return []
    value = answer.model.eval(o.outputs[0], model_completion=True).as_long()
    return [Dedicated("output port", insn.name, 0, value)]


def _reads_partition(insn: Insn, arch: Arch) -> bool:
    return bool({PBASE, PSIZE} & trace(insn, arch).inputs())


@lru_cache(maxsize=None)
def _problems_on(profile: Profile) -> dict[str, list[str]]:
    """On the base profile: the privileged instructions (a VMM must emulate
    them) and the sensitive ones (a VMM must catch them), from the
    classification Z3 decides."""
    from .classify import classify_profile

    out: dict[str, list[str]] = {"privileged": [], "sensitive": []}
    for c in classify_profile(profile):
        for column in out:
            if c.answer(column) == YES:
                out[column].append(c.insn)
    return out


def partition_report(profile: Profile, *, names: list[str] | None = None) -> PartitionReport:
    """Every instruction of ``profile`` (or those ``names``) and the trap
    mechanism proved native or not in a partition, beside what the base
    profile's classification makes a VMM's problem, and what is not
    virtualized."""
    insns = [i for i in profile.insns if names is None or i.name in names]
    native = [prove_insn(profile, i) for i in insns]
    if names is None or TRAP in names:
        native.append(prove_insn(profile, None))
    arch = partitioned(profile).arch
    return PartitionReport(
        profile.name,
        native,
        _problems_on(profile),
        dedicated_resources(profile),
        sum(_reads_partition(i, arch) for i in partitioned(profile).insns),
        0,  # the partition register is no state slot: no instruction's effects can write it
    )


def format_report(rep: PartitionReport) -> str:
    """The report as lines for a terminal (`popek prove --host-type 0`)."""
    yes = [r.insn for r in rep.native if r.native == YES]
    rows = [f"type 0 (partitioning) on {rep.profile}+partition: {len(yes)} of {len(rep.native)} proved native "
            "(in either mode, inside a partition, exactly as on a bare machine of the partition's size)"]  # fmt: skip
    for r in rep.native:
        if r.native != YES:
            rows.append(f"  {r.insn}: {r.native.upper()}  {r.note}")
    for column, names in rep.problems.items():
        if names:
            ok = [n for n in names if n in yes]
            why = "a VMM emulates them" if column == "privileged" else "a VMM must catch them"
            rows.append(f"  {column} on {rep.profile} ({why}): {', '.join(names)}")
            rows.append(f"    no longer a problem in a partition: {', '.join(ok) or 'none'}")
    if rep.dedicated:
        rows.append("  not virtualized, dedicated: the guest changes these on its own CPU, without a trap:")
        for d in rep.dedicated:
            if d.resource == "output port":
                rows.append(f"    output port (e.g. {d.insn} writes {d.after:#x} in supervisor mode)")
            else:
                rows.append(f"    {d.resource} (e.g. {d.insn}: {d.before:#x} -> {d.after:#x} in supervisor mode)")
    rows.append(
        f"  not virtualized at all: the partition register (read by every fetch and by the storage accesses of "
        f"{rep.partition_readers} instructions, written by {rep.partition_writers}): no guest can partition its own guests"
    )
    return "\n".join(rows)
