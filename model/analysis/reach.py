"""What a guest can ever read and run: a sound over-approximation, from the spec.

Paravirtualization changes words of the guest's code.  That is safe only
for a guest that can never notice: one that never reads those words as data,
never runs part of one, and never makes, at run time, a sensitive
instruction the rewriting pass has not seen.  Whether a program does any of
these is undecidable in general, so the question is answered on the safe
side: `analyse` interprets the guest *abstractly* from reset, with every
machine value replaced by a set of values (`intervals`), over the spec's own
effects (`trace`, `trace_trap`, `trace_tick`, `fetch_addresses`).  Nothing
about an instruction is written here; a new profile is analysed as it is.

Sound: every concrete run from reset reads, fetches and runs only what the
result lists.  Where the analysis cannot bound something (control that may
go anywhere, code that may be anything), it says so in ``gave_up`` and the
caller must refuse.  Precise enough for the usual guest: constants are
exact, and a load the bounds check let through is known to be below the
bound (a trap condition that did not hold narrows the values it tested).

Storage is one abstract store for the whole run (a word holds any value it
ever holds); registers and state fields are tracked per program counter.

Most of the work is the first phase, the guest's one path from reset while
every value is known: that runs compiled (`reach_exact`), and stops early
where the guest halts or comes back to a state it had.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Callable

from popek.spec.bits import BINARY, Expr, slot_of
from popek.spec.encoding import decode
from popek.spec.image import Image
from popek.spec.instructions import Insn
from popek.spec.memory import fetch_addresses
from popek.spec.profiles import Profile
from popek.spec.sem import Effects, Sem
from popek.spec.state import (
    BASE,
    BOUND,
    FIRST_FREE,
    GUEST,
    HALTED,
    MODE,
    NSLOTS,
    PC,
    PEND,
    PTBR,
    USER,
    Cause,
    field_width,
)
from popek.spec.trace import interrupt_condition, trace, trace_tick, trace_trap
from popek.spec.trap import INTERRUPT_INFO

from ..machine import Machine
from . import intervals as iv
from . import reach_exact
from .intervals import Values

WIDEN = 12  # changes to one value at one program point (or to one word) before it may be anything
# Storage words below FIRST_FREE are where the trap mechanism keeps the old
# and new PSW: machine state more than data, rewritten on every trap.  They
# are tracked per program point, like registers, so a handler's "saved PC + 2"
# does not pile up in the one storage of the whole run.
LOCAL = FIRST_FREE
VISITS = 30_000  # program-point visits before the analysis gives up
EXACT_STEPS = 20_000  # steps followed exactly before values are merged (compiled: a few us each)
# Where the merged phase starts changes how precise it is, and not in step
# with the prefix's length: a guest whose loops are mid-way at one start may
# be bounded from another.  Every start gives a sound answer, so when the
# merged phase gives up after the long prefix, these shorter ones are tried.
RETRY_STEPS = (2_000,)
WORDS = 256  # possible instruction words at one program point before it gives up
PCS = 1024  # possible next program counters one step may have before it gives up


@dataclass
class Reach:
    """What the guest may do, in physical addresses."""

    pcs: set[int] = field(default_factory=set)  # where a step may start (its fetch may trap)
    reads: dict[int, Values] = field(default_factory=dict)  # pc -> data words its step may read
    fetches: dict[int, tuple[Values, Values]] = field(default_factory=dict)  # pc -> its two words
    runs: dict[tuple[int, Insn], Values] = field(default_factory=dict)  # (pc, insn) -> from where
    gave_up: str | None = None  # why nothing above can be trusted


class _Infeasible(Exception):
    """A path whose assumptions no value satisfies."""


class _GiveUp(Exception):
    pass


class _Storage:
    """Every word's possible values over the whole run."""

    def __init__(self, words: dict[int, int], width: int):
        self.exact = False  # while True, ``init`` is storage itself and stores overwrite it
        self.init = words
        self.extra: dict[int, Values] = {}
        self.changes: dict[int, int] = {}
        self.special = sorted(words)  # addresses whose values are not just {0}
        self.wild: Values = ()  # addresses that may hold anything
        self.width = width

    def at(self, a: int) -> Values:
        v = iv.const(self.init.get(a, 0))
        extra = self.extra.get(a)
        return iv.union(v, extra) if extra else v

    def word(self, a: int) -> int:
        """The value of word ``a`` while `exact` (storage is then ``init`` itself)."""
        return self.init.get(a, 0)

    def read(self, addrs: Values) -> Values:
        if iv.overlaps(addrs, self.wild):
            return iv.full(self.width)
        out: Values = ()
        for lo, hi in addrs:
            i, j = bisect.bisect_left(self.special, lo), bisect.bisect_right(self.special, hi)
            if j - i < hi - lo + 1:
                out = iv.union(out, iv.const(0))  # some word there was never given a value
            for a in self.special[i:j]:
                out = iv.union(out, self.at(a))
        return out

    def store(self, addrs: Values, values: Values) -> Values:
        """Record a store; the addresses whose values grew."""
        if self.exact and iv.is_const(addrs) and iv.is_const(values):
            a = addrs[0][0]
            if a not in self.init:
                bisect.insort(self.special, a)
            self.init[a] = values[0][0]
            return ()
        if iv.size(addrs) > 256:
            grown = tuple(p for p in addrs if iv.meet(self.wild, *p) != (p,))  # not wild already
            self.wild = iv.union(self.wild, addrs)
            return grown
        grown = []
        for a in iv.members(addrs):
            old = self.at(a)
            new = iv.union(old, values)
            if new == old:
                continue
            self.changes[a] = n = self.changes.get(a, 0) + 1
            if n > WIDEN:
                new = iv.full(self.width)
            if a not in self.extra and a not in self.init:
                bisect.insort(self.special, a)
            self.extra[a] = new
            grown.append((a, a))
        return iv.make(grown)


