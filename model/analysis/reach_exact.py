"""`reach`'s exact prefix, compiled: the guest's one path from reset, on integers.

Before it merges anything, `reach` follows the guest exactly: from reset
every value is known, and the guest is deterministic.  Interpreting the
spec's expression trees step by step for that (`reach._Eval`) cost almost
all of the analysis's time.  Here the same effects (``trace``,
``trace_trap``, ``trace_tick``, ``fetch_addresses``, the interrupt
condition) are turned into Python once per profile and instruction, like
the machine's own operations (``popek.model.codegen``), with two
differences that the analysis needs and the machine does not:

* every storage read goes through ``R(address)``, which logs it for the
  step that made it: what the guest reads is the analysis's result;
* evaluation is exactly as lazy as the interpreter's: the branch of an
  ``ite`` not taken, the second operand of a 1-bit ``and``/``or`` the
  first decides, and the info of a trap not taken are not evaluated, so
  no read is logged that the step does not make.  A shared subterm that
  reads storage is evaluated at its first use (a local assigned inside
  the expression); one that does not is computed ahead, since that can
  neither read nor fail.

Nothing about an instruction is written here; `follow` only sequences the
spec's routines as the machine cycle does (interrupt, fetch, decode,
execute or trap, tick), the way ``reach._Analysis._visit`` does.  It also
stops where the whole state repeats: the machine is deterministic, so
nothing after that is new.  tests/model/test_reach_exact.py holds it to the
interpreter, result for result and in the same order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from popek.model import codegen
from popek.model.codebook import Codebook, PerProfile
from popek.spec.bits import Expr, children
from popek.spec.instructions import Insn
from popek.spec.memory import fetch_addresses
from popek.spec.profiles import Profile
from popek.spec.sem import Effects, Sem
from popek.spec.state import HALTED, PC, PEND, Arch, Cause
from popek.spec.trace import interrupt_condition, trace, trace_tick, trace_trap
from popek.spec.trap import INTERRUPT_INFO

from . import intervals as iv
from .intervals import Values

PARAMS = "S, M, R, W, MS"  # state, storage, read logger, stored-address set, memsize


class LazyEmitter(codegen.Emitter):
    """The machine's expression emitter, made exactly as lazy as `reach._Eval._int`."""

    def __init__(self, arch: Arch, bind: codegen.Bind):
        super().__init__(arch, bind, "x")
        self.memos: list[str] = []  # locals assigned at their first use (None until then)
        self._lazy: dict[tuple, str] = {}
        self._reads: dict[tuple, bool] = {}

    def reads(self, e: Expr) -> bool:
        """Whether evaluating ``e`` may read storage."""
        k = self.key(e)
        r = self._reads.get(k)
        if r is None:
            r = e.op == "mem" or any(self.reads(a) for a in children(e))
            self._reads[k] = r
        return r

    def expr(self, e: Expr) -> str:
        if not self.named(e) and self.shared(e) and self.reads(e):
            k = self.key(e)
            text = self._lazy.get(k)
            if text is None:  # every use carries the text: whichever runs first evaluates it
                memo = self.fresh()
                self.memos.append(memo)
                text = f"({memo} if {memo} is not None else ({memo} := {self.render(e)}))"
                self._lazy[k] = text
            return text
        return super().expr(e)  # shared and reading nothing: computed ahead (it cannot fail)


def _short_circuit(em: codegen.Emitter, e: Expr) -> str:
    """A 1-bit ``and``/``or`` whose first operand may decide: the second is
    then not evaluated (and reads nothing)."""
    if e.width != 1:
        return codegen.RENDER[e.op](em, e)
    return f"({em.expr(e.args[0])} {e.op} {em.expr(e.args[1])})"


# Every storage read goes through the logger R; 1-bit and/or short-circuit.
LazyEmitter.handlers = {
    **codegen.RENDER,
    "mem": lambda em, e: f"R({em.expr(e.args[0])})",
    "and": _short_circuit,
    "or": _short_circuit,
}


