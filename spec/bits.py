"""The bit-vector vocabulary every instruction is written in.

An instruction's definition never computes on numbers directly: it builds
`Expr` trees from this small set of operations.  The concrete machine compiles
those trees to plain Python (``popek.model.codegen``) and the proofs translate
them to Z3 terms (``popek.proofs.symbolic``), so both run the one definition.

Rules that keep the two back ends in agreement:

* every value has a width; operands of a binary operation must have the same
  width (as in claripy, mixing widths is an error, not a silent extension);
* booleans are 1-bit values; branching on a machine value is ``ite``, never a
  Python ``if``;
* comparisons say whether they are signed or unsigned.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Mapping, Union

# Operation names, by arity.  Every back end (the compiler in
# ``popek.model.codegen``, the Z3 translation in ``popek.proofs.symbolic``,
# the abstract interpreter in ``popek.model.analysis.reach`` and its interval
# arithmetic, ``popek.model.analysis.intervals``) has a table of handlers
# keyed by these names; adding an operation is one entry in each,
# and `missing_handlers` (held by tests/spec/test_backends.py) names the
# back ends that lack one.
BINARY = ("add", "sub", "and", "or", "xor", "shl", "lshr", "eq", "ult", "slt")
UNARY = ("not", "zext", "extract")
LEAVES = ("const", "var")  # a constant; a free input (a state slot, an operand, MEMSIZE)
READS = ("reg", "mem")  # a general register or a storage word, by index (built by `Sem`)
OPERATIONS = (*LEAVES, *READS, *UNARY, *BINARY, "ite")

Operand = Union["Expr", int]


@dataclass(frozen=True, eq=False)
class Expr:
    """A node of the expression DAG.  Nodes compare by identity."""

    op: str
    width: int
    args: tuple = ()

    # -- arithmetic and logic (same width in, same width out) ------------
    def __add__(self, o: Operand) -> Expr:
        return _bin("add", self, o)

    def __sub__(self, o: Operand) -> Expr:
        return _bin("sub", self, o)

    def __and__(self, o: Operand) -> Expr:
        return _bin("and", self, o)

    def __or__(self, o: Operand) -> Expr:
        return _bin("or", self, o)

    def __xor__(self, o: Operand) -> Expr:
        return _bin("xor", self, o)

    def __lshift__(self, o: Operand) -> Expr:
        return _bin("shl", self, o)

    def __rshift__(self, o: Operand) -> Expr:
        """Logical (unsigned) shift right."""
        return _bin("lshr", self, o)

    def __invert__(self) -> Expr:
        return Expr("not", self.width, (self,))

    def __bool__(self) -> bool:
        raise TypeError(
            "a machine value cannot drive a Python `if`; use ite(cond, a, b)"
        )

    __hash__ = object.__hash__


def const(value: int, width: int) -> Expr:
    return Expr("const", width, (value & ((1 << width) - 1),))


def var(name: str, width: int) -> Expr:
    """A free input: a state field, an instruction field, a register read."""
    return Expr("var", width, (name,))


class Slot(str):
    """The name of a free input that is state slot ``index`` of the machine.

    A state slot is read as ``var(Slot(n), width)``.  The name is still the
    string ``"S<n>"`` (so effects compare, hash and print as they always
    have, and a set of input names mixes slots with ``rd`` or ``MEMSIZE``),
    but a back end asks `slot_of` for the index instead of parsing the
    name again."""

    index: int

    def __new__(cls, index: int) -> "Slot":
        self = super().__new__(cls, f"S{index}")
        self.index = index
        return self

    def __reduce__(self) -> tuple:
        return (Slot, (self.index,))  # str's own pickling would pass the text, not the index


def slot_of(name: str) -> int | None:
    """The state slot an input name stands for, or None (an operand, MEMSIZE, ...)."""
    return name.index if type(name) is Slot else None


def reads_slot(e: Expr, slot: int) -> bool:
    """``e`` is exactly the read of state slot ``slot``."""
    return e.op == "var" and slot_of(e.args[0]) == slot


def reads_at(e: Expr, op: str, index: int) -> bool:
    """``e`` reads general register (``op`` "reg") or storage word (``op``
    "mem") ``index``, named by a constant: how the guest generator tells a
    pop (a storage read at sp) or a return from a trap (the saved PSW)."""
    return e.op == op and e.args[0].op == "const" and e.args[0].args[0] == index


def missing_handlers(table: Mapping[str, object], ops: Iterable[str] = OPERATIONS) -> list[str]:
    """The operations of ``ops`` a back end's handler table has no entry for."""
    return [op for op in ops if op not in table]


