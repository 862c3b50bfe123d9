"""Tracing: run a definition once on free inputs to get its `Effects`.

Both back ends start here, so the concrete machine and the proofs see the
same effects, including the rule that an instruction which does not jump
falls through to the next one.
"""

from __future__ import annotations

from functools import lru_cache

from .bits import var
from .instructions import Insn
from .sem import Effects, Sem, operands
from .state import ARCH, PC, PEND, Arch, Cause
from .trap import enter_trap, interrupt_due, tick


@lru_cache(maxsize=None)
def trace(insn: Insn, arch: Arch = ARCH) -> Effects:
    s = Sem(arch)
    insn.run(s, operands(arch))
    if PC not in s.fx.field_writes:
        s.set(PC, s.next_pc)
    return s.fx


@lru_cache(maxsize=None)
def trace_trap(arch: Arch = ARCH) -> Effects:
    """The trap mechanism, with the cause and info as free inputs."""
    s = Sem(arch)
    enter_trap(s, var("cause", arch.word), var("info", arch.word))
    return s.fx


@lru_cache(maxsize=None)
def trace_tick(arch: Arch = ARCH) -> Effects:
    s = Sem(arch)
    tick(s)
    return s.fx


def interrupt_condition(arch: Arch = ARCH):
    return interrupt_due(Sem(arch))
