"""The `vtx` extension: hardware support for virtualization, in the spec.

This is x86 with what Intel's VT-x and AMD-V added (the lecture's "hardware
support"), reduced to its essentials and written once, like every other
instruction, so the concrete machine and the Z3 proofs both see it:

* **Guest mode** (the `GUEST` slot).  In guest mode the ordinary state slots
  (registers, flags, IE, mode, R, PTBR, timer) *are the guest's*: the guest
  kernel runs in real supervisor mode and its sensitive instructions act on
  its own state, so most of them need no help from the VMM at all.
* **The VMCS**, a structure in host storage whose address `vmrun` takes:

  ====================  ====================================================
  word                  holds
  ====================  ====================================================
  ``CTRL``              exit controls: bit ``X_*`` set = that event exits
  ``NPT``               nested page-table base (0: no nested paging)
  ``REASON``            exit reason: the trap cause that ended guest mode
  ``QUAL``              exit qualification: that trap's info word
  ``GUEST_AREA`` + k    guest state, in `SAVED` order (saved on exit)
  ``HOST_AREA`` + k     host state, in `SAVED` order (saved on entry)
  ====================  ====================================================

* **VM entry** (`vmrun rs`, privileged): save the host state, load the
  guest state, the exit controls and the nested base, enter guest mode.
* **VM exit**: a trap in guest mode whose cause is `Cause.VMEXIT` (an
  instruction whose control bit is set: checked *before* the instruction's
  own behaviour, so the instruction has no effect), `Cause.NPF` (a nested
  page fault), or any guest trap the controls ask to exit on.  The trap
  mechanism then saves the guest state, the reason and qualification in
  the VMCS and loads the host state (`enter_trap_or_exit`).  Other guest
  traps are delivered inside the guest, by the P&G mechanism, at the
  guest's own (guest-physical) PSW locations.
* **Nested paging** (`nested`): in guest mode every "physical" address,
  including the page-table entries the guest's own paging reads, is
  guest-physical and is mapped by the nested table at `NPTBR` (one level,
  entries shaped like ordinary page-table entries, the user bit ignored;
  an entry naming storage that does not exist counts as not present).

The timer ticks after every retired instruction, `vmrun` included, and in
guest mode the timer slot is the guest's; so VM entry loads the saved
guest timer plus one, and the guest sees exactly its own instructions
counted (a saved timer of 0 stays 0; one of 2**word - 1 loses one tick).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dataclasses import replace

from .bits import Expr, any_of, bit, eq, ite, ne, uge, ult, zext
from .instructions import Insn
from .state import (
    ARCH,
    BASE,
    BOUND,
    GUEST,
    NEW_BASE,
    NEW_BOUND,
    NEW_PC,
    NEW_PSW,
    NPTBR,
    OLD_BASE,
    OLD_BOUND,
    OLD_CAUSE,
    OLD_INFO,
    OLD_PC,
    OLD_PSW,
    PC,
    PEND,
    PTBR,
    TIMER,
    VMCS,
    XCTL,
    Cause,
)
from .trap import current_psw, load_psw

if TYPE_CHECKING:  # annotations only: sem.py imports this module at run time
    from .sem import Operands, Sem

VTX_ARCH = replace(ARCH, vtx=True)

# -- the VMCS layout (word offsets from the VMCS address) ----------------------
CTRL, NPT, REASON, QUAL = 0, 1, 2, 3
# The state saved and loaded on entry and exit, in storage order.
SAVED = (*(f"r{k}" for k in range(ARCH.nregs)), "pc", "psw", "base", "bound", "ptbr", "timer", "pend")
# Where each saved word comes from in the state vector (the PSW word packs
# several slots: `PSW_LAYOUT`).
SAVED_SLOT: dict[str, int] = {
    **{f"r{k}": k for k in range(ARCH.nregs)},
    "pc": PC, "base": BASE, "bound": BOUND, "ptbr": PTBR, "timer": TIMER, "pend": PEND,
}
GUEST_AREA = 4
HOST_AREA = GUEST_AREA + len(SAVED)
SIZE = HOST_AREA + len(SAVED)

# -- exit controls: bit numbers in the CTRL word -------------------------------
X_HALT = 0  # halt exits (in guest mode it would stop the host)
X_OUT = 1  # out exits (the output port is the host's)
X_STIMER = 2
X_LPTB = 3
X_WRR = 4
X_IE = 5  # ei and di
X_RTI = 6
X_FLAGS = 7  # pushf and popf
X_READS = 8  # rdmode, rdbase, rdbound
X_INTR = 14  # a guest timer interrupt exits instead of being delivered
X_EXC = 15  # every other guest trap exits instead of being delivered

# Which control bit governs which instruction (the hardware manual's table).
EXIT_CONTROL: dict[str, int] = {
    "halt": X_HALT,
    "out": X_OUT,
    "stimer": X_STIMER,
    "lptb": X_LPTB,
    "wrr": X_WRR,
    "ei": X_IE,
    "di": X_IE,
    "rti": X_RTI,
    "pushf": X_FLAGS,
    "popf": X_FLAGS,
    "rdmode": X_READS,
    "rdbase": X_READS,
    "rdbound": X_READS,
}


def in_guest(s: Sem) -> Expr:
    return eq(s.get(GUEST), 1)


# -- nested paging --------------------------------------------------------------
def nested_walk(s: Sem, gpa: Expr, *, write: bool) -> tuple[Expr, Expr]:
    """(host-physical address, refused) for guest-physical ``gpa``.  Outside
    guest mode, or with no nested table, the address is ``gpa`` itself."""
    arch = s.arch
    on = in_guest(s) & ne(s.get(NPTBR), 0)
    npte = s.load_host(s.get(NPTBR) + (gpa >> arch.page_bits))
    mapped = (npte & ~s.word(arch.page_size - 1)) | (gpa & (arch.page_size - 1))
    refused = ~bit(npte, 0) | uge(mapped, s.memsize)  # not present, or no such storage
    if write:
        refused = refused | ~bit(npte, 1)
    return ite(on, mapped, gpa), on & refused


def nested(s: Sem, gpa: Expr, *, write: bool, when: Expr | None = None) -> Expr:
    """Host-physical address of ``gpa``; a refused access traps NPF (a VM
    exit), counted only ``when`` that condition holds."""
    host, refused = nested_walk(s, gpa, write=write)
    s.trap_if(refused if when is None else when & refused, Cause.NPF, gpa)
    return host


# -- saving and loading state ------------------------------------------------
def state_words(s: Sem, pc: Expr) -> list[Expr]:
    """The current state in `SAVED` order (``pc`` is the PC to save)."""
    regs = [s.reg(s.regnum(k)) for k in range(s.arch.nregs)]
    return [*regs, pc, current_psw(s), s.get(BASE), s.get(BOUND), s.get(PTBR), s.get(TIMER), zext(s.get(PEND), s.arch.word)]


def read_state_area(s: Sem, at: Expr) -> dict[str, Expr]:
    return {name: s.load_host(at + k) for k, name in enumerate(SAVED)}


def load_state(s: Sem, v: dict[str, Expr], keep: Expr | None = None, timer: Expr | None = None) -> None:
    """Make the values ``v`` current; where ``keep`` holds, registers keep theirs."""

    def pick(new: Expr, old: Expr) -> Expr:
        return new if keep is None else ite(keep, old, new)

    for k in range(s.arch.nregs):
        s.set_reg(s.regnum(k), pick(v[f"r{k}"], s.reg(s.regnum(k))))
    s.set(PTBR, pick(v["ptbr"], s.get(PTBR)))
    s.set(TIMER, timer if timer is not None else v["timer"])
    s.set(PEND, pick(bit(v["pend"], 0), s.get(PEND)))


def saved_state(M, at: int, arch=ARCH) -> dict[int, int]:
    """A state area of a VMCS in storage ``M`` (at word ``at``), as state
    slots and plain values: for tools and VMMs reading what entry or exit
    saved (the layout is `SAVED`; the PSW word's fields are where
    `PSW_LAYOUT` puts them, as `load_psw` unpacks them)."""
    from .state import PSW_LAYOUT, field_width

    out: dict[int, int] = {}
    for k, name in enumerate(SAVED):
        value = M[at + k]
        if name == "psw":
            for slot, low in PSW_LAYOUT.items():
                out[slot] = (value >> low) & ((1 << field_width(slot, arch)) - 1)
        else:
            out[SAVED_SLOT[name]] = value
    return out


def host_state(S, M) -> dict[int, int]:
    """In guest mode, the host's own state, waiting in the current VMCS."""
    return saved_state(M, S[VMCS] + HOST_AREA)