class _Eval:
    """The abstract value of expressions over one abstract pre-state."""

    def __init__(self, an: "_Analysis", pc: int, state: list[Values], inputs: dict[str, Values]):
        self.an = an
        self.pc = pc
        self.state = state
        self.inputs = inputs
        self.memo: dict[int, Values] = {}
        self.assumed: dict[int, Values] = {}
        # every input known: evaluate on plain integers (the exact path of
        # `_follow`, which stops as soon as a value is not known)
        self.exact = an.storage.exact
        self.ints: dict[int, int] = {}

    def value(self, e: Expr) -> Values:
        k = id(e)
        v = self.assumed.get(k)
        if v is not None:
            return v
        v = self.memo.get(k)
        if v is None:
            if self.exact:
                n = self._int(e)
                v = ((n, n),)
            else:
                v = self._compute(e)
            self.memo[k] = v
        return v

    def _int(self, e: Expr) -> int:
        """The value of ``e`` when every input is known (the table `EXACT`)."""
        k = id(e)
        n = self.ints.get(k)
        if n is not None:
            return n
        handler = EXACT.get(e.op)
        if handler is None:
            raise ValueError(f"unknown operation {e.op!r}")
        n = self.ints[k] = handler(self, e)
        return n

    def _compute(self, e: Expr) -> Values:
        """The values ``e`` may take (the table `ABSTRACT`)."""
        handler = ABSTRACT.get(e.op)
        if handler is None:
            raise ValueError(f"unknown operation {e.op!r}")
        return handler(self, e)

    def _input(self, name: str) -> Values:
        slot = slot_of(name)
        if slot is not None:
            return self.state[slot]
        if name == "MEMSIZE":
            return iv.const(self.an.memsize)
        return self.inputs[name]

    def _reg(self, index: Values) -> Values:
        out: Values = ()
        for r in iv.members(index):
            out = iv.union(out, self.state[r])
        return out

    def _load(self, addrs: Values) -> Values:
        self.an.note_read(self.pc, addrs, data=True)
        return self.an.read(self.state, addrs)

    def _load_int(self, addr: int) -> int:
        self.an.note_read(self.pc, ((addr, addr),), data=True)
        return self.state[NSLOTS + addr][0][0] if addr < LOCAL else self.an.storage.word(addr)

    # -- paths: a trap condition that did not hold narrows what it tested ----
    def assume(self, e: Expr, want: int) -> None:
        if not iv.contains(self.value(e), want):
            raise _Infeasible
        if self.exact:
            return
        self._narrow(e, want, want)
        op, a = e.op, e.args
        if op == "not":
            self.assume(a[0], 1 - want)
        elif op == "or" and e.width == 1 and want == 0 or op == "and" and e.width == 1 and want == 1:
            self.assume(a[0], want)
            self.assume(a[1], want)
        elif op == "ult":
            x, y = self.value(a[0]), self.value(a[1])
            top = (1 << a[0].width) - 1
            if want:  # x < y
                self._narrow(a[0], 0, y[-1][1] - 1)
                self._narrow(a[1], x[0][0] + 1, top)
            else:
                self._narrow(a[0], y[0][0], top)
                self._narrow(a[1], 0, x[-1][1])
        elif op == "eq" and want == 1:
            x, y = self.value(a[0]), self.value(a[1])
            self._narrow(a[0], y[0][0], y[-1][1])
            self._narrow(a[1], x[0][0], x[-1][1])

    def _narrow(self, e: Expr, lo: int, hi: int) -> None:
        if e.op == "const":
            if not lo <= e.args[0] <= hi:
                raise _Infeasible
            return
        v = iv.meet(self.value(e), lo, hi)
        if not v:
            raise _Infeasible
        if v != self.value(e):
            self.assumed[id(e)] = v
            self.memo.clear()

    def traps(self, fx: Effects):
        """Yield ``(cause, info)`` for each trap that may be taken; return
        normally only when the instruction may also go on without one."""
        for cond, cause, info in fx.traps:
            c = self.value(cond)
            if iv.contains(c, 1):
                yield int(cause), self.value(info)
            self.assume(cond, 0)


