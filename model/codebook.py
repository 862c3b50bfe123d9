"""Compiled code per profile: what every machine of one profile shares.

Compiling an instruction's effects costs far more than running them, and
the code depends only on the profile, so it is made once per profile and
kept here: the per-opcode operations, the straight-line blocks of hot code,
the machine cycle's routines (trap mechanism, timer tick, fetch) and the
decodes of word pairs.  `PerProfile` is the keeping itself; the exact
prefix of the reach analysis (``popek.model.analysis.reach_exact``) keeps
its own compiled routines the same way, beside this `Codebook`.

What the machine's run loop needs to know of an instruction (whether it may
end a block, must run alone, may change the translation context) is read
off its traced effects here too, with the spec's own facts
(``popek.spec.footprint``), never from its name.
"""

from __future__ import annotations

from typing import Callable, ClassVar, TypeVar

from popek.spec import state as st
from popek.spec.bits import Expr, children
from popek.spec.encoding import Decoded, decode
from popek.spec.footprint import always_traps, falls_through, footprint
from popek.spec.instructions import Insn
from popek.spec.memory import fetch_addresses
from popek.spec.profiles import Profile
from popek.spec.sem import ILEN, Effects, Sem
from popek.spec.state import FLAGS, PEND, TIMER
from popek.spec.trace import trace, trace_tick, trace_trap, trace_undecodable

from . import codegen
from .codegen import Emitter, Step, emit_guards, state_binder

# The machine's compiled code closes over its state vector, storage, output
# log, watched pages, the invalidation callback, memsize and the partition
# register.
CLOSURE = "S, M, O, CP, INV, MS, PT"
MAX_CACHED_BLOCKS = 4096  # compiled blocks kept per profile
MAX_CACHED_DECODES = 1 << 16  # word pairs whose decode is kept per profile

_Book = TypeVar("_Book", bound="PerProfile")


class PerProfile:
    """Something built once per profile and kept for every later use.

    Keyed by the profile object (a profile derived later with the same
    name is another profile); each subclass keeps its own."""

    profile: Profile
    _kept: ClassVar[dict[int, "PerProfile"]] = {}

    def __init_subclass__(cls, **kw: object) -> None:
        super().__init_subclass__(**kw)
        cls._kept = {}

    @classmethod
    def of(cls: type[_Book], profile: Profile) -> _Book:
        book = cls._kept.get(id(profile))
        if book is None or book.profile is not profile:
            book = cls._kept[id(profile)] = cls(profile)
        return book  # type: ignore[return-value]

    def __init__(self, profile: Profile):
        self.profile = profile


class Codebook(PerProfile):
    """Generated Python for one profile: operations, blocks and routines."""

    def __init__(self, profile: Profile):
        super().__init__(profile)
        arch = profile.arch
        self.arch = arch
        self.ops: dict[int, Callable] = {}
        self.blocks: dict[tuple, tuple[Callable, int, bool]] = {}
        self._decodes: dict[tuple[int, int], Decoded | None] = {}
        self._kinds: dict[int, tuple[bool, bool, bool]] = {}
        routine = codegen.compile_effects
        cause_info = {"cause": "cause", "info": "info"}
        self.trap = routine("trap", trace_trap(arch), arch, "cause, info", CLOSURE, cause_info)
        self.tick = routine("tick", trace_tick(arch), arch, "", CLOSURE, {})
        self.undecodable = routine("undecodable", trace_undecodable(arch), arch, "", CLOSURE, {})
        self.fetch = _fetch_maker(arch)
        self.table_reads = _table_reads_maker(arch) if arch.vtx else None

    def decode(self, w0: int, w1: int) -> Decoded | None:
        """``encoding.decode``, remembered: guests keep running the same words."""
        key = (w0, w1)
        try:
            return self._decodes[key]
        except KeyError:
            pass
        if len(self._decodes) >= MAX_CACHED_DECODES:
            self._decodes.clear()
        d = self._decodes[key] = decode(self.profile, w0, w1)
        return d

    def kind(self, insn: Insn) -> tuple[bool, bool, bool]:
        """What the machine loop needs to know of an instruction, read off
        its traced effects once: (may change the translation context, must
        run alone, ends a block)."""
        k = self._kinds.get(insn.opcode)
        if k is None:
            fx = trace(insn, self.arch)
            k = self._kinds[insn.opcode] = (writes_resources(fx), runs_alone(fx), ends_block(fx))
        return k

    def op(self, insn: Insn) -> Callable:
        maker = self.ops.get(insn.opcode)
        if maker is None:
            maker = self.ops[insn.opcode] = codegen.compile_effects(
                f"op_{insn.name}",
                trace(insn, self.arch),
                self.arch,
                "rd, rs, imm",
                CLOSURE,
                {"rd": "rd", "rs": "rs", "imm": "imm"},
            )
        return maker

    def block(self, pc: int, decoded: list) -> tuple[Callable, int, bool]:
        """A block maker for decoded instructions starting at virtual ``pc``."""
        key = (pc, tuple((d.insn.opcode, d.rd, d.rs, d.imm) for d in decoded))
        hit = self.blocks.get(key)
        if hit is not None:
            return hit
        mask = self.arch.mask
        steps = [
            Step(
                trace(d.insn, self.arch),
                {"rd": str(d.rd), "rs": str(d.rs), "imm": str(d.imm)},
                str((pc + ILEN * k) & mask),
            )
            for k, d in enumerate(decoded)
        ]
        body = codegen.emit_steps(
            self.arch, steps, dead_flags=dead_flags(steps), pb=self.arch.page_bits
        )
        maker = codegen.compile_function("block", "", body, CLOSURE)
        if len(self.blocks) >= MAX_CACHED_BLOCKS:  # long campaigns: forget, do not grow
            self.blocks.clear()
        changes_context = writes_resources(steps[-1].fx)
        hit = self.blocks[key] = (maker, len(decoded), changes_context)
        return hit