# -- VM entry ----------------------------------------------------------------------
VMRUN_OPCODE = 0x41


def _vmrun(s: Sem, i: Operands) -> None:
    """VM entry: save the host state in the VMCS at rs (PC = the next
    instruction), load the guest state, exit controls and nested page-table
    base from it, and enter guest mode.  In guest mode it always exits (this
    machine does not nest guest modes in hardware).  Privileged."""
    s.trap_if(in_guest(s), Cause.VMEXIT, VMRUN_OPCODE)
    s.privileged()
    v = s.reg(i.rs)
    end = v + SIZE
    s.trap_if(ult(end, v) | ult(s.memsize, end), Cause.MEMORY, v)
    for k, word in enumerate(state_words(s, s.next_pc)):
        s.store_host(v + HOST_AREA + k, word)
    g = read_state_area(s, v + GUEST_AREA)
    t = g["timer"]
    load_state(s, g, timer=ite(eq(t, 0) | eq(t, s.arch.mask), t, t + 1))  # see module doc
    load_psw(s, g["psw"], g["pc"], g["base"], g["bound"])
    s.set(XCTL, s.load_host(v + CTRL))
    s.set(NPTBR, s.load_host(v + NPT))
    s.set(VMCS, v)
    s.set(GUEST, 1)


vmrun = Insn("vmrun", VMRUN_OPCODE, "rs", _vmrun, (_vmrun.__doc__ or "").strip())


