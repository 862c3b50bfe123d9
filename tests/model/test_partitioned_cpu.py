"""One step of every instruction on a partitioned CPU is one step of a bare
machine of the partition's size, from random states (the concrete twin of
``proofs/partition.py``'s obligation): same trap or not, same state, the
partition's words the bare storage relocated, no other host word written."""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hs

from popek.model.machine import Machine
from popek.spec import profiles
from popek.spec import state as st
from popek.spec.encoding import encode
from popek.spec.partition import partitioned

SIZE = 256  # the partition, and the bare machine's storage
HOST = 0xFFC0
X86 = profiles.get("x86")
PART = partitioned(X86)
BARE = Machine(X86, SIZE)
CPU = Machine(PART, HOST)
CANARY = [0x5A5A] * len(CPU.M)


def _word() -> hs.SearchStrategy[int]:
    return hs.one_of(hs.integers(0, 300), hs.integers(0, st.ARCH.mask), hs.sampled_from([SIZE - 1, SIZE, 0xFFFF]))


@settings(max_examples=12, deadline=None, database=None, derandomize=True,
          suppress_health_check=list(HealthCheck))  # fmt: skip
@given(data=hs.data())
@pytest.mark.parametrize("name", [i.name for i in X86.insns])
def test_one_step_in_a_partition_is_one_bare_step(name, data):
    insn = X86[name]
    S = [0] * st.NSLOTS
    for r in range(st.ARCH.nregs):
        S[r] = data.draw(_word())
    S[st.FLAGS] = data.draw(hs.integers(0, 15))
    S[st.IE] = data.draw(hs.integers(0, 1))
    S[st.MODE] = data.draw(hs.integers(0, 1))
    S[st.TIMER] = data.draw(hs.sampled_from([0, 1, 5]))
    S[st.BASE] = data.draw(hs.integers(0, SIZE - 32))
    S[st.BOUND] = data.draw(hs.sampled_from([SIZE - S[st.BASE], 0xFFFF, 40]))
    S[st.PC] = data.draw(hs.integers(0, 14)) * 2  # the instruction inside the partition
    rng = random.Random(data.draw(hs.integers(0, 1 << 32)))  # storage: one draw, not 256
    words = [rng.choice([0, 0x1234, 0x20, 0x8000, rng.randrange(1 << 16)]) for _ in range(SIZE)]
    fields = {f: data.draw(hs.integers(0, st.ARCH.nregs - 1)) for f in ("rd", "rs") if f in insn.fields}
    if "imm" in insn.fields:
        fields["imm"] = data.draw(_word())
    w0, w1 = encode(X86, insn, **fields)
    at = S[st.BASE] + S[st.PC]
    words[at], words[at + 1] = w0, w1
    base = data.draw(hs.sampled_from([0x1000, 0x2345, HOST - SIZE]))

    BARE.M[:SIZE] = words
    BARE.S[:] = S
    BARE.out.clear()
    BARE.flush()
    CPU.M[:] = CANARY
    CPU.set_partition(base, SIZE)
    CPU.M[base : base + SIZE] = words
    CPU.S[:] = S
    CPU.out.clear()
    CPU.flush()

    bare, part = BARE.step(), CPU.step()
    assert (part.steps, part.halted) == (bare.steps, bare.halted)
    assert CPU.S == BARE.S
    assert CPU.out == BARE.out
    assert CPU.M[base : base + SIZE] == BARE.M[:SIZE]
    assert CPU.M[:base] == CANARY[:base] and CPU.M[base + SIZE :] == CANARY[base + SIZE :]
