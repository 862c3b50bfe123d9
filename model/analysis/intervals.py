"""Sets of machine values, kept as a few intervals: the value domain of `reach`.

An analysis that must say "this load can never read address 0x42" needs, for
every machine value, a set that surely contains it.  A sorted tuple of
disjoint ``(lo, hi)`` intervals holds constants exactly, keeps ranges such as
"any address below the bound" small, and costs little.  Every operation
over-approximates the bit-vector operation of the same name in
``popek.spec.bits`` (the result contains every value the operation can give
on members of its operands): that is what makes the analysis sound.  Small
operands are computed exactly, member by member, by `concrete`, which
follows the machine's own arithmetic (``popek.model.codegen``); larger ones
by the operation's rule in `RULES`.  Both are tables keyed by the operation,
as every back end of the spec is (tests/spec/test_backends.py holds them to
``popek.spec.bits.BINARY``).

The empty tuple is the empty set: a value on a path that cannot happen.
"""

from __future__ import annotations

from typing import Callable, Iterator

Values = tuple[tuple[int, int], ...]

CAP = 24  # intervals kept per value; more are merged across the smallest gaps
EXACT = 256  # operand pairs computed member by member


def const(v: int) -> Values:
    return ((v, v),)


def full(width: int) -> Values:
    return ((0, (1 << width) - 1),)


BOTH: Values = ((0, 1),)
TRUE: Values = ((1, 1),)
FALSE: Values = ((0, 0),)


def make(pairs) -> Values:
    """Normal form: sorted, disjoint, not adjacent, at most `CAP` intervals."""
    out: list[list[int]] = []
    for lo, hi in sorted(pairs):
        if out and lo <= out[-1][1] + 1:
            if hi > out[-1][1]:
                out[-1][1] = hi
        else:
            out.append([lo, hi])
    return _few(tuple((lo, hi) for lo, hi in out), CAP)


def union(a: Values, b: Values) -> Values:
    if a == b or not b:
        return a
    if not a:
        return b
    return make(a + b)


def meet(a: Values, lo: int, hi: int) -> Values:
    """The members of ``a`` between ``lo`` and ``hi``."""
    return tuple((max(x, lo), min(y, hi)) for x, y in a if x <= hi and y >= lo)


def size(a: Values) -> int:
    return sum(hi - lo + 1 for lo, hi in a)


def members(a: Values) -> Iterator[int]:
    for lo, hi in a:
        yield from range(lo, hi + 1)


def contains(a: Values, v: int) -> bool:
    return any(lo <= v <= hi for lo, hi in a)


def overlaps(a: Values, b: Values) -> bool:
    return any(x <= q and p <= y for x, y in a for p, q in b)


def is_const(a: Values) -> bool:
    return len(a) == 1 and a[0][0] == a[0][1]


def show(a: Values) -> str:
    if not a:
        return "{}"
    return "{" + ", ".join(f"{lo:#x}" if lo == hi else f"{lo:#x}..{hi:#x}" for lo, hi in a) + "}"


# -- the operations of spec.bits, over-approximated ---------------------------
def _slt_member(x: int, y: int, mask: int, in_width: int) -> int:
    sign = 1 << (in_width - 1)
    return int((x ^ sign) < (y ^ sign))


# The machine's own arithmetic on members, per binary operation of
# `popek.spec.bits.BINARY`: (x, y, result mask, operand width) -> member.
CONCRETE: dict[str, Callable[[int, int, int, int], int]] = {
    "add": lambda x, y, m, w: (x + y) & m,
    "sub": lambda x, y, m, w: (x - y) & m,
    "and": lambda x, y, m, w: x & y,
    "or": lambda x, y, m, w: x | y,
    "xor": lambda x, y, m, w: x ^ y,
    "shl": lambda x, y, m, w: (x << y) & m,
    "lshr": lambda x, y, m, w: x >> y,
    "eq": lambda x, y, m, w: int(x == y),
    "ult": lambda x, y, m, w: int(x < y),
    "slt": _slt_member,
}


def concrete(op: str, x: int, y: int, width: int, in_width: int) -> int:
    """One member of ``op``'s result: the machine's own arithmetic."""
    fn = CONCRETE.get(op)
    if fn is None:
        raise ValueError(f"unknown operation {op!r}")
    return fn(x, y, (1 << width) - 1, in_width)


def hull(a: Values) -> Values:
    """The one interval from the least member to the greatest."""
    return ((a[0][0], a[-1][1]),) if a else a


def _few(a: Values, n: int) -> Values:
    """``a`` with at most ``n`` intervals (merged across the smallest gaps)."""
    if len(a) <= n:
        return a
    out = [list(p) for p in a]
    while len(out) > n:
        gaps = [out[i + 1][0] - out[i][1] for i in range(len(out) - 1)]
        i = gaps.index(min(gaps))
        out[i][1] = out[i + 1][1]
        del out[i + 1]
    return tuple((lo, hi) for lo, hi in out)


