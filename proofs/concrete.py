"""Concrete states: the bridge between Z3 models and the concrete machine.

A proof's counterexample is a Z3 model; a witness is only believed when it
replays on ``popek.model.machine.Machine``.  `ConcreteState` holds a state
as plain integers (storage as the words that differ from one default word,
because a model assigns every one of the 2**word addresses), turns it into
Z3 values or into a loaded `Machine`, and `run_step` runs one machine cycle
on it with a hook that records a trap instead of taking it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import z3

from popek.model.machine import Machine
from popek.spec.instructions import Insn
from popek.spec.profiles import Profile
from popek.spec.state import ARCH, FIELD_NAMES, NSLOTS, Arch, Cause

from .symbolic import SymState, named_slots


@dataclass
class ConcreteState:
    """One machine state as integers."""

    S: list[int]  # the state vector, indexed by popek.spec.state slots
    mem: dict[int, int]  # physical address -> word, where it is not `default`
    default: int = 0  # every other word of storage
    memsize: int = 4096

    def word(self, addr: int) -> int:
        return self.mem.get(addr, self.default)

    def to_sym(self, arch: Arch = ARCH) -> SymState:
        """The same state as Z3 values."""
        from popek.spec.state import field_width

        w = arch.word
        fields = {s: z3.BitVecVal(self.S[s], field_width(s, arch)) for s in named_slots(arch)}
        regs = z3.K(z3.BitVecSort(arch.reg_bits), z3.BitVecVal(0, w))
        for i in range(arch.nregs):
            regs = z3.Store(regs, z3.BitVecVal(i, arch.reg_bits), z3.BitVecVal(self.S[i], w))
        mem = z3.K(z3.BitVecSort(w), z3.BitVecVal(self.default, w))
        for a, v in sorted(self.mem.items()):
            mem = z3.Store(mem, z3.BitVecVal(a, w), z3.BitVecVal(v, w))
        return SymState(fields, regs, mem, z3.BitVecVal(self.memsize, w), arch)

    def machine(self, profile: Profile, storage: list[int] | None = None) -> Machine:
        """A machine of ``profile`` in exactly this state."""
        size = 1 << profile.arch.word
        if storage is None:
            storage = [self.default] * size
        else:
            list.__setitem__(storage, slice(None), [self.default] * size)
        for a, v in self.mem.items():
            list.__setitem__(storage, a, v)
        m = Machine(profile, self.memsize, storage=storage)
        m.S[:] = self.S
        m.flush()
        return m

    def describe(self) -> dict:
        """Named fields and storage, for printing and JSON."""
        return {
            "fields": {FIELD_NAMES[i]: v for i, v in enumerate(self.S)},
            "memsize": self.memsize,
            "storage": {f"{a:#06x}": v for a, v in sorted(self.mem.items())},
            "other_words": self.default,
        }


def array_words(model: z3.ModelRef, arr: z3.ArrayRef) -> tuple[dict[int, int], int]:
    """The words a model gives an array: (explicit entries, default)."""
    val = model.eval(arr, model_completion=True)
    entries: dict[int, int] = {}
    while True:
        if z3.is_store(val):
            inner, idx, v = val.children()
            entries.setdefault(idx.as_long(), v.as_long())
            val = inner
        elif z3.is_K(val):
            return entries, val.arg(0).as_long()
        elif z3.is_as_array(val):
            interp = model[z3.get_as_array_func(val)]
            for k, v in interp.as_list()[:-1]:
                entries.setdefault(k.as_long(), v.as_long())
            return entries, model.eval(interp.else_value(), model_completion=True).as_long()
        else:
            raise ValueError(f"cannot read an array value of this shape: {val.sexpr()[:200]}")


def from_model(model: z3.ModelRef, sym: SymState) -> ConcreteState:
    """The concrete state a model assigns to a symbolic one (model completion
    fills in whatever the query left free)."""
    arch = sym.arch

    def num(t: z3.ExprRef) -> int:
        return model.eval(t, model_completion=True).as_long()

    S = [0] * NSLOTS
    for i in range(arch.nregs):
        S[i] = num(sym.reg(i))
    for slot in named_slots(arch):
        S[slot] = num(sym.fields[slot])
    entries, default = array_words(model, sym.mem)
    entries = {a: v for a, v in entries.items() if v != default}
    return ConcreteState(S, entries, default, num(sym.memsize))


@dataclass
class StepRecord:
    """What one machine cycle did, observed from outside."""

    trapped: bool
    cause: int
    info: int
    S: list[int]
    writes: dict[int, int] = field(default_factory=dict)  # changed storage words
    out: list[int] = field(default_factory=list)

    def summary(self) -> str:
        if self.trapped:
            return f"trap {Cause(self.cause).name} info={self.info:#x}"
        return "retired"


class _RecordingStorage(list):
    """Storage that notes which addresses the machine writes (cheaper than
    comparing all 2**word words after every step)."""

    def __init__(self) -> None:
        super().__init__()
        self.written: set[int] = set()

    def __setitem__(self, index, value) -> None:  # type: ignore[override]
        if isinstance(index, int):
            self.written.add(index)
        super().__setitem__(index, value)


def run_step(profile: Profile, state: ConcreteState) -> StepRecord:
    """Run one cycle of the concrete machine from ``state``; a trap is
    recorded (cause, info) rather than taken, so the state is the one the
    trap mechanism or a VMM would see."""
    storage = _RecordingStorage()
    m = state.machine(profile, storage)
    seen: list[tuple[int, int]] = []

    def record(machine: Machine, cause: int, info: int) -> bool:
        seen.append((cause, info))
        return True

    m.step(on_trap=record)
    writes = {a: m.M[a] for a in storage.written if m.M[a] != state.word(a)}
    cause, info = seen[0] if seen else (0, 0)
    return StepRecord(bool(seen), cause, info, list(m.S), writes, list(m.out))


def _num(t: z3.ExprRef) -> int:
    v = z3.simplify(t)
    if not z3.is_bv_value(v):
        raise ValueError(f"expected a value, Z3 left {v}")
    return v.as_long()


@lru_cache(maxsize=None)
def _symbolic_fetch(arch: Arch):
    from .symbolic import fetch, fresh_state

    pre = fresh_state("pre", arch)
    return pre, fetch(pre)


@lru_cache(maxsize=None)
def _symbolic_insn(insn: Insn, arch: Arch):
    from .symbolic import fresh_operands, step, tick

    pre, _ = _symbolic_fetch(arch)
    ops = fresh_operands("op", arch)
    out = step(insn, pre, ops)
    return ops, out, tick(out.post)


@lru_cache(maxsize=None)
def _symbolic_undecodable(arch: Arch):
    from .symbolic import undecodable

    pre, _ = _symbolic_fetch(arch)
    return undecodable(pre)


def _binding(pre: SymState, state: ConcreteState) -> list[tuple[z3.ExprRef, z3.ExprRef]]:
    """Substitution pairs: the free constants of ``pre`` to ``state``'s values."""
    value = state.to_sym(pre.arch)
    pairs: list[tuple[z3.ExprRef, z3.ExprRef]] = [
        (pre.fields[s], value.fields[s]) for s in pre.fields
    ]
    pairs += [(pre.regs, value.regs), (pre.mem, value.mem), (pre.memsize, value.memsize)]
    return pairs


