"""The instruction set: one short definition per instruction.

Read this file as the machine's reference manual.  Each entry gives the
mnemonic, the opcode, the assembly operands and the behaviour; the docstring
is the manual's sentence.  Whether an instruction is privileged, sensitive or
innocuous is *not* written here: ``popek prove`` derives it from these
definitions with Z3.  ``privileged(...)`` is ordinary behaviour (trap when in
user mode), which is how the ``pg`` profile differs from ``x86``.

Operand syntax names the encoding fields: ``rd`` and ``rs`` are registers,
``imm`` a word; ``imm(rs)`` is an address ``rs + imm``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from .bits import FALSE, TRUE, Expr, bit, eq, extract, ite, ne, ult, zext
from .state import (
    BASE,
    BOUND,
    FLAG_C,
    FLAG_N,
    FLAG_V,
    FLAG_Z,
    FLAGS,
    IE,
    MODE,
    PEND,
    PSW_IE_BIT,
    PTBR,
    SP,
    TIMER,
    USER,
    Cause,
)
from .trap import psw_word, return_from_trap

if TYPE_CHECKING:  # annotations only
    from .sem import Operands, Sem

Definition = Callable[["Sem", "Operands"], None]


@dataclass(frozen=True)
class Insn:
    """One row of the manual: how it is written, encoded, and what it does."""

    name: str
    opcode: int
    syntax: str  # e.g. "rd, imm(rs)"; field names as in Operands
    run: Definition
    doc: str

    @property
    def fields(self) -> tuple[str, ...]:
        """The encoding fields the syntax uses, in operand order."""
        return tuple(f for f in ("rd", "rs", "imm") if f in self.syntax)

def insn(
    name: str, opcode: int, syntax: str = "", *, doc: str = ""
) -> Callable[[Definition], Insn]:
    def make(run: Definition) -> Insn:
        return Insn(name, opcode, syntax, run, doc or (run.__doc__ or "").strip())

    return make


def privileged(base: Insn) -> Insn:
    """The same instruction, made to trap in user mode."""

    def run(s: Sem, i: Operands) -> None:
        s.privileged()
        base.run(s, i)

    return Insn(base.name, base.opcode, base.syntax, run, base.doc + " Privileged.")


# -- helpers for arithmetic flags ------------------------------------------
def nzcv(negative: Expr, zero: Expr, carry: Expr, overflow: Expr) -> Expr:
    """Pack four 1-bit flags into the FLAGS field (N Z C V, high to low)."""
    n = len(("N", "Z", "C", "V"))
    return (
        (zext(negative, n) << 3)
        | (zext(zero, n) << 2)
        | (zext(carry, n) << 1)
        | zext(overflow, n)
    )


def sign(s: Sem, x: Expr) -> Expr:
    return bit(x, s.arch.word - 1)


def logic_flags(s: Sem, r: Expr) -> Expr:
    return nzcv(sign(s, r), eq(r, 0), FALSE, FALSE)


def add_flags(s: Sem, a: Expr, b: Expr, r: Expr) -> Expr:
    overflow = ~sign(s, a ^ b) & sign(s, a ^ r)
    return nzcv(sign(s, r), eq(r, 0), ult(r, a), overflow)


def sub_flags(s: Sem, a: Expr, b: Expr, r: Expr) -> Expr:
    overflow = sign(s, a ^ b) & sign(s, a ^ r)
    return nzcv(sign(s, r), eq(r, 0), ult(a, b), overflow)


def flag(s: Sem, mask: int) -> Expr:
    return ne(s.get(FLAGS) & mask, 0)


def shift_amount(s: Sem, x: Expr) -> Expr:
    return x & (s.arch.word - 1)


def jump_if(s: Sem, cond: Expr, target: Expr) -> None:
    s.jump(ite(cond, target, s.next_pc))


# ==========================================================================
# Data movement and arithmetic
# ==========================================================================
@insn("nop", 0x0F)
def nop(s: Sem, i: Operands) -> None:
    """Do nothing."""


@insn("mov", 0x01, "rd, rs")
def mov(s: Sem, i: Operands) -> None:
    """rd <- rs."""
    s.set_reg(i.rd, s.reg(i.rs))


@insn("li", 0x02, "rd, imm")
def li(s: Sem, i: Operands) -> None:
    """rd <- imm."""
    s.set_reg(i.rd, i.imm)


@insn("add", 0x03, "rd, rs")
def add(s: Sem, i: Operands) -> None:
    """rd <- rd + rs; sets N Z C V."""
    a, b = s.reg(i.rd), s.reg(i.rs)
    s.set_reg(i.rd, a + b)
    s.set(FLAGS, add_flags(s, a, b, a + b))


@insn("sub", 0x04, "rd, rs")
def sub(s: Sem, i: Operands) -> None:
    """rd <- rd - rs; sets N Z C V (C is the borrow)."""
    a, b = s.reg(i.rd), s.reg(i.rs)
    s.set_reg(i.rd, a - b)
    s.set(FLAGS, sub_flags(s, a, b, a - b))


def _logic(op: Callable[[Expr, Expr], Expr]) -> Definition:
    def run(s: Sem, i: Operands) -> None:
        r = op(s.reg(i.rd), s.reg(i.rs))
        s.set_reg(i.rd, r)
        s.set(FLAGS, logic_flags(s, r))

    return run


_LOGIC = "; sets N Z, clears C V."
and_ = insn("and", 0x05, "rd, rs", doc="rd <- rd & rs" + _LOGIC)(_logic(lambda a, b: a & b))
or_ = insn("or", 0x06, "rd, rs", doc="rd <- rd | rs" + _LOGIC)(_logic(lambda a, b: a | b))
xor = insn("xor", 0x07, "rd, rs", doc="rd <- rd ^ rs" + _LOGIC)(_logic(lambda a, b: a ^ b))
shl = insn("shl", 0x08, "rd, rs", doc="rd <- rd << (rs mod word size)" + _LOGIC)(
    _logic(lambda a, b: a << (b & (a.width - 1)))
)
shr = insn("shr", 0x09, "rd, rs", doc="rd <- rd >> (rs mod word size), logical" + _LOGIC)(
    _logic(lambda a, b: a >> (b & (a.width - 1)))
)


@insn("cmp", 0x0A, "rd, rs")
def cmp(s: Sem, i: Operands) -> None:
    """Set N Z C V from rd - rs; registers unchanged."""
    a, b = s.reg(i.rd), s.reg(i.rs)
    s.set(FLAGS, sub_flags(s, a, b, a - b))


@insn("addi", 0x0B, "rd, imm")
def addi(s: Sem, i: Operands) -> None:
    """rd <- rd + imm; sets N Z C V."""
    a = s.reg(i.rd)
    s.set_reg(i.rd, a + i.imm)
    s.set(FLAGS, add_flags(s, a, i.imm, a + i.imm))


@insn("cmpi", 0x0C, "rd, imm")
def cmpi(s: Sem, i: Operands) -> None:
    """Set N Z C V from rd - imm; registers unchanged."""
    a = s.reg(i.rd)
    s.set(FLAGS, sub_flags(s, a, i.imm, a - i.imm))


# ==========================================================================
# Storage (virtual addresses, through relocation-bounds and paging)
# ==========================================================================
@insn("ld", 0x10, "rd, imm(rs)")
def ld(s: Sem, i: Operands) -> None:
    """rd <- storage[rs + imm]."""
    s.set_reg(i.rd, s.load(s.reg(i.rs) + i.imm))


@insn("st", 0x11, "rs, imm(rd)")
def st(s: Sem, i: Operands) -> None:
    """storage[rd + imm] <- rs."""
    s.store(s.reg(i.rd) + i.imm, s.reg(i.rs))


@insn("push", 0x12, "rs")
def push(s: Sem, i: Operands) -> None:
    """sp <- sp - 1; storage[sp] <- rs."""
    s.push(s.reg(i.rs))


@insn("pop", 0x13, "rd")
def pop(s: Sem, i: Operands) -> None:
    """rd <- storage[sp]; sp <- sp + 1 (then rd is written, so `pop sp` loads sp)."""
    s.set_reg(i.rd, s.pop())


# ==========================================================================
# Control transfer
# ==========================================================================
@insn("jmp", 0x20, "imm")
def jmp(s: Sem, i: Operands) -> None:
    """pc <- imm."""
    s.jump(i.imm)


@insn("jz", 0x21, "imm")
def jz(s: Sem, i: Operands) -> None:
    """Jump to imm if Z is set."""
    jump_if(s, flag(s, FLAG_Z), i.imm)


@insn("jnz", 0x22, "imm")
def jnz(s: Sem, i: Operands) -> None:
    """Jump to imm if Z is clear."""
    jump_if(s, ~flag(s, FLAG_Z), i.imm)


@insn("jc", 0x23, "imm")
def jc(s: Sem, i: Operands) -> None:
    """Jump to imm if C is set (after cmp: unsigned less than)."""
    jump_if(s, flag(s, FLAG_C), i.imm)


@insn("jnc", 0x24, "imm")
def jnc(s: Sem, i: Operands) -> None:
    """Jump to imm if C is clear (after cmp: unsigned greater or equal)."""
    jump_if(s, ~flag(s, FLAG_C), i.imm)


@insn("jlt", 0x25, "imm")
def jlt(s: Sem, i: Operands) -> None:
    """Jump to imm if N differs from V (after cmp: signed less than)."""
    jump_if(s, flag(s, FLAG_N) ^ flag(s, FLAG_V), i.imm)


@insn("jge", 0x2A, "imm")
def jge(s: Sem, i: Operands) -> None:
    """Jump to imm if N equals V (after cmp: signed greater or equal)."""
    jump_if(s, ~(flag(s, FLAG_N) ^ flag(s, FLAG_V)), i.imm)


@insn("jr", 0x26, "rs")
def jr(s: Sem, i: Operands) -> None:
    """pc <- rs."""
    s.jump(s.reg(i.rs))


@insn("call", 0x27, "imm")
def call(s: Sem, i: Operands) -> None:
    """Push the address of the next instruction; pc <- imm."""
    s.push(s.next_pc)
    s.jump(i.imm)


@insn("ret", 0x28)
def ret(s: Sem, i: Operands) -> None:
    """pc <- the word popped from the stack."""
    s.jump(s.pop())


@insn("sys", 0x29, "imm")
def sys(s: Sem, i: Operands) -> None:
    """System call: trap with cause SYSCALL; imm is saved as the trap's info."""
    s.trap_if(TRUE, Cause.SYSCALL, i.imm)


