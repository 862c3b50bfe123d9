"""Words that are no instruction: the Z3 semantics and the machine agree.

Both back ends take what happens from one spec routine,
``popek.spec.trap.undecodable`` (traced by ``trace_undecodable``): the
machine compiles it, ``predict_step`` translates it to Z3.  Here both run
on states whose PC holds an illegal word pair, under relocation, in either
mode, and must give the same step: an ILLEGAL trap whose info is the
(virtual) PC, nothing changed.
"""

from __future__ import annotations

import pytest

from popek.proofs.concrete import ConcreteState, fetch_addresses_at, predict_step, run_step
from popek.spec import state as st
from popek.spec.encoding import decode
from popek.spec.profiles import all_profiles

ILLEGAL_WORDS = {
    "opcode 0 (zeroed storage)": (0x0000, 0),
    "an opcode no profile assigns": (0xFF00, 0),
    "nop with a register field": (0x0F10, 0),
    "nop with an immediate": (0x0F00, 1),
    "mov r8, r9 (no such registers)": (0x0189, 0),
}


def _state(profile, words: tuple[int, int], mode: int, base: int, pc: int) -> ConcreteState:
    S = [0] * st.NSLOTS
    S[1], S[st.FLAGS], S[st.MODE], S[st.IE] = 0x1234, 0b1010, mode, 1
    S[st.BASE], S[st.BOUND], S[st.PC] = base, 0x200, pc
    state = ConcreteState(S, {}, 0, 4096)
    p0, p1 = fetch_addresses_at(state, profile.arch)
    state.mem[p0], state.mem[p1] = words
    assert decode(profile, *words) is None, words
    return state


@pytest.mark.parametrize("profile", all_profiles(), ids=lambda p: p.name)
@pytest.mark.parametrize("why", sorted(ILLEGAL_WORDS))
def test_an_undecodable_word_traps_alike_in_z3_and_on_the_machine(profile, why: str) -> None:
    for mode in (st.SUPERVISOR, st.USER):
        for base, pc in ((0, 0x40), (0x300, 0x1F0)):
            state = _state(profile, ILLEGAL_WORDS[why], mode, base, pc)
            got, want = run_step(profile, state), predict_step(profile, state)
            assert (got.trapped, got.cause, got.info) == (True, st.Cause.ILLEGAL, pc), why
            assert (want.trapped, want.cause, want.info) == (got.trapped, got.cause, got.info), why
            assert got.S == want.S == state.S, why
            assert got.writes == want.writes == {}, why
            assert got.out == want.out == [], why