def _wrap(lo: int, hi: int, width: int) -> list[tuple[int, int]]:
    """The interval ``lo..hi`` of integers, taken modulo 2**width."""
    m = 1 << width
    if hi - lo >= m - 1:
        return [(0, m - 1)]
    lo_m = lo % m
    hi_m = lo_m + (hi - lo)
    if hi_m < m:
        return [(lo_m, hi_m)]
    return [(lo_m, m - 1), (0, hi_m - m)]


def _pairwise(a: Values, b: Values, f: Callable[[int, int, int, int], list]) -> Values:
    a, b = _few(a, 8), _few(b, 8)
    out: list[tuple[int, int]] = []
    for x in a:
        for y in b:
            out += f(x[0], x[1], y[0], y[1])
    return make(out)


def binary(op: str, a: Values, b: Values, width: int, in_width: int) -> Values:
    """Over-approximation of ``op`` on every pair of members: exact, member
    by member, while the pairs are few (`EXACT`), else ``op``'s rule in
    `RULES`."""
    if not a or not b:
        return ()
    if size(a) * size(b) <= EXACT:
        return make(
            (v, v) for v in {concrete(op, x, y, width, in_width) for x in members(a) for y in members(b)}
        )
    rule = RULES.get(op)
    if rule is None:
        raise ValueError(f"unknown operation {op!r}")
    return rule(a, b, width, in_width)


# One rule per binary operation, for operands too large to enumerate:
# (a, b, result width, operand width) -> a set containing every result.
Rule = Callable[[Values, Values, int, int], Values]


def _add(a: Values, b: Values, width: int, in_width: int) -> Values:
    return _pairwise(a, b, lambda x0, x1, y0, y1: _wrap(x0 + y0, x1 + y1, width))


def _sub(a: Values, b: Values, width: int, in_width: int) -> Values:
    return _pairwise(a, b, lambda x0, x1, y0, y1: _wrap(x0 - y1, x1 - y0, width))


def _and(a: Values, b: Values, width: int, in_width: int) -> Values:
    mask = (1 << width) - 1
    if is_const(b):
        return make(_and_const(p, b[0][0], mask) for p in a)
    if is_const(a):
        return make(_and_const(p, a[0][0], mask) for p in b)
    return ((0, min(a[-1][1], b[-1][1])),)


def _or(a: Values, b: Values, width: int, in_width: int) -> Values:
    mask = (1 << width) - 1
    return _pairwise(a, b, lambda x0, x1, y0, y1: [(max(x0, y0), min(x1 + y1, mask))])


def _xor(a: Values, b: Values, width: int, in_width: int) -> Values:
    top = max(a[-1][1], b[-1][1])
    return ((0, (1 << top.bit_length()) - 1),)


def _shl(a: Values, b: Values, width: int, in_width: int) -> Values:
    mask = (1 << width) - 1
    if is_const(b):
        k = b[0][0]
        if all((hi << k) <= mask for _lo, hi in a):
            return make((lo << k, hi << k) for lo, hi in a)
    return full(width)


def _lshr(a: Values, b: Values, width: int, in_width: int) -> Values:
    k = b[0][0]  # the smallest shift gives the largest result
    if is_const(b):
        return make((lo >> k, hi >> k) for lo, hi in a)
    return ((0, a[-1][1] >> k),)


def _eq(a: Values, b: Values, width: int, in_width: int) -> Values:
    return BOTH if overlaps(a, b) else FALSE


def _ult(a: Values, b: Values, width: int, in_width: int) -> Values:
    if a[-1][1] < b[0][0]:
        return TRUE
    if a[0][0] >= b[-1][1]:
        return FALSE
    return BOTH


def _slt(a: Values, b: Values, width: int, in_width: int) -> Values:
    """Signed order is unsigned order with the sign bits flipped."""
    return binary("ult", flip_sign(a, in_width), flip_sign(b, in_width), 1, in_width)


RULES: dict[str, Rule] = {
    "add": _add,
    "sub": _sub,
    "and": _and,
    "or": _or,
    "xor": _xor,
    "shl": _shl,
    "lshr": _lshr,
    "eq": _eq,
    "ult": _ult,
    "slt": _slt,
}


def _and_const(p: tuple[int, int], c: int, mask: int) -> tuple[int, int]:
    lo, hi = p
    low = c & (c + 1) == 0  # c = 0b0..011..1: keeps the low bits
    if low:
        k = c.bit_length()
        return (lo & c, hi & c) if lo >> k == hi >> k else (0, c)
    inv = ~c & mask
    if inv & (inv + 1) == 0:  # c = 0b1..100..0: clears the low bits, monotone
        return (lo & c, hi & c)
    return (0, min(hi, c))


def flip_sign(a: Values, width: int) -> Values:
    """Members with the sign bit flipped: signed order becomes unsigned order."""
    return _pairwise(a, const(1 << (width - 1)), lambda x0, x1, y0, y1: _wrap(x0 + y0, x1 + y1, width))


def not_(a: Values, width: int) -> Values:
    m = (1 << width) - 1
    return make((m - hi, m - lo) for lo, hi in a)


def extract(a: Values, hi: int, lo: int) -> Values:
    shifted = binary("lshr", a, const(lo), 64, 64) if lo else a
    mask = (1 << (hi - lo + 1)) - 1
    return binary("and", shifted, const(mask), hi - lo + 1, hi - lo + 1)
