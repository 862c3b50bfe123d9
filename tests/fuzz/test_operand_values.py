"""What the generator draws for the audit's misses: sensitive instructions
whose operand is a value that matters (all ones, a flag mask), words that
decode as nothing, storage that ends inside a page, and long runs."""

from __future__ import annotations

from hypothesis import HealthCheck, given, seed, settings

from popek.fuzz import from_profile, guest, strategies
from popek.model.machine import Machine
from popek.spec import profiles
from popek.spec import state as st
from popek.spec.encoding import decode


def _draw(n: int = 400, at: int = 3) -> list:
    got = []

    @seed(at)
    @settings(max_examples=n, database=None, deadline=None, suppress_health_check=list(HealthCheck))
    @given(from_profile("pg"))
    def collect(case):
        got.append(case)

    collect()
    return got


CASES = _draw()


def _pairs(case):
    ops = [*case.kernel, *(case.handler or ()), *(case.user or ())]
    return list(zip(ops, ops[1:], ops[2:] + [None]))


def test_sensitive_operands_are_primed_with_values_that_matter():
    primes = set(strategies.prime_values(profiles.get("pg")))
    assert {0xFFFF, 0x8000, 0x9, 0xF, 0x1} <= primes  # all ones, sign bit, N|V, NZCV, V
    out = [a.imm for c in CASES for a, b, _ in _pairs(c) if b.name == "out" and a.name == "li" and a.rd == b.rs]
    assert 0xFFFF in out or len(set(out) & primes) >= 2, out
    popf = [a.imm for c in CASES for a, b, d in _pairs(c)
            if a.name == "li" and b.name == "push" and b.rs == a.rd and d is not None and d.name == "popf"]
    assert any(v & st.FLAG_V for v in popf), popf  # (16 too: the unmask-by-popf scenario pushes IE)


def test_undefined_words_are_drawn_and_trap_as_undefined():
    prof = profiles.get("pg")
    words = [op.imm for c in CASES for op in c.kernel if op.name == guest.UNDEFINED]
    assert words and set(words) <= set(strategies.undefined_words(prof))
    assert all(decode(prof, w, 0) is None for w in strategies.undefined_words(prof))
    m = Machine(prof, 0x400)
    case = guest.GuestCase("pg", (guest.Op(guest.UNDEFINED, 0, 0, max(words)),))
    m.load(case.image())
    m.run(1)
    assert m.M[4] == 6  # OLD_CAUSE: ILLEGAL (undefined opcode), not PRIVILEGED (1)


def test_storage_that_ends_inside_a_page_is_drawn_and_marked():
    odd = [c for c in CASES if c.memsize % 64]
    assert odd and {c.memsize for c in odd} == {0x5F0}
    image = odd[0].image()
    assert image.words[0x5F0 - 1] == guest.END_MARK


def test_long_runs_are_drawn_with_their_last_slice_apart():
    long = [c for c in _draw(1000, at=2) if c.steps == strategies.LONG_STEPS]
    assert long  # about 1 case in 128
    for c in long:
        assert c.chunks == (strategies.LONG_STEPS - strategies.LONG_TAIL, strategies.LONG_TAIL)
