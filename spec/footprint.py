"""Facts about traced effects that every consumer of the spec asks for.

The machine (which instructions may sit inside a compiled block), the
static analyser (which instructions may be sensitive) and the guest
generator (which family an instruction belongs to) all ask the same
questions of an instruction's `Effects`: what does it read and write, does
it always go on to the next instruction, does it always trap.  They are
answered here, once, so that the answers cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass

from .bits import Expr, inputs, reads_slot, slot_of, walk
from .sem import ILEN, Effects
from .state import PC, RESOURCES


@dataclass(frozen=True)
class Footprint:
    """What one instruction's effects read and write."""

    inputs: frozenset[str]  # every free input read: state slots (`Slot`), operands, MEMSIZE
    reads: frozenset[int]  # state slots read
    writes: frozenset[int]  # state slots written
    loads: bool  # reads storage
    stores: bool  # writes storage
    outputs: bool  # writes the output port

    @property
    def resources(self) -> bool:
        """Writes a resource (mode, R, PTBR, ...): the translation context may change."""
        return any(slot in self.writes for slot in RESOURCES)


def footprint(fx: Effects) -> Footprint:
    """The footprint of ``fx``, read off its expressions."""
    roots = fx.roots()
    names = inputs(roots)
    return Footprint(
        inputs=frozenset(names),
        reads=frozenset(s for s in map(slot_of, names) if s is not None),
        writes=frozenset(fx.field_writes),
        loads=any(e.op == "mem" for e in walk(roots)),
        stores=bool(fx.mem_writes),
        outputs=bool(fx.outputs),
    )


def is_next_pc(pc: Expr) -> bool:
    """``pc`` is the address of the next instruction: PC + ILEN."""
    return (
        pc.op == "add"
        and reads_slot(pc.args[0], PC)
        and pc.args[1].op == "const"
        and pc.args[1].args[0] == ILEN
    )


def falls_through(fx: Effects) -> bool:
    """Unless it traps, the instruction always goes on to the next one: it
    leaves PC alone (a definition not yet traced) or sets it to PC + ILEN
    (what `trace` records for one that does not jump)."""
    pc = fx.field_writes.get(PC)
    return pc is None or is_next_pc(pc)


def always_traps(fx: Effects) -> bool:
    """Some trap condition is the constant 1: the instruction never retires."""
    return any(c.op == "const" and c.args[0] == 1 for c, _cause, _info in fx.traps)
