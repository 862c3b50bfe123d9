"""Tracing: run a definition once on free inputs to get its `Effects`.

Both back ends start here, so the concrete machine and the proofs see the
same effects, including the rule that an instruction which does not jump
falls through to the next one.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Callable

from .bits import Expr, var
from .instructions import Insn
from .sem import Effects, Sem, operands
from .state import ARCH, PC, PEND, Arch, Cause
from .trap import enter_trap, interrupt_due, tick, undecodable
from .vtx import enter_trap_or_exit


@lru_cache(maxsize=None)
def trace(insn: Insn, arch: Arch = ARCH) -> Effects:
    return run_definition(insn, Sem(arch))


def run_definition(insn: Insn, s: Sem) -> Effects:
    """Run ``insn``'s definition on the recorder ``s`` with free operands,
    adding what every instruction shares: one that does not jump falls
    through to the next.  (The proofs pass a `Sem` of their own here.)"""
    insn.run(s, operands(s.arch))
    if PC not in s.fx.field_writes:
        s.set(PC, s.next_pc)
    return s.fx


def trap_mechanism(arch: Arch) -> Callable[[Sem, Expr, Expr], None]:
    """What a trap does on ``arch``: P&G's mechanism, or on a vtx machine
    the one that may exit guest mode instead."""
    return enter_trap_or_exit if arch.vtx else enter_trap


@lru_cache(maxsize=None)
def trace_trap(arch: Arch = ARCH) -> Effects:
    """The trap mechanism, with the cause and info as free inputs."""
    s = Sem(arch)
    trap_mechanism(arch)(s, var("cause", arch.word), var("info", arch.word))
    return s.fx


@lru_cache(maxsize=None)
def trace_undecodable(arch: Arch = ARCH) -> Effects:
    """A cycle whose words at PC decode to no instruction (`trap.undecodable`)."""
    s = Sem(arch)
    undecodable(s)
    return s.fx


@lru_cache(maxsize=None)
def trace_tick(arch: Arch = ARCH) -> Effects:
    s = Sem(arch)
    tick(s)
    return s.fx


def interrupt_condition(arch: Arch = ARCH):
    return interrupt_due(Sem(arch))
