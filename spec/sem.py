"""The effect recorder an instruction definition writes against.

A definition is a plain function ``(s: Sem, i: Operands) -> None``.  It reads
the state *before* the instruction, records its effects, and may record trap
conditions.  Tracing it once yields an `Effects` value: what the instruction
does, as expressions over the pre-state.  Nothing is executed here.

Semantics of the record, shared by both back ends:

* all reads see the state before the instruction;
* the first trap condition that holds wins, and then *no* effect happens
  (the machine's trap mechanism runs instead);
* otherwise every effect happens; of two writes to one register the later wins.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .bits import Expr, Slot, const, eq, ite, inputs, ult, var, zext
from .state import (
    ARCH,
    HALTED,
    MODE,
    PC,
    SP,
    USER,
    Arch,
    Cause,
    field_width,
)

ILEN = 2  # every instruction is two words: opcode/registers, immediate


@dataclass
class Operands:
    """The decoded fields of one instruction, as machine values."""

    rd: Expr
    rs: Expr
    imm: Expr


@dataclass
class Effects:
    """What one traced definition does."""

    reg_writes: list[tuple[Expr, Expr]] = field(default_factory=list)
    field_writes: dict[int, Expr] = field(default_factory=dict)
    mem_writes: list[tuple[Expr, Expr]] = field(default_factory=list)
    outputs: list[Expr] = field(default_factory=list)
    traps: list[tuple[Expr, Cause, Expr]] = field(default_factory=list)

    def roots(self) -> list[Expr]:
        """Every expression the effects are made of."""
        out: list[Expr] = []
        for cond, _cause, info in self.traps:
            out += [cond, info]
        for idx, val in self.reg_writes:
            out += [idx, val]
        out += self.field_writes.values()
        for addr, val in self.mem_writes:
            out += [addr, val]
        return out + self.outputs

    def inputs(self) -> frozenset[str]:
        """Names of the free inputs the effects read (state slots are `Slot`)."""
        return frozenset(inputs(self.roots()))


class Sem:
    """Records the effects of one instruction (or machine routine)."""

    def __init__(self, arch: Arch = ARCH):
        self.arch = arch
        self.fx = Effects()

    # -- reading the pre-state ------------------------------------------
    def get(self, slot: int) -> Expr:
        return var(Slot(slot), field_width(slot, self.arch))

    def reg(self, index: Expr) -> Expr:
        return Expr("reg", self.arch.word, (index,))

    @property
    def memsize(self) -> Expr:
        """Words of physical storage; addresses at or above it do not exist."""
        return var("MEMSIZE", self.arch.word)

    @property
    def pc(self) -> Expr:
        return self.get(PC)

    @property
    def next_pc(self) -> Expr:
        return self.pc + ILEN

    @property
    def in_user_mode(self) -> Expr:
        return eq(self.get(MODE), USER)

    def word(self, value: int) -> Expr:
        return const(value, self.arch.word)

    def regnum(self, index: int) -> Expr:
        """A fixed register, as an index value (e.g. the stack pointer)."""
        return const(index, self.arch.reg_bits)

    @property
    def sp(self) -> Expr:
        return self.reg(self.regnum(SP))

    def set_sp(self, value: Expr) -> None:
        self.set_reg(self.regnum(SP), value)

    # -- recording effects ----------------------------------------------
    def set(self, slot: int, value: Expr | int) -> None:
        width = field_width(slot, self.arch)
        if isinstance(value, int):
            value = const(value, width)
        if value.width < width:
            value = zext(value, width)
        if value.width != width:
            raise TypeError(f"field {slot} is {width} bits, value is {value.width}")
        self.fx.field_writes[slot] = value

    def set_reg(self, index: Expr, value: Expr) -> None:
        self.fx.reg_writes.append((index, value))

    def jump(self, target: Expr) -> None:
        self.set(PC, target)

    def trap_if(self, cond: Expr, cause: Cause, info: Expr | int = 0) -> None:
        if isinstance(info, int):
            info = self.word(info)
        self.fx.traps.append((cond, cause, info))

    def privileged(self) -> None:
        """Trap in user mode: what makes an instruction privileged."""
        self.trap_if(self.in_user_mode, Cause.PRIVILEGED)

    def output(self, value: Expr) -> None:
        self.fx.outputs.append(value)

    def halt(self) -> None:
        self.set(HALTED, 1)

    # -- storage ----------------------------------------------------------
    def load_phys(self, addr: Expr, *, when: Expr | None = None) -> Expr:
        """Read physical storage; a word that does not exist reads as 0.
        In a vtx guest "physical" is guest-physical: see `host_physical`."""
        return self.load_host(self.host_physical(addr, write=False, when=when))

    def store_phys(self, addr: Expr, value: Expr) -> None:
        """Write physical storage; callers keep ``addr`` below MEMSIZE."""
        self.store_host(self.host_physical(addr, write=True), value)

    def load_host(self, addr: Expr) -> Expr:
        """Read the machine's own storage, whatever mode it is in."""
        return ite(ult(addr, self.memsize), self.word_at(addr), 0)

    def store_host(self, addr: Expr, value: Expr) -> None:
        self.fx.mem_writes.append((addr, value))

    def host_physical(self, addr: Expr, *, write: bool, when: Expr | None = None) -> Expr:
        """Where a physical address really is: itself, except on a vtx
        machine in guest mode, where the nested page table maps it (a miss
        traps NPF, counted only ``when`` that condition holds), and on a
        partitioned machine, where the partition register relocates and
        bounds it (spec/partition.py)."""
        if self.arch.partition:
            from .partition import relocate

            return relocate(self, addr)
        if not self.arch.vtx:
            return addr
        from .vtx import nested

        return nested(self, addr, write=write, when=when)

    def word_at(self, addr: Expr) -> Expr:
        """The storage word at ``addr``, an address translation has already
        made physical (a subclass that translates otherwise reads here)."""
        return Expr("mem", self.arch.word, (addr,))

    def load(self, vaddr: Expr) -> Expr:
        from .memory import translate

        return self.word_at(translate(self, vaddr, write=False))

    def store(self, vaddr: Expr, value: Expr) -> None:
        from .memory import translate

        self.store_host(translate(self, vaddr, write=True), value)

    def push(self, value: Expr) -> None:
        """sp <- sp - 1; storage[sp] <- value."""
        new_sp = self.sp - 1
        self.store(new_sp, value)
        self.set_sp(new_sp)

    def pop(self) -> Expr:
        """The word at sp; sp <- sp + 1."""
        value = self.load(self.sp)
        self.set_sp(self.sp + 1)
        return value


def operands(arch: Arch = ARCH) -> Operands:
    """Free operand fields, for tracing a definition once for all operands."""
    return Operands(
        rd=var("rd", arch.reg_bits),
        rs=var("rs", arch.reg_bits),
        imm=var("imm", arch.word),
    )
