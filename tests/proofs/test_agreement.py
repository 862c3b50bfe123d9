"""The two back ends agree: Z3 semantics versus the concrete machine.

For every instruction of every registered profile, Hypothesis draws concrete
states (registers, flags, mode, R, paging, timer, storage), places the
instruction at PC, and compares one cycle of the compiled machine
(``popek.model``) with the Z3 translation of the same traced effects
(``popek.proofs.symbolic``) evaluated on the same state: trap or not, cause
and info, the post-state vector, the storage words written, and the output.
A disagreement is a bug in codegen or in the Z3 translation, never in the
instruction (both run the one definition).
"""

from __future__ import annotations

import pytest
import z3
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as hs

from popek.proofs.concrete import ConcreteState, fetch_addresses_at, predict_step, run_step
from popek.proofs.symbolic import encoding, fresh_operands
from popek.spec import state as st
from popek.spec.encoding import encode
from popek.spec.profiles import Profile, all_profiles

ARCH = st.ARCH
MASK = ARCH.mask

CASES = [(p, i) for p in all_profiles() for i in p.insns]

# Profiles share instruction objects (pg's add is x86's add).  The first
# profile that has a definition tests it thoroughly; later ones check their
# own decode table with a few examples.
_FIRST: dict = {}
for _p, _i in CASES:
    _FIRST.setdefault((_i, _p.arch), _p.name)


def _examples(profile: Profile, insn) -> int:
    return 15 if _FIRST[(insn, profile.arch)] == profile.name else 4


def _word() -> hs.SearchStrategy[int]:
    """Words biased towards the edges where traps and carries happen."""
    return hs.one_of(
        hs.integers(0, 40),
        hs.integers(0, MASK),
        hs.sampled_from([MASK, MASK - 1, 0x7FFF, 0x8000, 64, 63]),
    )


@hs.composite
def states(draw: hs.DrawFn, profile: Profile, insn) -> ConcreteState:
    memsize = draw(hs.sampled_from([32, 64, 100, 4096, MASK]))
    S = [0] * st.NSLOTS
    for r in range(ARCH.nregs):
        S[r] = draw(_word())
    S[st.FLAGS] = draw(hs.integers(0, 15))
    S[st.IE] = draw(hs.integers(0, 1))
    S[st.MODE] = draw(hs.integers(0, 1))
    S[st.TIMER] = draw(hs.sampled_from([0, 0, 1, 2, 500]))
    S[st.PEND] = 0 if S[st.IE] else draw(hs.integers(0, 1))
    if draw(hs.booleans()):  # R that holds the code, so the fetch succeeds
        S[st.BASE] = draw(hs.integers(0, memsize // 2))
        S[st.BOUND] = draw(hs.integers(2, memsize - S[st.BASE]))
        S[st.PC] = draw(hs.integers(0, S[st.BOUND] - 2))
    else:
        S[st.BASE], S[st.BOUND], S[st.PC] = draw(_word()), draw(_word()), draw(_word())
    mem: dict[int, int] = {}
    if draw(hs.integers(0, 2)) == 0:  # paging on, with a mapped page for the code
        S[st.PTBR] = draw(hs.integers(1, memsize - 1))
        for v in (S[st.PC], S[st.PC] + 1):
            linear = (S[st.BASE] + v) & MASK
            frame = draw(hs.integers(0, (memsize - 1) >> ARCH.page_bits)) << ARCH.page_bits
            bits = draw(hs.sampled_from([7, 7, 7, 5, 3, 1, 0]))
            mem[(S[st.PTBR] + (linear >> ARCH.page_bits)) & MASK] = frame | bits
    extra = draw(hs.dictionaries(hs.integers(0, memsize - 1), _word(), max_size=6))
    for a, v in extra.items():
        mem.setdefault(a, v)
    # words near the stack and the registers' addresses, where loads go
    for r in (st.SP, 1, 2):
        for delta in (-1, 0):
            a = (S[st.BASE] + S[r] + delta) & MASK
            if a < memsize and draw(hs.booleans()):
                mem.setdefault(a, draw(_word()))
    default = draw(hs.sampled_from([0, 0, 0x1234]))
    return ConcreteState(S, mem, default, memsize)


def _place(profile: Profile, insn, state: ConcreteState, rd: int, rs: int, imm: int) -> bool:
    """Write the instruction where a fetch at PC reads it; False when the
    fetch faults or the write itself changes the translation."""
    where = fetch_addresses_at(state, profile.arch)
    if where is None:
        return False
    p0, p1 = where
    state.mem[p0], state.mem[p1] = encode(profile, insn, rd, rs, imm)
    if not state.S[st.PTBR]:
        return True  # only a page-table entry under the code can move it
    return fetch_addresses_at(state, profile.arch) == where


@hs.composite
def placed(draw: hs.DrawFn, profile: Profile, insn) -> ConcreteState:
    state = draw(states(profile, insn))
    rd = draw(hs.integers(0, ARCH.nregs - 1)) if "rd" in insn.fields else 0
    rs = draw(hs.integers(0, ARCH.nregs - 1)) if "rs" in insn.fields else 0
    imm = draw(_word()) if "imm" in insn.fields else 0
    assume(_place(profile, insn, state, rd, rs, imm))
    return state


def _ids(case) -> str:
    profile, insn = case
    return f"{profile.name}-{insn.name}"



@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_z3_semantics_agree_with_machine(case) -> None:
    profile, insn = case

    @settings(
        max_examples=_examples(profile, insn),
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
    @given(placed(profile, insn))
    def check(state: ConcreteState) -> None:
        want = predict_step(profile, state)
        got = run_step(profile, state)
        assert got.trapped == want.trapped, (state, got, want)
        assert (got.cause, got.info) == (want.cause, want.info), (state, got, want)
        assert got.S == want.S, (state, got, want)
        assert got.writes == want.writes, (state, got, want)
        assert got.out == want.out, (state, got, want)

    check()


@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_symbolic_encoding_matches_spec_encoder(case) -> None:
    """`symbolic.encoding` (derived from the encoder) matches `encode` itself."""
    profile, insn = case
    ops = fresh_operands("enc")
    w0, w1 = encoding(insn, ops, profile.arch)
    for rd, rs, imm in ((0, 0, 0), (7, 3, 0xBEEF), (5, 6, 1), (1, 7, MASK)):
        rd = rd if "rd" in insn.fields else 0
        rs = rs if "rs" in insn.fields else 0
        imm = imm if "imm" in insn.fields else 0
        sub = [
            (ops.rd, z3.BitVecVal(rd, ARCH.reg_bits)),
            (ops.rs, z3.BitVecVal(rs, ARCH.reg_bits)),
            (ops.imm, z3.BitVecVal(imm, ARCH.word)),
        ]
        got = tuple(z3.simplify(z3.substitute(w, *sub)).as_long() for w in (w0, w1))
        assert got == encode(profile, insn, rd, rs, imm)


def test_a_planted_disagreement_is_caught() -> None:
    """The comparison can fail: a state whose Z3 prediction is computed for a
    different instruction than the one in storage disagrees."""
    profile = all_profiles()[0]
    S = [0] * st.NSLOTS
    S[1], S[2], S[st.PC], S[st.BOUND], S[st.MODE] = 5, 7, 16, 4096, st.SUPERVISOR
    state = ConcreteState(S, {}, 0, 4096)
    state.mem[16], state.mem[17] = encode(profile, profile["add"], 1, 2, 0)
    add = run_step(profile, state)
    state.mem[16], state.mem[17] = encode(profile, profile["sub"], 1, 2, 0)
    assert predict_step(profile, state).S != add.S