def _exact_binary(op: str) -> Callable[[_Eval, Expr], int]:
    fn = iv.CONCRETE[op]

    def handler(ev: _Eval, e: Expr) -> int:
        a = e.args
        return fn(ev._int(a[0]), ev._int(a[1]), (1 << e.width) - 1, a[0].width)

    if op not in ("and", "or"):
        return handler
    decides = int(op == "or")

    def short(ev: _Eval, e: Expr) -> int:  # 1 bit: the first operand may decide
        if e.width != 1:
            return handler(ev, e)
        first = ev._int(e.args[0])
        return first if first == decides else ev._int(e.args[1])

    return short


# The exact back end: every operation of `popek.spec.bits.OPERATIONS` on known integers.
EXACT: dict[str, Callable[[_Eval, Expr], int]] = {
    "const": lambda ev, e: e.args[0],
    "var": lambda ev, e: ev._compute(e)[0][0],
    "reg": lambda ev, e: ev.state[ev._int(e.args[0])][0][0],
    "mem": lambda ev, e: ev._load_int(ev._int(e.args[0])),
    "ite": lambda ev, e: ev._int(e.args[1]) if ev._int(e.args[0]) else ev._int(e.args[2]),
    "not": lambda ev, e: ev._int(e.args[0]) ^ ((1 << e.width) - 1),
    "zext": lambda ev, e: ev._int(e.args[0]),
    "extract": lambda ev, e: (ev._int(e.args[0]) >> e.args[2]) & ((1 << (e.args[1] - e.args[2] + 1)) - 1),
    **{op: _exact_binary(op) for op in BINARY},
}


def _ite(ev: _Eval, e: Expr) -> Values:
    c = ev.value(e.args[0])
    if c == iv.TRUE:
        return ev.value(e.args[1])
    if c == iv.FALSE:
        return ev.value(e.args[2])
    return iv.union(ev.value(e.args[1]), ev.value(e.args[2]))


def _abstract_binary(op: str) -> Callable[[_Eval, Expr], Values]:
    def handler(ev: _Eval, e: Expr) -> Values:
        a = e.args
        return iv.binary(op, ev.value(a[0]), ev.value(a[1]), e.width, a[0].width)

    if op not in ("and", "or"):
        return handler
    decides = iv.FALSE if op == "and" else iv.TRUE

    def short(ev: _Eval, e: Expr) -> Values:  # 1 bit: the first operand may decide, the other is not read
        if e.width == 1:
            first = ev.value(e.args[0])
            if first == decides:
                return first
        return handler(ev, e)

    return short


# The abstract back end: every operation of `popek.spec.bits.OPERATIONS` on value sets.
ABSTRACT: dict[str, Callable[[_Eval, Expr], Values]] = {
    "const": lambda ev, e: iv.const(e.args[0]),
    "var": lambda ev, e: ev._input(e.args[0]),
    "reg": lambda ev, e: ev._reg(ev.value(e.args[0])),
    "mem": lambda ev, e: ev._load(ev.value(e.args[0])),
    "ite": _ite,
    "not": lambda ev, e: iv.not_(ev.value(e.args[0]), e.width),
    "zext": lambda ev, e: ev.value(e.args[0]),
    "extract": lambda ev, e: iv.extract(ev.value(e.args[0]), e.args[1], e.args[2]),
    **{op: _abstract_binary(op) for op in BINARY},
}


