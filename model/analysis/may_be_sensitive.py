"""Which instructions may be sensitive (conservatively): those a software VMM
must not let run on the host as they are.

Binary translation and paravirtualization both need, per instruction, the
answer to one question: *could this instruction, run on the host in real
user mode over the guest's storage, do anything other than what it does on
the guest's own machine?*  The answer is read off the instruction's traced
effects (``popek.spec.trace``), never from a list of names.

The test is syntactic and conservative.  The instruction is traced with
storage translation made transparent (the VMM virtualizes translation
itself, with R copied and shadow page tables), and it *needs the VMM* when
its effects

* read or write a resource (``spec.state.RESOURCES``: mode, R, IE, PTBR,
  timer, pending tick, halt, the vtx slots): control- or behaviour-sensitive
  in P&G's sense, extended as docs/theory.md extends them;
* read or write storage by physical address (the trap area: ``rti``), which
  bypasses R and so is location-sensitive;
* write the output port.

Every instruction the Z3 classification (``popek.proofs.classify``) finds
sensitive is caught here; the converse need not hold (a privileged
instruction reads the mode to decide whether to trap, so it counts here),
which costs a VMM call but never fidelity.  Hence the module's name: an
instruction that needs the VMM here *may be* sensitive; whether it is, is
the classification's decision.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from popek.spec.bits import Expr, inputs
from popek.spec.footprint import falls_through
from popek.spec.footprint import footprint as spec_footprint
from popek.spec.instructions import Insn
from popek.spec.sem import Sem, operands
from popek.spec.state import PC, RESOURCES, Arch


class _Transparent(Sem):
    """A recorder for which virtual addresses are physical addresses."""

    def load(self, vaddr: Expr) -> Expr:
        return self.word_at(vaddr)

    def store(self, vaddr: Expr, value: Expr) -> None:
        self.store_host(vaddr, value)


@dataclass(frozen=True)
class Footprint:
    """What an instruction touches, translation aside."""

    reads: frozenset[int]  # state slots read
    writes: frozenset[int]  # state slots written
    physical: bool  # reads storage by physical address
    output: bool  # writes the output port
    memory: bool  # reads or writes storage at all
    loads: bool  # reads storage
    jump_to_imm: bool  # the new PC depends on the immediate (a direct jump)
    falls_through: bool  # the new PC is always the next instruction

    @property
    def needs_vmm(self) -> bool:
        resources = set(RESOURCES)
        return bool(self.output or self.physical or (self.reads | self.writes) & resources)


@lru_cache(maxsize=None)
def footprint(insn: Insn, arch: Arch) -> Footprint:
    s = _Transparent(arch)
    insn.run(s, operands(arch))
    fx = s.fx
    seen = spec_footprint(fx)
    pc_write = fx.field_writes.get(PC)
    return Footprint(
        reads=seen.reads - {PC},
        writes=seen.writes - {PC},
        physical="MEMSIZE" in seen.inputs,
        output=seen.outputs,
        memory=seen.loads or seen.stores,
        loads=seen.loads,
        jump_to_imm=pc_write is not None and "imm" in inputs([pc_write]),
        falls_through=falls_through(fx),
    )


def needs_vmm(insn: Insn, arch: Arch) -> bool:
    """True when ``insn`` must be emulated, translated or rewritten."""
    return footprint(insn, arch).needs_vmm
