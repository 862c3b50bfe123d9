"""The P&G trap mechanism, the timer, and the program status word.

A trap stores the old PSW (mode, program counter, relocation register, and
here also flags and interrupt enable) in storage and loads a new PSW from
storage.  The trapping instruction has no other effect, and the saved PC is
the PC of the instruction that trapped (a system-call handler adds the
instruction length before returning).  An interrupt is taken between
instructions, and saves the PC of the instruction not yet run.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .bits import TRUE, Expr, eq, extract, ite, zext
from .state import (
    BASE,
    BOUND,
    FLAGS,
    IE,
    MODE,
    NEW_BASE,
    NEW_BOUND,
    NEW_PC,
    NEW_PSW,
    OLD_BASE,
    OLD_BOUND,
    OLD_CAUSE,
    OLD_INFO,
    OLD_PC,
    OLD_PSW,
    PC,
    PEND,
    PSW_IE_BIT,
    PSW_LAYOUT,
    PSW_MODE_BIT,
    TIMER,
    Cause,
    field_width,
)

if TYPE_CHECKING:  # annotations only
    from .sem import Sem


def psw_word(s: Sem, flags: Expr, ie: Expr, mode: Expr) -> Expr:
    w = s.arch.word
    return zext(flags, w) | (zext(ie, w) << PSW_IE_BIT) | (zext(mode, w) << PSW_MODE_BIT)


def current_psw(s: Sem) -> Expr:
    return psw_word(s, s.get(FLAGS), s.get(IE), s.get(MODE))


def load_psw(s: Sem, psw: Expr, pc: Expr, base: Expr, bound: Expr) -> None:
    """Make a stored PSW the current one."""
    for slot, low in PSW_LAYOUT.items():  # flags, interrupt enable, mode
        s.set(slot, extract(psw, low + field_width(slot, s.arch) - 1, low))
    s.set(PC, pc)
    s.set(BASE, base)
    s.set(BOUND, bound)


def enter_trap(s: Sem, cause: Expr, info: Expr) -> None:
    """Save the old PSW at OLD_PSW and load the new one from NEW_PSW.
    (On a vtx machine a trap may instead exit guest mode: spec/vtx.py.)"""
    for addr, value in (
        (OLD_PSW, current_psw(s)),
        (OLD_PC, s.get(PC)),
        (OLD_BASE, s.get(BASE)),
        (OLD_BOUND, s.get(BOUND)),
        (OLD_CAUSE, cause),
        (OLD_INFO, info),
    ):
        s.store_phys(s.word(addr), value)
    load_psw(
        s,
        s.load_phys(s.word(NEW_PSW)),
        s.load_phys(s.word(NEW_PC)),
        s.load_phys(s.word(NEW_BASE)),
        s.load_phys(s.word(NEW_BOUND)),
    )


def return_from_trap(s: Sem) -> None:
    """Reload the PSW a trap saved: the tail of every trap handler."""
    load_psw(
        s,
        s.load_phys(s.word(OLD_PSW)),
        s.load_phys(s.word(OLD_PC)),
        s.load_phys(s.word(OLD_BASE)),
        s.load_phys(s.word(OLD_BOUND)),
    )


def undecodable(s: Sem) -> None:
    """What the machine does when the two words at PC are no instruction of
    its profile (``encoding.decode`` refuses them): it traps ILLEGAL with
    the PC of those words as info, and nothing else happens.  The trap
    saves that PC too, so a handler (or a VMM that plants illegal words as
    hypercalls) finds the words."""
    s.trap_if(TRUE, Cause.ILLEGAL, s.pc)


def tick(s: Sem) -> None:
    """After each retired instruction: count the timer down; at zero, interrupt."""
    timer = s.get(TIMER)
    running = ~eq(timer, 0)
    s.set(TIMER, ite(running, timer - 1, timer))
    s.set(PEND, s.get(PEND) | (running & eq(timer, 1)))


# Taking a due interrupt is two steps in order: the pending tick is cleared,
# then the trap mechanism runs with cause TIMER and info 0 (so the PSW or, on
# vtx, the guest state it saves shows no tick pending).  Machines and VMMs
# that take interrupts do exactly this; `popek.model.machine` runs both steps.
INTERRUPT_INFO = 0


def interrupt_due(s: Sem) -> Expr:
    """True when a timer interrupt must be taken before the next instruction."""
    return s.get(PEND) & s.get(IE)