class _Analysis:
    def __init__(self, image: Image, profile: Profile, memsize: int):
        self.profile, self.arch, self.memsize = profile, profile.arch, memsize
        words = {a: w & self.arch.mask for a, w in image.words.items() if 0 <= a < memsize and w}
        self.storage = _Storage(words, self.arch.word)
        self.widths = [field_width(i, self.arch) for i in range(NSLOTS)] + [self.arch.word] * LOCAL
        self.fetch_words, self.fetch_fx, self.due = _machine_cycle(self.arch)
        self.trap_fx = trace_trap(self.arch)
        self.tick_fx = trace_tick(self.arch)
        # program points: a pc in one translation context (`_point`), so that
        # kernel and user code at the same virtual address are not merged
        self.states: dict[tuple, tuple[Values, ...]] = {}
        self.points: dict[int, set[tuple]] = {}  # pc -> its program points
        self.changes: dict[tuple, list[int]] = {}  # program point -> changes per value
        self.reads_of: dict[int, Values] = {}  # pc -> storage its last visit depended on
        self.todo: list[tuple] = []
        self.queued: set[tuple] = set()
        self.result = Reach()
        self.path: list[tuple[Values, ...]] | None = None  # the one successor of an exact step
        local = [iv.const(words.get(a, 0)) for a in range(LOCAL)]
        self.start = _reset_state(profile, memsize, image.entry) + tuple(local)

    def run(self, exact_steps: int, *, compiled: bool = True, cycles: bool = True) -> Reach:
        """``compiled=False``: follow the exact path through the abstract
        interpreter instead (the reference the compiled path is tested
        against; it does not look for cycles)."""
        try:
            if compiled and self.arch.word <= 20:  # storage as a plain list of every word
                self._follow(exact_steps, cycles)
            else:
                self._follow_interpreted(exact_steps)
            self._settle()
        except _GiveUp as e:
            self.result.gave_up = str(e)
        return self.result

    def _follow(self, steps: int, cycles: bool = True) -> None:
        """Run the guest's one path from reset: the guest is deterministic,
        so from reset every value is known, storage included.  The spec's
        effects run compiled (`reach_exact`); what they read and run is
        recorded as `_follow_interpreted` records it.  A path that halts,
        or comes back to a state it had (``cycles``), is then complete."""
        S = [v[0][0] for v in self.start[:NSLOTS]]
        seen = reach_exact.follow(self.profile, S, self.storage.init, self.memsize, steps, cycles=cycles)
        r = self.result
        r.pcs, r.reads, r.fetches, r.runs = seen.pcs, seen.reads, seen.fetches, seen.runs
        self.reads_of = seen.reads_of
        M, init = seen.M, self.storage.init  # the trap area is kept in the state, not here
        init.update((a, M[a]) for a in seen.stored if a >= LOCAL)
        self.storage.special = sorted(init)
        if not (seen.halted or seen.cycled):  # storage as it is now is where the rest starts
            self._join(tuple(iv.const(v) for v in S) + tuple(iv.const(M[a]) for a in range(LOCAL)))

    def _follow_interpreted(self, steps: int) -> None:
        """`_follow` through the abstract interpreter, on values that are all
        known (the reference `_follow` is tested against)."""
        self.storage.exact = True
        state = self.start
        for _ in range(steps):
            self.path = []
            self._visit(state[PC][0][0], list(state))
            nexts, self.path = self.path, None
            if not nexts:
                return  # halted: nothing more can happen
            if len(nexts) > 1 or not all(len(v) == 1 and v[0][0] == v[0][1] for v in nexts[0]):
                break
            state = nexts[0]
        else:
            nexts = [state]
        self.path = None
        self.storage.exact = False  # storage as it is now is where the rest starts
        for state in nexts:
            self._join(state)

    def _settle(self) -> None:
        """Every state the guest can reach from where `_follow` stopped."""
        visits = 0
        while self.todo:
            point = self.todo.pop()
            self.queued.discard(point)
            visits += 1
            if visits > VISITS:
                raise _GiveUp(f"the analysis did not settle within {VISITS} steps")
            self._visit(point[0], list(self.states[point]))

    # -- one program point ----------------------------------------------------
    def read(self, S: list[Values], addrs: Values) -> Values:
        """What the words at ``addrs`` may hold, at a point whose state is ``S``."""
        out: Values = ()
        for a in iv.members(iv.meet(addrs, 0, LOCAL - 1)):
            out = iv.union(out, S[NSLOTS + a])
        rest = iv.meet(addrs, LOCAL, 1 << 64)
        return iv.union(out, self.storage.read(rest)) if rest else out

    def note_read(self, pc: int, addrs: Values, *, data: bool) -> None:
        """The step at ``pc`` may read ``addrs``: a data read, or its own fetch."""
        self.reads_of[pc] = iv.union(self.reads_of.get(pc, ()), addrs)
        if data:
            self.result.reads[pc] = iv.union(self.result.reads.get(pc, ()), addrs)

    def _visit(self, pc: int, S: list[Values]) -> None:
        if S[HALTED] == iv.TRUE:
            return
        self.result.pcs.add(pc)
        ev = _Eval(self, pc, S, {})
        due = ev.value(self.due)
        if iv.contains(due, 1):  # take the interrupt: clear the tick, then trap
            taken = list(S)
            taken[PEND] = iv.FALSE
            self._trap(taken, Cause.TIMER, iv.const(INTERRUPT_INFO))
            if due == iv.TRUE:
                return
        try:
            for cause, info in ev.traps(self.fetch_fx):
                self._trap(S, cause, info)
        except _Infeasible:
            return
        p0, p1 = ev.value(self.fetch_words[0]), ev.value(self.fetch_words[1])
        old = self.result.fetches.get(pc, ((), ()))
        self.result.fetches[pc] = (iv.union(old[0], p0), iv.union(old[1], p1))
        self.note_read(pc, iv.union(p0, p1), data=False)
        w0, w1 = self.read(S, p0), self.read(S, p1)
        if iv.size(w0) > WORDS:
            raise _GiveUp(f"the instruction at pc {pc:#06x} may be any of {iv.size(w0)} words")
        for word in iv.members(w0):
            d = decode(self.profile, word, 0)
            if d is None:
                self._trap(S, Cause.ILLEGAL, iv.const(pc))
                continue
            if "imm" in d.insn.fields:
                imm = w1
            else:
                if w1 != iv.FALSE:
                    self._trap(S, Cause.ILLEGAL, iv.const(pc))
                if not iv.contains(w1, 0):
                    continue
                imm = iv.FALSE
            key = (pc, d.insn)
            self.result.runs[key] = iv.union(self.result.runs.get(key, ()), p0)
            self._execute(S, d.insn, d.rd, d.rs, imm)

    def _execute(self, S: list[Values], insn: Insn, rd: int, rs: int, imm: Values) -> None:
        fx = trace(insn, self.arch)
        pc = S[PC][0][0]
        ev = _Eval(self, pc, S, {"rd": iv.const(rd), "rs": iv.const(rs), "imm": imm})
        try:
            for cause, info in ev.traps(fx):
                self._trap(S, cause, info)
        except _Infeasible:
            return
        after = self._effects(ev, fx, S)
        tick = _Eval(self, pc, after, {})
        ticked = list(after)
        for slot, value in self.tick_fx.field_writes.items():
            ticked[slot] = tick.value(value)
        self._go(ticked)

    def _trap(self, S: list[Values], cause: int, info: Values) -> None:
        ev = _Eval(self, S[PC][0][0], S, {"cause": iv.const(cause), "info": info})
        self._go(self._effects(ev, self.trap_fx, S))

    def _effects(self, ev: _Eval, fx: Effects, S: list[Values]) -> list[Values]:
        after = list(S)
        for index, value in fx.reg_writes:
            regs, v = ev.value(index), ev.value(value)
            if iv.is_const(regs):
                after[regs[0][0]] = v
            else:
                for r in iv.members(regs):
                    after[r] = iv.union(after[r], v)
        for slot, value in fx.field_writes.items():
            after[slot] = ev.value(value)
        for addr, value in fx.mem_writes:
            addrs, v = ev.value(addr), ev.value(value)
            local = iv.meet(addrs, 0, LOCAL - 1)
            if iv.is_const(local) and local == addrs:
                after[NSLOTS + addrs[0][0]] = v
            for a in iv.members(local) if local != addrs or not iv.is_const(local) else ():
                after[NSLOTS + a] = iv.union(after[NSLOTS + a], v)
            addrs = iv.meet(addrs, LOCAL, (1 << 64))
            grown = self.storage.store(addrs, v) if addrs else ()
            if grown:
                for other, reads in self.reads_of.items():
                    if other in self.points and iv.overlaps(reads, grown):
                        for point in self.points[other]:
                            self._queue(point)
        for value in fx.outputs:  # what an output shows is read too
            ev.value(value)
        return after

    def _go(self, after: list[Values]) -> None:
        if after[HALTED] == iv.TRUE:
            return
        pcs = after[PC]
        if self.path is not None and iv.is_const(pcs):
            self.path.append(tuple(after))
            return
        if iv.size(pcs) > PCS:
            raise _GiveUp(f"control may go to any of {iv.show(pcs)}")
        for pc in iv.members(pcs):
            after[PC] = iv.const(pc)
            self._join(tuple(after))

    def _join(self, state: tuple[Values, ...]) -> None:
        point = _point(state)
        old = self.states.get(point)
        if old is not None:
            new = tuple(iv.union(o, n) for o, n in zip(old, state))
            if new == old:
                return
            counts = self.changes.setdefault(point, [0] * len(new))
            widened = list(new)
            for i, (v, o) in enumerate(zip(new, old)):
                if v != o:
                    counts[i] += 1
                    if counts[i] > 3 * WIDEN:
                        widened[i] = iv.full(self.widths[i])
                    elif counts[i] > WIDEN:
                        widened[i] = iv.hull(v)  # first its hull, then anything
            state = tuple(widened)
        self.states[point] = state
        self.points.setdefault(point[0], set()).add(point)
        self._queue(point)

    def _queue(self, point: tuple) -> None:
        if point not in self.queued:
            self.queued.add(point)
            self.todo.append(point)