def _compile(
    name: str, fx: Effects, arch: Arch, inputs: tuple[str, ...], *, tail: tuple[Expr, ...] = ()
) -> Callable:
    """``name(S, M, R, W, MS, *inputs)``: ``fx`` on integers.  Returns
    ``(cause, info)`` for the first trap whose condition holds (nothing
    written), else writes every effect (values all taken from the
    pre-state) and returns None, or, given ``tail`` expressions (a fetch's
    two addresses), ``(None, *their values)``."""
    em = LazyEmitter(arch, codegen.state_binder({i: i for i in inputs}))
    for r in (*fx.roots(), *tail):
        em.count(r)
    body, certain = codegen.emit_guards(em, fx.traps, lambda cause, info: [f"return ({cause}, {info})"])
    if not certain:
        writes = [(f"S[{em.value(idx)}]", em.value(val)) for idx, val in fx.reg_writes]
        writes += [(f"S[{slot}]", em.value(val)) for slot, val in fx.field_writes.items()]
        stores = [(em.value(addr), em.value(val)) for addr, val in fx.mem_writes]
        for out in fx.outputs:  # what an output shows is read too
            em.value(out)
        ends = [em.value(t) for t in tail]
        body += em.take()
        body += [f"{where} = {v}" for where, v in writes]
        for addr, v in stores:
            body += [f"M[{addr}] = {v}", f"W.add({addr})"]
        body.append(f"return (None, {', '.join(ends)})" if ends else "return None")
    body = [f"{m} = None" for m in em.memos] + body
    params = ", ".join((PARAMS, *inputs))
    return codegen.compile_function(name, params, body, "")()


class _Routines(PerProfile):
    """The compiled routines of one profile (built once, kept beside the
    machine's `Codebook`, whose decodes they share)."""

    def __init__(self, profile: Profile):
        super().__init__(profile)
        arch = self.arch = profile.arch
        for what, fx in (("trap mechanism", trace_trap(arch)), ("timer tick", trace_tick(arch))):
            if fx.traps:  # `reach` takes these routines as never trapping
                raise ValueError(f"reach_exact: the {what} may trap")
        self.due = _compile("due", Effects(), arch, (), tail=(interrupt_condition(arch),))
        s = Sem(arch)
        self.fetch = _compile("fetch", s.fx, arch, (), tail=tuple(fetch_addresses(s)))
        self.trap = _compile("trap", trace_trap(arch), arch, ("cause", "info"))
        self.tick = _compile("tick", trace_tick(arch), arch, ())
        self.ops: dict[Insn, Callable] = {}
        self.decodes: dict[int, tuple | None] = {}

    def op(self, insn: Insn) -> Callable:
        f = self.ops.get(insn)
        if f is None:
            f = self.ops[insn] = _compile(f"op_{insn.name}", trace(insn, self.arch), self.arch, ("rd", "rs", "imm"))
        return f

    def decode(self, word: int) -> tuple[Insn, int, int, bool, Callable] | None:
        """The instruction a first word names, read as `reach` reads it
        (second word 0: whether it may be nonzero is checked apart): the
        instruction, rd, rs, whether its second word is its immediate, and
        its compiled operation."""
        try:
            return self.decodes[word]
        except KeyError:
            d = Codebook.of(self.profile).decode(word, 0)  # the machine's decodes, shared
            got = None if d is None else (d.insn, d.rd, d.rs, "imm" in d.insn.fields, self.op(d.insn))
            self.decodes[word] = got
            return got


@dataclass
class Followed:
    """What `follow` saw, in the shapes `reach.Reach` keeps (filled in the
    order the interpreter fills them, so that its later phase is the same)."""

    S: list[int]  # the state after the last step
    M: list[int]  # storage after the last step (the trap area included)
    stored: set[int] = field(default_factory=set)  # every address written
    halted: bool = False
    cycled: bool = False  # the state came back to one it had: every later step is one already seen
    steps: int = 0
    pcs: set[int] = field(default_factory=set)
    reads: dict[int, Values] = field(default_factory=dict)  # pc -> data words read
    fetches: dict[int, tuple[Values, Values]] = field(default_factory=dict)
    reads_of: dict[int, Values] = field(default_factory=dict)  # pc -> every word read, fetch included
    runs: dict[tuple[int, Insn], Values] = field(default_factory=dict)


