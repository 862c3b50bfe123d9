"""Type 0 with Z3: x86's troublesome instructions are native in a partition,
and a partition check that forgets the size is refuted."""

from __future__ import annotations

import pytest

from popek.proofs import partition as PP
from popek.proofs.classify import NO, YES
from popek.spec import partition as spec_partition
from popek.spec import profiles
from popek.spec.trace import trace, trace_trap

X86_TROUBLE = ["pushf", "popf", "rdmode", "rdbase", "rdbound"]


def test_x86_sensitive_instructions_stop_being_a_problem_in_a_partition():
    x86 = profiles.get("x86")
    report = PP.partition_report(x86, names=[*X86_TROUBLE, "wrr", "rti", "st", PP.TRAP])
    assert {r.insn: r.native for r in report.native} == {n: YES for n in [*X86_TROUBLE, "wrr", "rti", "st", PP.TRAP]}
    assert set(X86_TROUBLE) <= set(report.problems["sensitive"])  # a VMM's problem on x86 ...
    assert set(X86_TROUBLE) | {"wrr", "rti"} <= set(report.solved)  # ... and none here
    text = PP.format_report(report)
    assert "not virtualized at all: the partition register" in text and "written by 0" in text


def test_dedicated_resources_have_witnesses():
    found = {d.resource: d for d in PP.dedicated_resources(profiles.get("pg"))}
    assert {"timer", "ie", "mode", "base", "bound", "output port"} <= set(found)
    t = found["timer"]
    assert t.insn == "stimer" and t.before != t.after


@pytest.fixture
def no_size_check(monkeypatch):
    """The partition hardware with its size check left out (a planted bug)."""

    def relocate(s, addr):
        return spec_partition.partition_base(s) + addr

    monkeypatch.setattr(spec_partition, "relocate", relocate)
    trace.cache_clear()
    trace_trap.cache_clear()
    yield
    monkeypatch.undo()
    trace.cache_clear()
    trace_trap.cache_clear()


def test_a_partition_without_its_size_check_is_refuted(no_size_check):
    pg = profiles.get("pg")
    for name in ("st", "ld"):
        r = PP.prove_insn(pg, pg[name])
        assert r.native == NO and "partition base" in r.note
    assert PP.prove_insn(pg, pg["add"]).native == YES  # touches no storage: the same either way
