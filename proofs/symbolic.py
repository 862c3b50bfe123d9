"""The spec's expressions as Z3 terms: the symbolic back end of ``popek.spec.bits``.

The concrete machine compiles an instruction's traced `Effects` to Python
(``popek.model.codegen``); this module translates the *same* effects to Z3
bit-vector terms over a symbolic state.  No instruction's behaviour is written
here: `step` takes whatever ``popek.spec.trace.trace(insn)`` recorded and
applies it by the rules of ``popek.spec.sem``:

* every read sees the pre-state;
* the first trap condition that holds wins (its cause and info are the
  outcome) and then nothing else happens;
* otherwise every effect happens, register and storage writes in order
  (the later of two writes to one place wins).

The state mirrors the concrete machine's: one bit-vector per named slot with
the width ``spec.state.field_width`` gives, the general registers as an array
indexed by a ``reg_bits``-wide number, storage as an array from words to
words, and MEMSIZE (how many words of storage exist) as a word.  MEMSIZE is a
word wide in the spec, so the proofs cover machines of 32 .. 2**word - 1
words; a machine with exactly 2**word words is outside them.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Callable

import z3

from popek.spec.bits import Expr, slot_of
from popek.spec.instructions import Insn
from popek.spec.memory import fetch_addresses
from popek.spec.sem import Effects, Sem
from popek.spec.state import ARCH, FIELD_NAMES, FIRST_FREE, NSLOTS, Arch, field_width
from popek.spec.trace import trace, trace_tick, trace_undecodable

MIN_MEMSIZE = 2 * FIRST_FREE  # the smallest machine `Machine` accepts


def named_slots(arch: Arch = ARCH) -> range:
    """The state slots after the general registers (pc, flags, ie, ...)."""
    return range(arch.nregs, NSLOTS)


@dataclass(frozen=True)
class SymState:
    """A machine state whose parts are Z3 terms (free constants or values)."""

    fields: dict[int, z3.BitVecRef]
    regs: z3.ArrayRef
    mem: z3.ArrayRef
    memsize: z3.BitVecRef
    arch: Arch = ARCH

    def get(self, slot: int) -> z3.BitVecRef:
        if slot < self.arch.nregs:
            return z3.Select(self.regs, z3.BitVecVal(slot, self.arch.reg_bits))
        return self.fields[slot]

    def reg(self, index: int) -> z3.BitVecRef:
        return z3.Select(self.regs, z3.BitVecVal(index, self.arch.reg_bits))

    def with_fields(self, **named: z3.BitVecRef | int) -> SymState:
        """A copy with some named slots replaced (``mode=0``, ``base=x``)."""
        fields = dict(self.fields)
        for name, value in named.items():
            slot = _slot(name)
            fields[slot] = _bv(value, field_width(slot, self.arch))
        return replace(self, fields=fields)


def _slot(name: str) -> int:
    for slot, n in FIELD_NAMES.items():
        if n == name:
            return slot
    raise KeyError(name)


def _bv(value: z3.BitVecRef | int, width: int) -> z3.BitVecRef:
    return z3.BitVecVal(value, width) if isinstance(value, int) else value


def fresh_state(prefix: str, arch: Arch = ARCH) -> SymState:
    """A state whose every part is a free Z3 constant named ``prefix.part``."""
    w = arch.word
    fields = {
        slot: z3.BitVec(f"{prefix}.{FIELD_NAMES[slot]}", field_width(slot, arch))
        for slot in named_slots(arch)
    }
    regs = z3.Array(f"{prefix}.regs", z3.BitVecSort(arch.reg_bits), z3.BitVecSort(w))
    mem = z3.Array(f"{prefix}.mem", z3.BitVecSort(w), z3.BitVecSort(w))
    return SymState(fields, regs, mem, z3.BitVec(f"{prefix}.memsize", w), arch)


@dataclass(frozen=True)
class Operands:
    """The decoded fields of one instruction as Z3 terms."""

    rd: z3.BitVecRef
    rs: z3.BitVecRef
    imm: z3.BitVecRef

    def as_dict(self) -> dict[str, z3.BitVecRef]:
        return {"rd": self.rd, "rs": self.rs, "imm": self.imm}


def fresh_operands(prefix: str = "op", arch: Arch = ARCH) -> Operands:
    return Operands(
        z3.BitVec(f"{prefix}.rd", arch.reg_bits),
        z3.BitVec(f"{prefix}.rs", arch.reg_bits),
        z3.BitVec(f"{prefix}.imm", arch.word),
    )


# --------------------------------------------------------------------------
# Expressions
# --------------------------------------------------------------------------
_ONE = z3.BitVecVal(1, 1)
_ZERO = z3.BitVecVal(0, 1)


def _flag(cond: z3.BoolRef) -> z3.BitVecRef:
    return z3.If(cond, _ONE, _ZERO)


_BINARY: dict[str, Callable[[z3.BitVecRef, z3.BitVecRef], z3.ExprRef]] = {
    "add": lambda a, b: a + b,
    "sub": lambda a, b: a - b,
    "and": lambda a, b: a & b,
    "or": lambda a, b: a | b,
    "xor": lambda a, b: a ^ b,
    "shl": lambda a, b: a << b,  # Z3: shifting by the width or more gives 0, as codegen
    "lshr": z3.LShR,
    "eq": lambda a, b: _flag(a == b),
    "ult": lambda a, b: _flag(z3.ULT(a, b)),
    "slt": lambda a, b: _flag(a < b),  # `<` on Z3 bit-vectors is signed
}


class Translator:
    """Translates expressions over one pre-state, sharing common subterms.

    How each operation becomes a term is the table `TRANSLATE`."""

    def __init__(self, state: SymState, inputs: dict[str, z3.BitVecRef]):
        self.state = state
        self.inputs = inputs
        self._memo: dict[int, z3.ExprRef] = {}

    def __call__(self, e: Expr) -> z3.BitVecRef:
        done = self._memo.get(id(e))
        if done is None:
            handler = TRANSLATE.get(e.op)
            if handler is None:
                raise ValueError(f"symbolic: unknown operation {e.op!r}")
            done = self._memo[id(e)] = handler(self, e)
        return done

    def input(self, name: str, width: int) -> z3.BitVecRef:
        """The term a free input stands for: an operand, MEMSIZE or a state slot."""
        if name in self.inputs:
            return self.inputs[name]
        if name == "MEMSIZE":
            return self.state.memsize
        slot = slot_of(name)
        if slot is not None:
            return self.state.get(slot)
        raise ValueError(f"symbolic: unbound input {name!r} ({width} bits)")


def _binary(fn: Callable[[z3.BitVecRef, z3.BitVecRef], z3.ExprRef]) -> Callable[[Translator, Expr], z3.ExprRef]:
    return lambda tr, e: fn(tr(e.args[0]), tr(e.args[1]))


# The symbolic back end: every operation of `popek.spec.bits.OPERATIONS` as a Z3 term.
TRANSLATE: dict[str, Callable[[Translator, Expr], z3.ExprRef]] = {
    "const": lambda tr, e: z3.BitVecVal(e.args[0], e.width),
    "var": lambda tr, e: tr.input(e.args[0], e.width),
    "reg": lambda tr, e: z3.Select(tr.state.regs, tr(e.args[0])),
    "mem": lambda tr, e: z3.Select(tr.state.mem, tr(e.args[0])),
    "not": lambda tr, e: ~tr(e.args[0]),
    "zext": lambda tr, e: z3.ZeroExt(e.width - e.args[0].width, tr(e.args[0])),
    "extract": lambda tr, e: z3.Extract(e.args[1], e.args[2], tr(e.args[0])),
    "ite": lambda tr, e: z3.If(tr(e.args[0]) == _ONE, tr(e.args[1]), tr(e.args[2])),
    **{op: _binary(fn) for op, fn in _BINARY.items()},
}


# --------------------------------------------------------------------------
# Effects
# --------------------------------------------------------------------------
@dataclass(frozen=True)
class Outcome:
    """What one traced routine does to a symbolic pre-state.

    ``post`` is the state when no trap condition holds; when ``trapped``
    holds the instruction had no effect (``pre`` is unchanged) and the trap
    mechanism, or a VMM's hook, takes over with ``cause`` and ``info``.
    """

    pre: SymState
    trapped: z3.BoolRef
    cause: z3.BitVecRef
    info: z3.BitVecRef
    post: SymState
    outputs: tuple[z3.BitVecRef, ...] = field(default=())
    writes: tuple[tuple[z3.BitVecRef, z3.BitVecRef], ...] = field(default=())  # storage, in order


def apply_effects(
    fx: Effects, pre: SymState, inputs: dict[str, z3.BitVecRef] | None = None
) -> Outcome:
    """Apply traced effects to ``pre`` by the rules of ``popek.spec.sem``."""
    arch = pre.arch
    tr = Translator(pre, inputs or {})
    w = arch.word
    trapped: z3.BoolRef = z3.BoolVal(False)
    cause: z3.BitVecRef = z3.BitVecVal(0, w)
    info: z3.BitVecRef = z3.BitVecVal(0, w)
    # Build the first-wins chain from the last condition backwards.
    for cond, c, i in reversed(fx.traps):
        holds = tr(cond) == _ONE
        trapped = z3.Or(holds, trapped)
        cause = z3.If(holds, z3.BitVecVal(int(c), w), cause)
        info = z3.If(holds, tr(i), info)
    regs = pre.regs
    for idx, val in fx.reg_writes:
        regs = z3.Store(regs, tr(idx), tr(val))
    fields = dict(pre.fields)
    for slot, val in fx.field_writes.items():
        if slot < arch.nregs:
            regs = z3.Store(regs, z3.BitVecVal(slot, arch.reg_bits), tr(val))
        else:
            fields[slot] = tr(val)
    mem = pre.mem
    writes = tuple((tr(addr), tr(val)) for addr, val in fx.mem_writes)
    for addr, val in writes:
        mem = z3.Store(mem, addr, val)
    outputs = tuple(tr(v) for v in fx.outputs)
    post = SymState(fields, regs, mem, pre.memsize, arch)
    return Outcome(pre, z3.simplify(trapped), cause, info, post, outputs, writes)


def step(insn: Insn, pre: SymState, ops: Operands) -> Outcome:
    """One execution of ``insn`` (already fetched and decoded) on ``pre``."""
    return apply_effects(trace(insn, pre.arch), pre, ops.as_dict())


def undecodable(pre: SymState) -> Outcome:
    """The cycle on ``pre`` when the words at PC decode to no instruction
    (``popek.spec.trap.undecodable``)."""
    return apply_effects(trace_undecodable(pre.arch), pre)


def tick(pre: SymState) -> SymState:
    """The timer count-down that follows every retired instruction."""
    return apply_effects(trace_tick(pre.arch), pre).post


@lru_cache(maxsize=None)
def _fetch_effects(arch: Arch) -> tuple[Effects, Expr, Expr]:
    s = Sem(arch)
    p0, p1 = fetch_addresses(s)
    return s.fx, p0, p1


@dataclass(frozen=True)
class Fetch:
    """Reading the instruction at PC: the guarding traps and the two addresses."""

    trapped: z3.BoolRef
    cause: z3.BitVecRef
    info: z3.BitVecRef
    p0: z3.BitVecRef
    p1: z3.BitVecRef


def fetch(pre: SymState) -> Fetch:
    fx, p0, p1 = _fetch_effects(pre.arch)
    out = apply_effects(fx, pre)
    tr = Translator(pre, {})
    return Fetch(out.trapped, out.cause, out.info, tr(p0), tr(p1))


def encoding(insn: Insn, ops: Operands, arch: Arch = ARCH) -> tuple[z3.BitVecRef, z3.BitVecRef]:
    """The two words of ``insn`` with symbolic fields.

    Derived from ``popek.spec.encoding.encode`` rather than restating its
    layout: the encoding places each field in its own bits, so it is the
    encoding of all-zero fields plus each field times its unit encoding.
    A test checks this against ``encode`` on random fields.
    """
    from popek.spec.encoding import encode
    from popek.spec.profiles import Profile

    scratch = Profile("encoding-probe", "", (insn,), arch)
    w = arch.word
    zero0, zero1 = encode(scratch, insn)
    w0: z3.BitVecRef = z3.BitVecVal(zero0, w)
    w1: z3.BitVecRef = z3.BitVecVal(zero1, w)
    for name, value in (("rd", ops.rd), ("rs", ops.rs), ("imm", ops.imm)):
        if name not in insn.fields:
            continue
        u0, u1 = encode(scratch, insn, **{name: 1})
        v = z3.ZeroExt(w - value.size(), value) if value.size() < w else value
        w0 = w0 + v * z3.BitVecVal(u0 - zero0, w)
        w1 = w1 + v * z3.BitVecVal(u1 - zero1, w)
    return z3.simplify(w0), z3.simplify(w1)


def unused_fields_zero(insn: Insn, ops: Operands) -> z3.BoolRef:
    """Fields the syntax does not use are zero (so witnesses print cleanly)."""
    zero = [getattr(ops, f) == 0 for f in ("rd", "rs", "imm") if f not in insn.fields]
    return z3.And(*zero) if zero else z3.BoolVal(True)


def fetches(insn: Insn, pre: SymState, ops: Operands) -> z3.BoolRef:
    """The machine at ``pre`` fetches ``insn`` with these operands from storage
    without a fault: the instruction really is in storage at PC.

    Built once per instruction over a template state and then instantiated
    by substitution (translating the fetch's address translation afresh for
    every state is most of the cost of building a query)."""
    tpl_state, tpl_ops, formula = _fetches_template(insn, pre.arch)
    pairs = [(tpl_state.fields[s], pre.fields[s]) for s in tpl_state.fields]
    pairs += [(tpl_state.regs, pre.regs), (tpl_state.mem, pre.mem),
              (tpl_state.memsize, pre.memsize)]
    pairs += [(tpl_ops.rd, ops.rd), (tpl_ops.rs, ops.rs), (tpl_ops.imm, ops.imm)]
    return z3.simplify(z3.substitute(formula, *pairs))


@lru_cache(maxsize=None)
def _fetches_template(insn: Insn, arch: Arch) -> tuple[SymState, Operands, z3.BoolRef]:
    pre, ops = fresh_state("fetch.tpl", arch), fresh_operands("fetch.tpl.op", arch)
    f = fetch(pre)
    w0, w1 = encoding(insn, ops, arch)
    formula = z3.And(
        z3.Not(f.trapped),
        z3.Select(pre.mem, f.p0) == w0,
        z3.Select(pre.mem, f.p1) == w1,
        unused_fields_zero(insn, ops),
    )
    return pre, ops, formula


def well_formed(pre: SymState) -> z3.BoolRef:
    """A state the machine can be in before an instruction runs: storage of a
    size `Machine` accepts, not halted, no interrupt due."""
    from popek.spec.state import HALTED, IE, PEND

    return z3.And(
        z3.UGE(pre.memsize, MIN_MEMSIZE),
        pre.fields[HALTED] == 0,
        z3.Not(z3.And(pre.fields[PEND] == 1, pre.fields[IE] == 1)),
    )


def differs(a: SymState, b: SymState, *, skip: tuple[int, ...] = (), shift=None) -> z3.BoolRef:
    """Some named slot, register or storage word of ``a`` and ``b`` differs.

    With ``shift``, ``b``'s storage and base are compared after moving them
    back by ``shift`` (``b`` is a relocated copy).  The register and storage
    words compared are fresh constants (a Skolem witness of the difference),
    which Z3 decides faster than an inequality between whole arrays."""
    arch = a.arch
    parts = []
    for s in a.fields:
        if s in skip:
            continue
        other = b.fields[s]
        if shift is not None and s == _slot("base"):
            other = other - shift
        parts.append(a.fields[s] != other)
    r = z3.FreshConst(z3.BitVecSort(arch.reg_bits), "which_reg")
    parts.append(z3.Select(a.regs, r) != z3.Select(b.regs, r))
    m = z3.FreshConst(z3.BitVecSort(arch.word), "which_word")
    moved = m if shift is None else m + shift
    parts.append(z3.Select(a.mem, m) != z3.Select(b.mem, moved))
    return z3.Or(*parts)


def outputs_differ(x: Outcome, y: Outcome) -> z3.BoolRef:
    if len(x.outputs) != len(y.outputs):
        return z3.BoolVal(True)
    return z3.Or(z3.BoolVal(False), *[p != q for p, q in zip(x.outputs, y.outputs)])

