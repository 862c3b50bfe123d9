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

Everything else in popek that compiles the spec's expressions (the
machine's fetch and table reads in ``codebook``, shadow paging's walk, the
reach analysis's exact prefix, the situation watch) builds on the pieces
exported here, so that there is one compiler: `Emitter` (with `RENDER`, one
handler per operation of ``popek.spec.bits.OPERATIONS``), `state_binder`
(how free inputs are read), `emit_guards` (the spec's "first trap whose
condition holds wins") and `compile_function` / `compile_effects`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, ClassVar, Mapping

from popek.spec.bits import Expr, children, slot_of
from popek.spec.partition import INPUT_INDEX as PARTITION_INPUTS
from popek.spec.sem import Effects
from popek.spec.state import FLAGS, PC, Arch, Cause


Bind = Callable[[str], str]  # a free input's name -> the Python text that reads it

# Inputs the machine's closure holds besides its state, storage and memsize:
# the partition register (spec/partition.py), as the list ``PT``.
MACHINE_INPUTS: dict[str, str] = {name: f"PT[{i}]" for name, i in PARTITION_INPUTS.items()}


def state_binder(
    inputs: Mapping[str, str] | None = None, *, memsize: str = "MS", pc: str | None = None
) -> Bind:
    """How generated code reads free inputs: each name in ``inputs`` as the
    text given there (operands, a routine's parameters), MEMSIZE as
    ``memsize``, a state slot as ``S[n]`` (PC as ``pc`` when that is known,
    a block's constant).  Every compiled routine binds its inputs this one
    way, so a new kind of input is added here once."""
    given = dict(inputs or {})

    def bind(name: str) -> str:
        text = given.get(name)
        if text is not None:
            return text
        if name == "MEMSIZE":
            return memsize
        slot = slot_of(name)
        if slot is not None:
            return pc if slot == PC and pc is not None else f"S[{slot}]"
        raise ValueError(f"codegen: unbound input {name!r}")

    return bind


class Emitter:
    """Turns expressions into Python, sharing structurally equal subterms.

    Use: `count` every root first (a subterm used twice is computed once,
    into a local), then `expr` or `value` each; the locals they need pile up
    in ``lines``, which the caller takes (`take`) and places before the
    statement that uses them.  How each operation is written is the table
    ``handlers`` (operation -> ``handler(emitter, e) -> text``): a subclass
    that writes some operations differently replaces entries of it."""

    handlers: ClassVar[Mapping[str, Callable[["Emitter", Expr], str]]]

    def __init__(self, arch: Arch, bind: Bind, prefix: str):
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
        if seen == 0:
            for a in children(e):
                self.count(a)

    def shared(self, e: Expr) -> bool:
        """``e`` (a structural subterm) is used more than once."""
        return self._uses.get(self.key(e), 0) > 1

    def named(self, e: Expr) -> bool:
        """``e`` already has a local of its own."""
        return self.key(e) in self._name

    def fresh(self) -> str:
        """A new local's name."""
        self._n += 1
        return f"{self.prefix}{self._n}"

    # -- pass 2: emit ------------------------------------------------------
    def expr(self, e: Expr) -> str:
        k = self.key(e)
        name = self._name.get(k)
        if name is not None:
            return name
        text = self.render(e)
        if self._uses.get(k, 0) > 1 and e.op not in ("const", "var"):
            name = self.fresh()
            self.lines.append(f"{name} = {text}")
            self._name[k] = name
            return name
        return text

    def value(self, e: Expr) -> str:
        """Emit ``e`` into a local now (so later writes cannot change it)."""
        text = self.expr(e)
        if text.isidentifier() or _is_int(text):
            return text
        name = self.fresh()
        self.lines.append(f"{name} = {text}")
        self._name[self.key(e)] = name
        return name

    def take(self) -> list[str]:
        """The locals emitted so far, handed to the caller (and forgotten here)."""
        lines, self.lines = self.lines, []
        return lines

    def render(self, e: Expr) -> str:
        """``e``'s own text, its operands emitted by `expr`."""
        handler = self.handlers.get(e.op)
        if handler is None:
            raise ValueError(f"codegen: unknown operation {e.op!r}")
        return handler(self, e)


def _mask(e: Expr) -> int:
    return (1 << e.width) - 1


def _binary(template: str) -> Callable[[Emitter, Expr], str]:
    """A handler writing ``template`` with the operands as x and y and the
    result's mask as m."""

    def handler(em: Emitter, e: Expr) -> str:
        return template.format(x=em.expr(e.args[0]), y=em.expr(e.args[1]), m=_mask(e))

    return handler


def _slt(em: Emitter, e: Expr) -> str:
    x, y = em.expr(e.args[0]), em.expr(e.args[1])
    sign = 1 << (e.args[0].width - 1)
    return f"(({x} ^ {sign}) < ({y} ^ {sign}))"


def _extract(em: Emitter, e: Expr) -> str:
    inner, hi, lo = em.expr(e.args[0]), e.args[1], e.args[2]
    return f"(({inner} >> {lo}) & {(1 << (hi - lo + 1)) - 1})"


# The concrete back end: every operation of `popek.spec.bits.OPERATIONS` as Python.
RENDER: dict[str, Callable[[Emitter, Expr], str]] = {
    "const": lambda em, e: str(e.args[0]),
    "var": lambda em, e: em.bind(e.args[0]),
    "reg": lambda em, e: f"S[{em.expr(e.args[0])}]",
    "mem": lambda em, e: f"M[{em.expr(e.args[0])}]",
    "extract": _extract,
    "zext": lambda em, e: em.expr(e.args[0]),
    "not": lambda em, e: f"({em.expr(e.args[0])} ^ {_mask(e)})",
    "ite": lambda em, e: f"({em.expr(e.args[1])} if {em.expr(e.args[0])} else {em.expr(e.args[2])})",
    "add": _binary("(({x} + {y}) & {m})"),
    "sub": _binary("(({x} - {y}) & {m})"),
    "and": _binary("({x} & {y})"),
    "or": _binary("({x} | {y})"),
    "xor": _binary("({x} ^ {y})"),
    "shl": _binary("(({x} << {y}) & {m})"),
    "lshr": _binary("({x} >> {y})"),
    "eq": _binary("({x} == {y})"),
    "ult": _binary("({x} < {y})"),
    "slt": _slt,
}
Emitter.handlers = RENDER


def emit_guards(
    em: Emitter, traps: list[tuple[Expr, Cause, Expr]], on_trap: Callable[[int, str], list[str]]
) -> tuple[list[str], bool]:
    """Statements that check ``traps`` in order and, at the first whose
    condition holds, run ``on_trap(cause, info text)`` (which must leave:
    the spec's first trap wins and nothing else happens).  Returns the
    statements and whether a condition is the constant 1: then the
    statements end in that trap, and nothing after it can run."""
    out: list[str] = []
    for cond, cause, info in traps:
        c = em.expr(cond)
        out += em.take()
        i = em.expr(info)
        out += em.take()
        if c == "1":
            return out + on_trap(int(cause), i), True
        out.append(f"if {c}:")
        out += ["    " + line for line in on_trap(int(cause), i)]
    return out, False


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
        bind = state_binder({**MACHINE_INPUTS, **st.fields}, memsize=memsize, pc=st.pc)
        em = Emitter(arch, bind, f"t{k}_")
        fx = st.fx
        skipped = fx.field_writes.get(FLAGS) if k in dead_flags else None
        for r in fx.roots():
            if r is not skipped:
                em.count(r)

        def trap(cause: int, info: str, k: int = k, pc: str = st.pc) -> list[str]:
            return [f"S[{PC}] = {pc}", f"return ({k}, {cause}, {info})"]

        guards, certain = emit_guards(em, fx.traps, trap)
        out += guards
        if certain:
            return out

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


def compile_effects(
    name: str, fx: Effects, arch: Arch, params: str, closure: str, inputs: Mapping[str, str]
) -> Callable:
    """``make(<closure>)`` returning ``def name(<params>)`` that runs ``fx``
    once on the machine's state, the inputs bound as ``inputs`` says (an
    opcode's operation, the trap mechanism, a routine of a VMM)."""
    step = Step(fx, dict(inputs), f"S[{PC}]")
    body = emit_steps(arch, [step], dead_flags=set(), pb=arch.page_bits)
    return compile_function(name, params, body, closure)