def _fetch_maker(arch: st.Arch) -> Callable:
    """``fetch()``: the spec's fetch at PC, ``(p0, p1, 0)`` or, when it
    traps, ``(None, cause, info)``."""
    s = Sem(arch)
    p0, p1 = fetch_addresses(s)
    em = Emitter(arch, state_binder(codegen.MACHINE_INPUTS), "f")
    for cond, _c, info in s.fx.traps:
        em.count(cond)
        em.count(info)
    em.count(p0)
    em.count(p1)
    body, _certain = emit_guards(em, s.fx.traps, lambda cause, info: [f"return (None, {cause}, {info})"])
    a, b = em.expr(p0), em.expr(p1)
    body += em.take() + [f"return ({a}, {b}, 0)"]
    return codegen.compile_function("fetch", "", body, CLOSURE)


def _table_reads_maker(arch: st.Arch) -> Callable:
    """``reads()``: the storage words that translating the fetch at PC reads
    (page-table and nested-table entries), found in the spec's fetch
    expressions: each ``mem`` read, kept when the ``ite`` conditions that
    lead to it hold.  A cached decode depends on exactly these words."""
    s = Sem(arch)
    roots = fetch_addresses(s)
    found: list[tuple[tuple, Expr]] = []
    seen: set = set()

    def visit(e: Expr, guards: tuple) -> None:
        # not `bits.walk`: the same node is visited once per path condition
        if (id(e), guards) in seen:
            return
        seen.add((id(e), guards))
        if e.op == "mem":
            found.append((guards, e.args[0]))
        if e.op == "ite":
            c, a, b = e.args
            visit(c, guards)
            visit(a, guards + (c,))
            visit(b, guards + (~c,))
            return
        for arg in children(e):
            visit(arg, guards)

    for r in roots:
        visit(r, ())
    em = Emitter(arch, state_binder(codegen.MACHINE_INPUTS), "w")
    for guards, addr in found:
        for x in (*guards, addr):
            em.count(x)
    body = ["out = []"]
    for guards, addr in found:
        conds = [em.expr(g) for g in guards]
        a = em.expr(addr)
        body += em.take()
        body.append(f"if {' and '.join(conds) or 'True'}: out.append({a})")
    body.append("return out")
    return codegen.compile_function("table_reads", "", body, CLOSURE)


def writes_resources(fx: Effects) -> bool:
    """The effects may change the translation context (mode, R, PTBR, ...)."""
    return footprint(fx).resources


def ends_block(fx: Effects) -> bool:
    """Control leaves the straight line, or the translation context may change."""
    return not falls_through(fx) or writes_resources(fx) or always_traps(fx)


def dead_flags(steps: list[Step]) -> set[int]:
    """Steps whose FLAGS write no one can see: a later step overwrites it, and
    no step up to that one reads FLAGS, may trap, or may leave the block."""
    dead = set()
    for k, s in enumerate(steps):
        if FLAGS not in s.fx.field_writes:
            continue
        for j in range(k + 1, len(steps)):
            fx = steps[j].fx
            if fx.traps or fx.mem_writes or FLAGS in footprint(fx).reads:
                break
            if FLAGS in fx.field_writes:
                dead.add(k)
                break
    return dead


def runs_alone(fx: Effects) -> bool:
    """run() counts a block's ticks after the block, so an instruction that
    reads or writes the timer must not sit inside one."""
    return bool(
        TIMER in fx.field_writes or PEND in fx.field_writes or {TIMER, PEND} & footprint(fx).reads
    )