@lru_cache(maxsize=64)
def _reset_state(profile: Profile, memsize: int, entry: int) -> tuple[Values, ...]:
    """The machine's state slots at power-on (building a `Machine` costs more
    than analysing most guests: done once per profile, size and entry)."""
    reset = Machine(profile, memsize)
    reset.reset(entry)
    return tuple(iv.const(v) for v in reset.S)


@lru_cache(maxsize=None)
def _machine_cycle(arch) -> tuple[tuple[Expr, Expr], Effects, Expr]:
    """The fetch's two addresses and its effects, and the interrupt condition."""
    s = Sem(arch)
    return fetch_addresses(s), s.fx, interrupt_condition(arch)


CONTEXT = (MODE, BASE, BOUND, PTBR, GUEST)  # what a virtual pc means


def _point(state: tuple[Values, ...]) -> tuple:
    """The program point of ``state``: its pc, and its translation context
    where that is known (else the pc alone, with every context merged)."""
    ctx = tuple(state[i] for i in CONTEXT)
    known = all(len(v) == 1 and v[0][0] == v[0][1] for v in ctx)
    return (state[PC][0][0], ctx if known else None)


def analyse(
    image: Image, profile: Profile, memsize: int, *, exact_steps: int | None = None
) -> Reach:
    """Everything ``image`` may read, fetch and run, from reset, on ``profile``
    (the first ``exact_steps`` steps followed exactly; by default EXACT_STEPS,
    then each of RETRY_STEPS while the merged phase gives up)."""
    if exact_steps is not None:
        return _Analysis(image, profile, memsize).run(exact_steps)
    reach = _Analysis(image, profile, memsize).run(EXACT_STEPS)
    for steps in RETRY_STEPS:
        if not reach.gave_up:
            break
        reach = _Analysis(image, profile, memsize).run(steps)
    return reach


@lru_cache(maxsize=None)
def traps_in_user_mode(insn: Insn, profile: Profile) -> bool:
    """True when ``insn`` traps whenever it runs in user mode, whatever else
    holds: run on the host directly, it always reaches the VMM."""
    an = _Analysis(Image({}, FIRST_FREE), profile, 1 << profile.arch.word)
    state = [iv.full(w) for w in an.widths]
    state[MODE] = iv.const(USER)
    anything = {"rd": iv.full(profile.arch.reg_bits), "rs": iv.full(profile.arch.reg_bits)}
    ev = _Eval(an, 0, state, {**anything, "imm": iv.full(profile.arch.word)})
    return any(ev.value(cond) == iv.TRUE for cond, _cause, _info in trace(insn, profile.arch).traps)