# ==========================================================================
# The system: trap return, interrupts, flags, mode, R, paging, timer, I/O
# In user mode the x86-style forms do not trap; `pg` makes them privileged.
# ==========================================================================
@insn("rti", 0x30)
def rti(s: Sem, i: Operands) -> None:
    """Return from trap: reload the PSW saved at OLD_PSW."""
    return_from_trap(s)


@insn("ei", 0x31)
def ei(s: Sem, i: Operands) -> None:
    """Enable interrupts."""
    s.set(IE, 1)


@insn("di", 0x32)
def di(s: Sem, i: Operands) -> None:
    """Disable interrupts."""
    s.set(IE, 0)


@insn("pushf", 0x33)
def pushf(s: Sem, i: Operands) -> None:
    """Push the flags word: N Z C V and the interrupt-enable bit."""
    w = s.arch.word
    s.push(zext(s.get(FLAGS), w) | (zext(s.get(IE), w) << PSW_IE_BIT))


@insn("popf", 0x34)
def popf(s: Sem, i: Operands) -> None:
    """Pop the flags word.  In user mode the interrupt-enable bit is left as it
    was, silently (as x86 `popf` without IOPL)."""
    word = s.pop()
    s.set(FLAGS, extract(word, 3, 0))
    s.set(IE, ite(s.in_user_mode, s.get(IE), bit(word, PSW_IE_BIT)))