def _evaluate(terms: list[z3.ExprRef], bind: list) -> list[int]:
    """Values of bit-vector or Boolean ``terms`` under a substitution, with
    one substitute-and-simplify call (the terms are packed side by side)."""
    parts = [z3.If(x, z3.BitVecVal(1, 1), z3.BitVecVal(0, 1)) if z3.is_bool(x) else x for x in terms]
    packed = parts[0] if len(parts) == 1 else z3.Concat(*parts)
    value = _num(z3.substitute(packed, *bind))
    out: list[int] = []
    for x in reversed(parts):
        w = x.size()
        out.append(value & ((1 << w) - 1))
        value >>= w
    return out[::-1]


def fetch_addresses_at(state: ConcreteState, arch: Arch = ARCH) -> tuple[int, int] | None:
    """Where the Z3 semantics fetches the instruction at PC from; None on a fault."""
    pre, f = _symbolic_fetch(arch)
    trapped, p0, p1 = _evaluate([f.trapped, f.p0, f.p1], _binding(pre, state))
    return None if trapped else (p0, p1)


def predict_step(profile: Profile, state: ConcreteState) -> StepRecord:
    """What the Z3 semantics says one machine cycle does from ``state``:
    fetch through address translation, decode, the instruction's effects,
    then the timer tick, each a Z3 term over a free state into which the
    state's values are substituted; words at PC that decode to no
    instruction give the spec's trap for them.  The state must not have an
    interrupt due (the cycle would take it instead)."""
    from popek.spec.encoding import decode
    from popek.spec.state import HALTED, IE, PEND

    arch = profile.arch
    if state.S[PEND] and state.S[IE]:
        raise ValueError("an interrupt is due: the cycle would take it, not run an instruction")
    if state.S[HALTED]:
        raise ValueError("the machine is halted")
    pre, f = _symbolic_fetch(arch)
    bind = _binding(pre, state)
    trapped, cause, info, p0, p1 = _evaluate([f.trapped, f.cause, f.info, f.p0, f.p1], bind)
    if trapped:
        return StepRecord(True, cause, info, list(state.S))
    d = decode(profile, state.word(p0), state.word(p1))
    if d is None:
        out = _symbolic_undecodable(arch)
        trapped, cause, info = _evaluate([out.trapped, out.cause, out.info], bind)
        return StepRecord(bool(trapped), cause, info, list(state.S))
    ops, out, post = _symbolic_insn(d.insn, arch)
    bind += [
        (ops.rd, z3.BitVecVal(d.rd, arch.reg_bits)),
        (ops.rs, z3.BitVecVal(d.rs, arch.reg_bits)),
        (ops.imm, z3.BitVecVal(d.imm, arch.word)),
    ]
    terms = [out.trapped, out.cause, out.info] + [post.get(i) for i in range(NSLOTS)]
    for a, v in out.writes:
        terms += [a, v]
    terms += list(out.outputs)
    values = _evaluate(terms, bind)
    trapped, cause, info = values[:3]
    if trapped:
        return StepRecord(True, cause, info, list(state.S))
    S = values[3 : 3 + NSLOTS]
    rest = values[3 + NSLOTS :]
    nw = 2 * len(out.writes)
    written: dict[int, int] = {}
    for k in range(0, nw, 2):
        written[rest[k]] = rest[k + 1]
    writes = {a: v for a, v in written.items() if v != state.word(a)}
    return StepRecord(False, 0, 0, S, writes, rest[nw:])