# -- VM exits ------------------------------------------------------------------
def exiting(control_bit: int, base: Insn) -> Insn:
    """``base``, made to exit when in guest mode with ``control_bit`` set.
    The exit is checked first: an exiting instruction has no effect."""

    def run(s: Sem, i: Operands) -> None:
        s.trap_if(in_guest(s) & bit(s.get(XCTL), control_bit), Cause.VMEXIT, base.opcode)
        base.run(s, i)

    doc = f"In guest mode, exits when exit control {control_bit} is set. {base.doc}"
    return Insn(base.name, base.opcode, base.syntax, run, doc)


_PSW_WRITES = (OLD_PSW, OLD_PC, OLD_BASE, OLD_BOUND, OLD_CAUSE, OLD_INFO)
_PSW_READS = (NEW_PSW, NEW_PC, NEW_BASE, NEW_BOUND)


def enter_trap_or_exit(s: Sem, cause: Expr, info: Expr) -> None:
    """The trap mechanism of a vtx machine.

    Outside guest mode, and for guest traps that do not exit, it is P&G's
    (old PSW saved at OLD_PSW, new PSW loaded from NEW_PSW), at guest-
    physical locations in guest mode.  A trap in guest mode *exits* when its
    cause is VMEXIT or NPF, when the controls ask for it (X_INTR for the
    timer interrupt, X_EXC for any other trap), or when the guest's PSW
    locations are not mapped by the nested table: then the guest state,
    reason and qualification go to the VMCS and the host state is loaded.
    Storage writes are unconditional in the effect record, so each write
    chooses its address and value by ``exits``; the P&G side repeats its
    last write (same word, same value) to match the exit side's count."""
    w = s.word
    ctl = s.get(XCTL)
    interrupt = eq(cause, Cause.TIMER)
    pg_writes = [nested_walk(s, w(a), write=True) for a in _PSW_WRITES]
    pg_reads = [nested_walk(s, w(a), write=False) for a in _PSW_READS]
    unmapped = any_of(*(refused for _, refused in pg_writes + pg_reads))
    exits = in_guest(s) & any_of(
        eq(cause, Cause.VMEXIT),
        eq(cause, Cause.NPF),
        unmapped,
        interrupt & bit(ctl, X_INTR),
        ~interrupt & bit(ctl, X_EXC),
    )

    vmcs = s.get(VMCS)
    exit_stores = [(vmcs + GUEST_AREA + k, v) for k, v in enumerate(state_words(s, s.get(PC)))]
    exit_stores += [(vmcs + REASON, cause), (vmcs + QUAL, info)]
    pg_values = (current_psw(s), s.get(PC), s.get(BASE), s.get(BOUND), cause, info)
    pg_stores = [(addr, v) for (addr, _), v in zip(pg_writes, pg_values)]
    for k, (ea, ev) in enumerate(exit_stores):
        pa, pv = pg_stores[min(k, len(pg_stores) - 1)]
        s.store_host(ite(exits, ea, pa), ite(exits, ev, pv))

    h = read_state_area(s, vmcs + HOST_AREA)
    new = [s.load_host(addr) for addr, _ in pg_reads]
    load_state(s, h, keep=~exits, timer=ite(exits, h["timer"], s.get(TIMER)))
    s.set(PEND, ite(exits, bit(h["pend"], 0), ite(interrupt, 0, s.get(PEND))))
    load_psw(
        s,
        ite(exits, h["psw"], new[0]),
        ite(exits, h["pc"], new[1]),
        ite(exits, h["base"], new[2]),
        ite(exits, h["bound"], new[3]),
    )
    s.set(GUEST, ite(exits, 0, s.get(GUEST)))