def follow(
    profile: Profile, S: list[int], words: dict[int, int], memsize: int, steps: int, *, cycles: bool = True
) -> Followed:
    """Run up to ``steps`` machine cycles from state ``S`` (changed in
    place) and storage ``words`` (address -> word; the rest 0), logging
    per step what it reads and runs.

    ``cycles``: stop once the whole state (``S`` and storage) is one it had
    before.  The machine is deterministic, so from there on it only repeats
    steps already logged: nothing is left to follow, exactly as after a
    halt.  Found as Brent's algorithm finds a cycle: the state is kept at
    every power-of-two step and compared with each later one (storage only
    where ``S`` is equal, and only the words written so far)."""
    rt = _Routines.of(profile)
    due, fetch, trap, tick, decodes, dec = rt.due, rt.fetch, rt.trap, rt.tick, rt.decodes, rt.decode
    M = [0] * (1 << profile.arch.word)
    for a, w in words.items():
        M[a] = w
    out = Followed(S, M)
    W = out.stored
    log: list = []  # this step's reads: an address (data), or the fetch's (p0, p1)
    add = log.append

    def R(a: int) -> int:
        add(a)
        return M[a]

    pcs, reads, fetches, reads_of, runs = out.pcs, out.reads, out.fetches, out.reads_of, out.runs
    seen: set = set()  # (pc, event) already in the result: a union again would change nothing
    timer, illegal = int(Cause.TIMER), int(Cause.ILLEGAL)
    ms = memsize
    kept_S, kept_M, power, since = list(S), {}, 1, 0  # Brent: the state kept, and when
    for n in range(steps):
        pc = S[PC]
        pcs.add(pc)
        if due(S, M, R, W, ms)[1]:  # take the interrupt: clear the tick, then trap
            S[PEND] = 0
            trap(S, M, R, W, ms, timer, INTERRUPT_INFO)
        else:
            f = fetch(S, M, R, W, ms)
            if f[0] is not None:
                trap(S, M, R, W, ms, f[0], f[1])
            else:
                p0, p1 = f[1], f[2]
                add((p0, p1))
                w0, w1 = M[p0], M[p1]
                got = decodes[w0] if w0 in decodes else dec(w0)
                if got is None or w1 and not got[3]:
                    trap(S, M, R, W, ms, illegal, pc)
                else:
                    insn, rd, rs, _, op = got
                    if (pc, p0, w0) not in seen:  # w0 names the instruction
                        seen.add((pc, p0, w0))
                        key = (pc, insn)
                        runs[key] = iv.union(runs.get(key, ()), ((p0, p0),))
                    r = op(S, M, R, W, ms, rd, rs, w1)
                    if r is None:
                        tick(S, M, R, W, ms)
                    else:
                        trap(S, M, R, W, ms, r[0], r[1])
        for event in log:
            k = (pc, event)
            if k in seen:
                continue
            seen.add(k)
            if type(event) is tuple:
                p0, p1 = event
                old = fetches.get(pc, ((), ()))
                fetches[pc] = (iv.union(old[0], ((p0, p0),)), iv.union(old[1], ((p1, p1),)))
                reads_of[pc] = iv.union(reads_of.get(pc, ()), iv.make(((p0, p0), (p1, p1))))
            else:
                c = ((event, event),)
                reads_of[pc] = iv.union(reads_of.get(pc, ()), c)
                reads[pc] = iv.union(reads.get(pc, ()), c)
        log.clear()
        out.steps = n + 1
        if S[HALTED]:
            out.halted = True
            break
        if cycles:
            if S == kept_S and all(M[a] == kept_M.get(a, words.get(a, 0)) for a in W):
                out.cycled = True
                break
            since += 1
            if since == power:
                kept_S[:] = S
                kept_M = {a: M[a] for a in W}
                power, since = 2 * power, 0
    return out
