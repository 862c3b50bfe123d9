"""Classification and the theorem verdicts, as docs/design.md predicts them.

Every fact is decided by Z3 from the spec; these tests check the outcome
against the paper's expectations per profile, and replay every witness on
the concrete machine (a witness that does not replay fails here).
"""

from __future__ import annotations

import pytest

from popek.proofs.classify import COLUMNS, NO, UNKNOWN, YES, classify_profile
from popek.proofs.verdicts import FAILS, HOLDS, decide
from popek.proofs.witness import replay
from popek.spec import instructions as I
from popek.spec.profiles import PG, all_profiles, get

NAMES = [p.name for p in all_profiles()]


def _witnesses(profile):
    for c in classify_profile(profile):
        for fact in c.facts.values():
            for w in {id(x): x for x in (fact.witness, fact.user_witness) if x}.values():
                yield w


@pytest.mark.parametrize("name", NAMES)
def test_every_fact_is_decided(name: str) -> None:
    undecided = [
        (c.insn, col) for c in classify_profile(get(name)) for col in COLUMNS
        if c.answer(col) == UNKNOWN
    ]
    assert undecided == []


@pytest.mark.parametrize("name", NAMES)
def test_every_witness_replays_on_the_machine(name: str) -> None:
    profile = get(name)
    failures = []
    count = 0
    for w in _witnesses(profile):
        count += 1
        r = replay(profile, w)
        if not r.ok:
            failures.append((w.id, r.message))
    assert count > 0
    assert failures == []


def test_every_yes_has_a_witness() -> None:
    for profile in all_profiles():
        for c in classify_profile(profile):
            for col in ("privileged", "control", "mode", "location", "bound", "ie", "ptbr"):
                if c.answer(col) == YES:
                    fact = c.facts[col]
                    assert fact.witness is not None or fact.note.startswith("vacuously"), (
                        profile.name, c.insn, col)


def test_a_witness_that_does_not_hold_fails_replay() -> None:
    """Replay can fail: `ei`'s control-sensitivity witness with IE already on
    claims a change the machine does not make; relabelled as `nop` it names
    an instruction that is not in storage."""
    from dataclasses import replace

    from popek.spec.state import IE

    profile = get("pg")
    (c,) = [c for c in classify_profile(profile) if c.insn == "ei"]
    w = c.facts["control"].witness
    assert replay(profile, w).ok
    assert not replay(profile, replace(w, insn="nop")).ok
    state = w.states[0]
    on = replace(state, S=[1 if i == IE else x for i, x in enumerate(state.S)])
    assert not replay(profile, replace(w, states=[on])).ok


def _offenders(cond) -> set[str]:
    return {o.insn for o in cond.offenders}


def test_pg_satisfies_both_conditions() -> None:
    v = decide(get("pg"))
    assert v.theorem1.status == HOLDS and v.theorem3.status == HOLDS
    assert "sufficient" not in v.theorem1.sentence() or "holds" in v.theorem1.sentence()


def test_hybrid_fails_theorem_1_only_because_of_jru() -> None:
    v = decide(get("hybrid"))
    assert v.theorem1.status == FAILS
    assert _offenders(v.theorem1) == {"jru"}
    assert v.theorem3.status == HOLDS
    (jru,) = v.theorem1.offenders
    assert "control" in jru.kinds
    assert "sufficient, not necessary" in v.theorem1.sentence()


def test_x86_fails_both_with_the_classic_offenders() -> None:
    v = decide(get("x86"))
    expected = {"popf", "pushf", "rdmode", "rdbase", "rdbound"}
    assert v.theorem1.status == FAILS and v.theorem3.status == FAILS
    assert expected <= _offenders(v.theorem1)
    assert expected <= _offenders(v.theorem3)
    for o in v.theorem1.offenders:
        assert o.sensitive is not None and o.unprivileged is not None
        assert replay(get("x86"), o.sensitive).ok and replay(get("x86"), o.unprivileged).ok


def test_why_each_x86_offender_is_sensitive() -> None:
    rows = {c.insn: c for c in classify_profile(get("x86"))}
    assert rows["popf"].answer("control") == YES  # changes IE in supervisor mode
    assert rows["popf"].answer("mode") == YES  # ... and not in user mode
    assert rows["pushf"].answer("ie") == YES  # reveals the real IE
    assert rows["rdmode"].answer("mode") == YES
    assert rows["rdbase"].answer("location") == YES
    assert rows["rdbound"].answer("bound") == YES
    assert rows["add"].answer("innocuous") == YES
    assert rows["ld"].answer("ptbr") == NO  # paging is the memory layer's, like R


def test_a_mis_specified_profile_flips_theorem_1() -> None:
    """pg with popf made unprivileged and silent (x86's definition)."""
    broken = PG.derive("pg-silent-popf", "pg, but popf is x86's", replace=[I.popf])
    v = decide(broken)
    assert decide(get("pg")).theorem1.status == HOLDS
    assert v.theorem1.status == FAILS
    assert _offenders(v.theorem1) == {"popf"}
    assert "popf" in v.theorem1.sentence()
