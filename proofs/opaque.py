"""Instructions traced with the memory layer cut out.

Address translation is where proofs about two related states (a state and
its relocated copy, a virtual state and its real image) spend their time:
Z3 has to rediscover, inside every query, that translating one address in
the two states agrees.  This module traces an instruction's definition
against a `Sem` whose translation is *opaque*: every storage access gets
fresh inputs (fault, cause, info, physical address).  A query then relates
the two runs' accesses by a lemma about translation that is proved once,
on its own; what is left has no address arithmetic and is quick.

The definition traced is the instruction's own (``insn.run``): nothing of
its behaviour is restated.  Only the memory layer is replaced, and the
lemma that stands in for it is proved by Z3 from ``spec.memory.translate``.
"""

from __future__ import annotations

from functools import lru_cache

import z3

from popek.spec.bits import Expr, eq, var
from popek.spec.instructions import Insn
from popek.spec.memory import translate
from popek.spec.sem import Effects, Sem
from popek.spec.state import Arch, Cause
from popek.spec.trace import run_definition


@lru_cache(maxsize=None)
def translation(arch: Arch, write: bool) -> tuple[Effects, Expr, tuple[Cause, ...]]:
    """The spec's translation of a free virtual address, traced once."""
    s = Sem(arch)
    phys = translate(s, var("vaddr", arch.word), write=write)
    causes = tuple(dict.fromkeys(c for _, c, _ in s.fx.traps))
    return s.fx, phys, causes


class _OpaqueMemory(Sem):
    """A `Sem` whose storage accesses go through an *opaque* translation:
    each access gets fresh inputs (fault, cause, info, physical address)
    instead of the spec's translation.  Tracing an instruction's definition
    against it gives the instruction's effects with the memory layer cut
    out; the translation lemma supplies what is known about the inputs."""

    def __init__(self, arch: Arch):
        super().__init__(arch)
        self.accesses: list[tuple[Expr, str, bool]] = []  # vaddr, input prefix, write

    def _access(self, vaddr: Expr, write: bool) -> Expr:
        w = self.arch.word
        name = f"acc{len(self.accesses)}"
        self.accesses.append((vaddr, name, write))
        fault, cause = var(f"{name}.fault", 1), var(f"{name}.cause", w)
        for c in translation(self.arch, write)[2]:
            self.trap_if(fault & eq(cause, int(c)), c, var(f"{name}.info", w))
        return var(f"{name}.phys", w)

    def load(self, vaddr: Expr) -> Expr:
        return self.word_at(self._access(vaddr, False))

    def store(self, vaddr: Expr, value: Expr) -> None:
        self.store_host(self._access(vaddr, True), value)


@lru_cache(maxsize=None)
def opaque_trace(insn: Insn, arch: Arch) -> tuple[Effects, tuple]:
    """``insn`` traced against `_OpaqueMemory`, by the spec's own rules
    (``popek.spec.trace.run_definition``, which `trace` uses too)."""
    s = _OpaqueMemory(arch)
    return run_definition(insn, s), tuple(s.accesses)


def access_inputs(side: str, accesses, arch: Arch) -> dict[str, z3.BitVecRef]:
    """Fresh Z3 inputs for every opaque access of one run."""
    w = arch.word
    out: dict[str, z3.BitVecRef] = {}
    for _vaddr, name, _write in accesses:
        out[f"{name}.fault"] = z3.BitVec(f"{side}.{name}.fault", 1)
        for part in ("cause", "info", "phys"):
            out[f"{name}.{part}"] = z3.BitVec(f"{side}.{name}.{part}", w)
    return out


def causes_known(accesses, arch: Arch, ins: dict) -> list[z3.BoolRef]:
    """A faulting opaque access faults with one of translation's causes."""
    out = []
    for _vaddr, name, write in accesses:
        causes = translation(arch, write)[2]
        out.append(z3.Implies(ins[f"{name}.fault"] == 1,
                              z3.Or(*[ins[f"{name}.cause"] == int(c) for c in causes])))
    return out
