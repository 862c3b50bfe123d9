"""Trap-and-emulate simulation proof and safety proofs, for all states."""

from __future__ import annotations

import random

import pytest
import z3

from popek.proofs.concrete import ConcreteState
from popek.proofs.safety import prove_safety
from popek.proofs.simulation import (
    FAILED,
    PROVED,
    Allocation,
    abstraction,
    abstraction_concrete,
    prove_trap_and_emulate,
    replay_sim,
)
from popek.proofs.classify import NO, YES
from popek.proofs.witness import replay
from popek.spec import instructions as I
from popek.spec import state as st
from popek.spec.profiles import PG, get


def test_trap_and_emulate_is_proved_faithful_on_pg() -> None:
    r = prove_trap_and_emulate(get("pg"))
    assert r.fetch.status == PROVED
    assert [x.insn for x in r.results if x.status != PROVED] == []
    assert r.status == PROVED


def test_trap_and_emulate_fails_on_x86_with_replayable_witnesses() -> None:
    profile = get("x86")
    r = prove_trap_and_emulate(profile)
    assert r.status == FAILED
    failed = {x.insn for x in r.failures}
    assert {"popf", "pushf"} <= failed
    assert failed <= {"popf", "pushf", "rdmode", "rdbase", "rdbound"}
    for x in r.failures:
        assert replay_sim(profile, x.witness).ok, x.insn
    (popf,) = [x for x in r.failures if x.insn == "popf"]
    assert popf.witness.virtual.S[st.MODE] == st.SUPERVISOR  # the guest kernel's popf


def test_trap_and_emulate_fails_on_hybrid_only_because_of_jru() -> None:
    r = prove_trap_and_emulate(get("hybrid"))
    assert [x.insn for x in r.failures] == ["jru"]
    assert replay_sim(get("hybrid"), r.failures[0].witness).ok


@pytest.mark.parametrize("name", ["pg", "hybrid", "x86"])
def test_user_mode_is_safe(name: str) -> None:
    """No instruction, run in user mode without trapping, writes outside R
    or changes a resource: x86 fails fidelity, not safety (popf in user mode
    leaves IE alone)."""
    r = prove_safety(get(name))
    assert r.status == YES, [(x.insn, x.note) for x in r.results if x.safe != YES]


def test_an_unprivileged_ei_is_unsafe_and_its_witness_replays() -> None:
    open_ei = PG.derive("pg-open-ei", "pg, but ei does not trap", replace=[I.ei])
    r = prove_safety(open_ei)
    assert r.status == NO
    assert [x.insn for x in r.failures] == ["ei"]
    assert replay(open_ei, r.failures[0].witness).ok


def test_the_two_statements_of_alpha_agree() -> None:
    """alpha on Z3 terms and alpha on integers give the same real state."""
    rng = random.Random(6)
    arch = st.ARCH
    for _ in range(20):
        S = [rng.randrange(1 << st.field_width(i)) for i in range(st.NSLOTS)]
        size = rng.choice([32, 64, 200])
        v = ConcreteState(S, {rng.randrange(size): rng.randrange(1 << 16) for _ in range(5)},
                          rng.randrange(3), size)
        host = ConcreteState([0] * st.NSLOTS, {rng.randrange(4096): 7 for _ in range(5)}, 1, 4096)
        host.S[st.TIMER] = rng.randrange(10)
        ab = rng.randrange(4096 - size)
        want = abstraction_concrete(v, ab, size, host, arch.mask)
        got = abstraction(v.to_sym(), Allocation(z3.BitVecVal(ab, 16), z3.BitVecVal(size, 16)),
                          host.to_sym())
        for i in range(st.NSLOTS):
            assert z3.simplify(got.get(i)).as_long() == want.S[i], st.FIELD_NAMES[i]
        for a in list(want.mem)[:20] + [ab, ab + size - 1, ab + size, 0]:
            word = z3.simplify(z3.Select(got.mem, z3.BitVecVal(a, 16))).as_long()
            assert word == want.word(a), hex(a)


def test_opaque_traces_have_the_shape_of_the_real_ones() -> None:
    """The opaque memory layer replaces translation only: every instruction
    traced against it writes the same fields, registers, storage and output
    as the spec's own trace."""
    from popek.proofs.opaque import opaque_trace
    from popek.spec.profiles import all_profiles
    from popek.spec.trace import trace

    for profile in all_profiles():
        for insn in profile.insns:
            real = trace(insn, profile.arch)
            opaque, _ = opaque_trace(insn, profile.arch)
            assert set(opaque.field_writes) == set(real.field_writes), insn.name
            assert len(opaque.reg_writes) == len(real.reg_writes), insn.name
            assert len(opaque.mem_writes) == len(real.mem_writes), insn.name
            assert len(opaque.outputs) == len(real.outputs), insn.name