@insn("rdmode", 0x35, "rd")
def rdmode(s: Sem, i: Operands) -> None:
    """rd <- 1 in supervisor mode, 0 in user mode."""
    s.set_reg(i.rd, zext(s.get(MODE), s.arch.word))


@insn("rdbase", 0x36, "rd")
def rdbase(s: Sem, i: Operands) -> None:
    """rd <- the relocation base."""
    s.set_reg(i.rd, s.get(BASE))


@insn("rdbound", 0x37, "rd")
def rdbound(s: Sem, i: Operands) -> None:
    """rd <- the relocation bound."""
    s.set_reg(i.rd, s.get(BOUND))


@insn("wrr", 0x38, "rd, rs")
def wrr(s: Sem, i: Operands) -> None:
    """Load the relocation register: base <- rd, bound <- rs."""
    s.set(BASE, s.reg(i.rd))
    s.set(BOUND, s.reg(i.rs))


@insn("lptb", 0x39, "rs")
def lptb(s: Sem, i: Operands) -> None:
    """Load the page-table base; 0 turns paging off."""
    s.set(PTBR, s.reg(i.rs))


@insn("stimer", 0x3A, "rs")
def stimer(s: Sem, i: Operands) -> None:
    """Set the timer to rs (0 stops it) and clear a pending tick.  The timer
    counts retired instructions, this one included, so the interrupt becomes
    pending when rs instructions have retired: `stimer` with rs = 1 makes it
    pending at once."""
    s.set(TIMER, s.reg(i.rs))
    s.set(PEND, 0)


@insn("out", 0x3B, "rs")
def out(s: Sem, i: Operands) -> None:
    """Write rs to the output port."""
    s.output(s.reg(i.rs))


@insn("halt", 0x3C)
def halt(s: Sem, i: Operands) -> None:
    """Stop the machine."""
    s.halt()


@insn("jru", 0x40, "imm")
def jru(s: Sem, i: Operands) -> None:
    """Jump to imm and enter user mode (the PDP-10's JRST 1).  Unprivileged:
    in user mode it is an ordinary jump."""
    s.set(MODE, USER)
    s.jump(i.imm)
