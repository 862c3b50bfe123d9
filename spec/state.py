"""The architectural state of the machine, and the fixed places it uses.

P&G write the state as S = <E, M, P, R>: storage, mode, program counter and
relocation-bounds register.  Ours adds what a machine needs to host an
operating system: general registers, arithmetic flags, an interrupt-enable
flag, a page-table base, an instruction-counting timer, an output port and
a halt latch.  Every field below is one slot of the concrete machine's state
vector and one Z3 constant in the proofs.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum


@dataclass(frozen=True)
class Arch:
    """Parameters of the machine family; the spec never writes a width as a literal."""

    word: int = 16  # bits in a word; addresses and registers are one word
    nregs: int = 8  # general registers r0..r7; r7 is the stack pointer
    page_bits: int = 6  # a page is 2**page_bits words
    # the vtx extension (spec/vtx.py): guest mode, VM exits, nested paging.
    # Off, the vtx slots below exist but nothing reads or writes them.
    vtx: bool = False
    # the partition feature (spec/partition.py): every physical address is
    # relocated and bounded by the partition register.  Off, nothing reads it.
    partition: bool = False

    @property
    def mask(self) -> int:
        return (1 << self.word) - 1

    @property
    def page_size(self) -> int:
        return 1 << self.page_bits

    @property
    def reg_bits(self) -> int:
        return max(1, (self.nregs - 1).bit_length())


ARCH = Arch()

SP = 7  # the stack pointer is general register 7

# -- the state vector ------------------------------------------------------
# Registers occupy slots 0..nregs-1; the named fields follow.
PC, FLAGS, IE, MODE, BASE, BOUND, PTBR, TIMER, PEND, HALTED = range(8, 18)
# vtx only (spec/vtx.py): guest mode on, current VMCS, exit controls, nested table base
GUEST, VMCS, XCTL, NPTBR = range(18, 22)
NSLOTS = 22

FIELD_NAMES = {
    **{i: f"r{i}" for i in range(8)},
    PC: "pc",
    FLAGS: "flags",
    IE: "ie",
    MODE: "mode",
    BASE: "base",
    BOUND: "bound",
    PTBR: "ptbr",
    TIMER: "timer",
    PEND: "pend",
    HALTED: "halted",
    GUEST: "guest",
    VMCS: "vmcs",
    XCTL: "xctl",
    NPTBR: "nptbr",
}
FIELD_BY_NAME = {v: k for k, v in FIELD_NAMES.items()}
FIELD_NAMES[SP] = "sp"  # printed as sp; r7 still accepted by name
FIELD_BY_NAME["sp"] = SP

# 1-bit fields; every other field is one word.
BIT_FIELDS = frozenset({IE, MODE, PEND, HALTED, GUEST})
FLAG_BITS = 4  # N Z C V

# Fields that are *resources* in the sense of P&G's control-sensitivity,
# extended (as Penneman et al. do for ARM) to interrupts, paging, timer, halt.
# Changing one of these without trapping makes an instruction control-sensitive.
RESOURCES = (MODE, BASE, BOUND, IE, PTBR, TIMER, PEND, HALTED, GUEST, VMCS, XCTL, NPTBR)

SUPERVISOR, USER = 1, 0


def field_width(slot: int, arch: Arch = ARCH) -> int:
    if slot in BIT_FIELDS:
        return 1
    if slot == FLAGS:
        return FLAG_BITS
    return arch.word


# -- arithmetic flags (the low four bits of the PSW word) -----------------
FLAG_V, FLAG_C, FLAG_Z, FLAG_N = 1, 2, 4, 8

# -- the program status word as stored in memory ---------------------------
# bits 0-3: N Z C V flags; bit 4: interrupt enable; bit 5: mode (1 = supervisor)
PSW_IE_BIT = 4
PSW_MODE_BIT = 5
# The same layout as a table, slot -> its lowest bit in the PSW word (its
# width is `field_width`): what `trap.load_psw` unpacks and
# `vtx.saved_state` reads back.
PSW_LAYOUT = {FLAGS: 0, IE: PSW_IE_BIT, MODE: PSW_MODE_BIT}


class Cause(IntEnum):
    """Why a trap happened; stored in the old-PSW area."""

    NONE = 0
    PRIVILEGED = 1  # privileged instruction in user mode
    MEMORY = 2  # relocation-bounds violation (P&G's memory trap)
    PAGE = 3  # page not present, or write/user permission missing
    SYSCALL = 4  # the `sys` instruction
    TIMER = 5  # timer interrupt
    ILLEGAL = 6  # undefined opcode or register
    VMEXIT = 7  # vtx: an event the VMCS asks to exit on
    NPF = 8  # vtx: a guest-physical address the nested page table does not map


# -- fixed physical locations of the trap mechanism -------------------------
# A trap stores the old PSW at OLD_PSW and loads the new one from NEW_PSW,
# exactly as in P&G (one location each; the handler reads the cause).
OLD_PSW = 0  # psw word, pc, base, bound, cause, info (fault address)
OLD_PC, OLD_BASE, OLD_BOUND, OLD_CAUSE, OLD_INFO = 1, 2, 3, 4, 5
NEW_PSW = 8  # psw word, pc, base, bound
NEW_PC, NEW_BASE, NEW_BOUND = 9, 10, 11
FIRST_FREE = 16  # the lowest address a program may use freely

# -- page-table entries -----------------------------------------------------
# A page table is an array of one-word entries at physical address PTBR,
# indexed by virtual page number.  Paging is on whenever PTBR != 0.
PTE_PRESENT, PTE_WRITE, PTE_USER = 1, 2, 4
# The frame's physical address is the entry with its low page_bits cleared.