def children(e: Expr) -> tuple:
    """The operand expressions of ``e`` (an extract's bounds are numbers,
    a constant's value and an input's name are not expressions)."""
    if e.op in ("const", "var"):
        return ()
    return e.args[:1] if e.op == "extract" else e.args


def walk(roots: Iterable[Expr], *, into: Callable[[Expr], bool] | None = None) -> Iterator[Expr]:
    """Every node reachable from ``roots``, each once (the DAG shares
    subterms: a tree walk would visit them again and again).

    ``into(e)`` decides whether to look inside ``e`` (``e`` itself is
    still yielded): how a caller skips, say, the addresses of storage reads."""
    stack = list(roots)
    seen: set[int] = set()
    while stack:
        e = stack.pop()
        if id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        if into is None or into(e):
            stack.extend(children(e))


def inputs(roots: Iterable[Expr], *, into: Callable[[Expr], bool] | None = None) -> set[str]:
    """The names of the free inputs ``roots`` read (state slots are `Slot`)."""
    return {e.args[0] for e in walk(roots, into=into) if e.op == "var"}


def load_addresses(roots: Iterable[Expr]) -> list[Expr]:
    """The address of every storage read in ``roots``, in `walk` order:
    what a definition loads from (the shadow pager compiles the table reads
    of a translation from them, the generator asks which operand an address
    depends on)."""
    return [e.args[0] for e in walk(roots) if e.op == "mem"]


def _coerce(o: Operand, width: int) -> Expr:
    if isinstance(o, Expr):
        return o
    if isinstance(o, int):
        return const(o, width)
    raise TypeError(f"not a machine value: {o!r}")


def _bin(op: str, a: Operand, b: Operand) -> Expr:
    if isinstance(a, int) and isinstance(b, Expr):
        a = const(a, b.width)
    if not isinstance(a, Expr):
        raise TypeError(f"not a machine value: {a!r}")
    b = _coerce(b, a.width)
    if a.width != b.width:
        raise TypeError(f"{op}: width mismatch {a.width} vs {b.width}")
    width = 1 if op in ("eq", "ult", "slt") else a.width
    return Expr(op, width, (a, b))


# -- comparisons: explicit about signedness, 1-bit results ---------------
def eq(a: Operand, b: Operand) -> Expr:
    return _bin("eq", a, b)


def ne(a: Operand, b: Operand) -> Expr:
    return ~eq(a, b)


def ult(a: Operand, b: Operand) -> Expr:
    return _bin("ult", a, b)


def uge(a: Operand, b: Operand) -> Expr:
    return ~ult(a, b)


def slt(a: Operand, b: Operand) -> Expr:
    return _bin("slt", a, b)


def ite(cond: Expr, then: Operand, other: Operand) -> Expr:
    """If-then-else on machine values: the only way to branch."""
    if cond.width != 1:
        raise TypeError("ite condition must be 1 bit wide")
    if isinstance(then, int) and isinstance(other, Expr):
        then = const(then, other.width)
    if not isinstance(then, Expr):
        raise TypeError("ite needs at least one machine value to know the width")
    other = _coerce(other, then.width)
    if then.width != other.width:
        raise TypeError(f"ite: width mismatch {then.width} vs {other.width}")
    return Expr("ite", then.width, (cond, then, other))


def zext(a: Expr, width: int) -> Expr:
    """Zero-extend to a wider value."""
    if width < a.width:
        raise TypeError("zext cannot narrow")
    return a if width == a.width else Expr("zext", width, (a,))


def bit(a: Expr, index: int) -> Expr:
    """Bit ``index`` of ``a`` as a 1-bit value."""
    return extract(a, index, index)


def extract(a: Expr, hi: int, lo: int) -> Expr:
    if not 0 <= lo <= hi < a.width:
        raise ValueError(f"extract [{hi}:{lo}] out of a {a.width}-bit value")
    return Expr("extract", hi - lo + 1, (a, hi, lo))


def any_of(*conds: Expr) -> Expr:
    out = conds[0]
    for c in conds[1:]:
        out = out | c
    return out


def all_of(*conds: Expr) -> Expr:
    out = conds[0]
    for c in conds[1:]:
        out = out & c
    return out


TRUE = const(1, 1)
FALSE = const(0, 1)
