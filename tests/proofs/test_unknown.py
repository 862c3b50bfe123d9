"""`unknown` is reported as unknown, never as proved."""

from __future__ import annotations

import pytest
import z3

from popek.proofs import solver
from popek.proofs.classify import UNKNOWN, classify_insn, relocation_lemma
from popek.proofs.verdicts import decide
from popek.spec import instructions as I
from popek.spec.profiles import PG, Profile


def test_a_query_out_of_budget_answers_unknown() -> None:
    """Factor a 64-bit semiprime in a thousand resource units (well under a
    millisecond): Z3 gives up, and says so.  The budget is Z3's resource
    count, so this holds however fast or loaded the machine is."""
    x, y = z3.BitVecs("x y", 64)
    n = 4611686014132420609  # (2**31 - 1) ** 2
    hard = [x * y == n, z3.UGT(x, 1), z3.UGT(y, 1), z3.ULT(x, 2**32), z3.ULT(y, 2**32), x != y]
    before = solver.STATS["unknown"]
    answer = solver.check(hard, budget=1000)
    assert answer.status == solver.UNKNOWN
    assert answer.reason
    assert solver.STATS["unknown"] == before + 1


def test_unknown_answers_make_facts_and_verdicts_undecided(monkeypatch: pytest.MonkeyPatch) -> None:
    """With every query unknown, a fresh instruction is undecided throughout,
    and the theorem condition is undecided (not "holds") because of it."""
    fresh = I.privileged(I.popf)  # a new definition object: nothing cached
    profile = Profile("pg-unknowable", "only a fresh popf", (fresh,), PG.arch)
    monkeypatch.setattr(solver, "check", lambda *a, **k: solver.Answer(solver.UNKNOWN, reason="test"))
    relocation_lemma.cache_clear()
    try:
        c = classify_insn(profile, fresh)
        v = decide(profile)
    finally:
        relocation_lemma.cache_clear()  # do not leave an unproved lemma cached
    assert {c.answer(col) for col in ("privileged", "control", "mode", "sensitive")} == {UNKNOWN}
    assert v.theorem1.status == UNKNOWN
    assert v.theorem1.undecided == ["popf"]
    assert "undecided" in v.theorem1.sentence()
