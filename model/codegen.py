"""Compile traced instruction effects to plain Python.

The concrete machine never interprets an `Expr` tree at run time.  Each
instruction's effects (from ``popek.spec.trace``) are turned into Python
source once, in two shapes:

* an *operation*: one function per opcode taking ``rd, rs, imm``, used for
  code that has run only once (cheap to make);
* a *block*: a straight run of decoded instructions with their fields and
  program counters folded in as constants, used for hot code (fast to run).

Generated code follows the effect rules of ``popek.spec.sem``: every value
is computed from the pre-state into a local before anything is written; the
first trap condition that holds returns ``(retired, cause, info)`` with the
state untouched by that instruction.

The closure gives the code the machine's state vector ``S``, storage ``M``
(always 2**word long, so a read is never out of range; the spec decides what
exists), output log ``O``, the set ``CP`` of watched storage pages and the
``INV`` callback that drops cached decodes of a written page, and, on a
partitioned machine, its partition register ``PT`` (base, size).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from popek.spec.bits import Expr
from popek.spec.partition import INPUT_INDEX as PARTITION_INPUTS
from popek.spec.sem import Effects
from popek.spec.state import FLAGS, PC, Arch


class _Emitter:
    """Turns expressions into Python, sharing structurally equal subterms."""

    def __init__(self, arch: Arch, bind: Callable[[str], str], prefix: str):
        self.arch = arch
        self.bind = bind
        self.prefix = prefix
        self.lines: list[str] = []
        self._key: dict[int, tuple] = {}
        self._uses: dict[tuple, int] = {}
        self._name: dict[tuple, str] = {}
        self._n = 0

    # -- pass 1: count uses of each structural subterm ----------------------
    def key(self, e: Expr) -> tuple:
        k = self._key.get(id(e))
        if k is None:
            if e.op in ("const", "var"):
                k = (e.op, e.width, e.args)
            elif e.op == "extract":
                k = (e.op, e.width, self.key(e.args[0]), e.args[1], e.args[2])
            else:
                k = (e.op, e.width) + tuple(self.key(a) for a in e.args)
            self._key[id(e)] = k
        return k

    def count(self, e: Expr) -> None:
        k = self.key(e)
        seen = self._uses.get(k, 0)
        self._uses[k] = seen + 1
        if seen == 0 and e.op not in ("const", "var"):
            for a in e.args[:1] if e.op == "extract" else e.args:
                self.count(a)

    # -- pass 2: emit ------------------------------------------------------
    def expr(self, e: Expr) -> str:
        k = self.key(e)
        name = self._name.get(k)
        if name is not None:
            return name
        text = self._render(e)
        if self._uses.get(k, 0) > 1 and e.op not in ("const", "var"):
            self._n += 1
            name = f"{self.prefix}{self._n}"
            self.lines.append(f"{name} = {text}")
            self._name[k] = name
            return name
        return text

    def value(self, e: Expr) -> str:
        """Emit ``e`` into a local now (so later writes cannot change it)."""
        text = self.expr(e)
        if text.isidentifier() or _is_int(text):
            return text
        self._n += 1
        name = f"{self.prefix}{self._n}"
        self.lines.append(f"{name} = {text}")
        self._name[self.key(e)] = name
        return name

    def _render(self, e: Expr) -> str:
        op, w = e.op, e.width
        mask = (1 << w) - 1
        a = e.args
        if op == "const":
            return str(a[0])
        if op == "var":
            return self.bind(a[0])
        if op == "reg":
            return f"S[{self.expr(a[0])}]"
        if op == "mem":
            return f"M[{self.expr(a[0])}]"
        if op == "extract":
            inner, hi, lo = self.expr(a[0]), a[1], a[2]
            return f"(({inner} >> {lo}) & {(1 << (hi - lo + 1)) - 1})"
        if op == "zext":
            return self.expr(a[0])
        if op == "not":
            return f"({self.expr(a[0])} ^ {mask})"
        if op == "ite":
            return f"({self.expr(a[1])} if {self.expr(a[0])} else {self.expr(a[2])})"
        x, y = self.expr(a[0]), self.expr(a[1])
        if op == "add":
            return f"(({x} + {y}) & {mask})"
        if op == "sub":
            return f"(({x} - {y}) & {mask})"
        if op == "and":
            return f"({x} & {y})"
        if op == "or":
            return f"({x} | {y})"
        if op == "xor":
            return f"({x} ^ {y})"
        if op == "shl":
            return f"(({x} << {y}) & {mask})"
        if op == "lshr":
            return f"({x} >> {y})"
        if op == "eq":
            return f"({x} == {y})"
        if op == "ult":
            return f"({x} < {y})"
        if op == "slt":
            sign = 1 << (a[0].width - 1)
            return f"(({x} ^ {sign}) < ({y} ^ {sign}))"
        raise ValueError(f"codegen: unknown operation {op!r}")


def _is_int(text: str) -> bool:
    return text.lstrip("-").isdigit()


@dataclass(frozen=True)
class Step:
    """One instruction inside generated code: its effects and bindings."""

    fx: Effects
    fields: dict[str, str]  # rd/rs/imm -> Python text (a constant or a name)
    pc: str  # Python text for this instruction's pc


def emit_steps(
    arch: Arch, steps: list[Step], *, dead_flags: set[int], memsize: str = "MS", pb: int = 6
) -> list[str]:
    """Python statements running ``steps`` in order.

    ``dead_flags`` lists step positions whose FLAGS write is overwritten by a
    later step before anything can observe it (no trap or exit between); the
    block builder proves that, and the write is skipped.
    """
    out: list[str] = []
    for k, st in enumerate(steps):

        def bind(name: str, st: Step = st) -> str:
            if name in st.fields:
                return st.fields[name]
            if name == "MEMSIZE":
                return memsize
            if name in PARTITION_INPUTS:  # the partition register (spec/partition.py)
                return f"PT[{PARTITION_INPUTS[name]}]"
            if name == f"S{PC}":
                return st.pc
            if name.startswith("S"):
                return f"S[{name[1:]}]"
            raise ValueError(f"codegen: unbound input {name!r}")

        em = _Emitter(arch, bind, f"t{k}_")
        fx = st.fx
        skipped = fx.field_writes.get(FLAGS) if k in dead_flags else None
        for r in fx.roots():
            if r is not skipped:
                em.count(r)

        for cond, cause, info in fx.traps:
            c = em.expr(cond)
            out += em.lines
            em.lines = []
            if c == "1":
                out.append(f"S[{PC}] = {st.pc}")
                out.append(f"return ({k}, {int(cause)}, {em.expr(info)})")
                return out + em.lines
            info_text = em.expr(info)
            out += em.lines
            em.lines = []
            out.append(f"if {c}:")
            out.append(f"    S[{PC}] = {st.pc}")
            out.append(f"    return ({k}, {int(cause)}, {info_text})")

        writes: list[str] = []
        for idx, val in fx.reg_writes:
            writes.append(f"S[{em.value(idx)}] = {em.value(val)}")
        for slot, val in fx.field_writes.items():
            if slot == FLAGS and k in dead_flags:
                continue
            writes.append(f"S[{slot}] = {em.value(val)}")
        stores = [(em.value(a), em.value(v)) for a, v in fx.mem_writes]
        outs = [em.value(v) for v in fx.outputs]
        out += em.lines
        out += writes
        for a, v in stores:
            out.append(f"M[{a}] = {v}")
            out.append(f"if ({a} >> {pb}) in CP:")
            out.append(f"    INV({a})")
            if k < len(steps) - 1:
                out.append(f"    return ({k + 1}, 0, 0)")
        for v in outs:
            out.append(f"O.append({v})")
    return out



def compile_function(name: str, params: str, body: list[str], closure: str) -> Callable:
    """Build ``make(<closure>)`` returning ``def name(<params>)``."""
    src = [f"def make({closure}):", f"    def {name}({params}):"]
    src += ["        " + line for line in body]
    src += ["        return None", f"    return {name}"]
    text = "\n".join(src)
    env: dict = {}
    exec(compile(text, f"<popek:{name}>", "exec"), env)  # noqa: S102 - our own generated code
    make = env["make"]
    make.source = text  # type: ignore[attr-defined]
    return make
