"""Compiled blocks stay exact for instructions the built-in profiles lack.

A user-derived profile may add an instruction that reads FLAGS or the timer
without ending a block; the block compiler must neither drop a FLAGS write
that such an instruction reads nor let it see the timer before the block's
earlier ticks.  (Both were bugs; the profiles here are derived, not
registered, so other tests do not see them.)
"""

from __future__ import annotations

import pytest

from popek.model.machine import Machine
from popek.spec import instructions as I
from popek.spec import profiles
from popek.spec.asm import assemble
from popek.spec.bits import zext
from popek.spec.state import FLAGS, TIMER


@I.insn("getf", 0x50, "rd")
def getf(s, i):
    """rd <- flags."""
    s.set_reg(i.rd, zext(s.get(FLAGS), s.arch.word))


@I.insn("rdtimer", 0x51, "rd")
def rdtimer(s, i):
    """rd <- timer."""
    s.set_reg(i.rd, s.get(TIMER))


READS_FLAGS = """
start: li r5, 3
loop:  li r1, 0
       cmpi r1, 0
       getf r3
       cmpi r1, 1
       st r3, 0x100(r5)
       addi r5, -1
       jnz loop
       halt
"""

READS_TIMER = """
start: li r1, 1000
       stimer r1
       li r5, 3
loop:  nop
       nop
       rdtimer r3
       st r3, 0x100(r5)
       addi r5, -1
       jnz loop
       halt
"""


@pytest.mark.parametrize(
    "insn, source, expected",
    [
        (getf, READS_FLAGS, [4, 4, 4]),  # Z set by `cmpi r1, 0`, read before the next cmpi
        (rdtimer, READS_TIMER, [984, 990, 996]),  # six instructions per loop turn
    ],
    ids=["flags", "timer"],
)
def test_block_agrees_with_single_steps(insn, source, expected) -> None:
    profile = profiles.PG.derive(f"pg+{insn.name}", "test profile", add=[insn])
    image = assemble(source, profile)
    results = []
    for compiled in (False, True):
        m = Machine(profile, 1024)
        m.load(image)
        assert m.run(1000, compiled=compiled).halted
        results.append([m.M[0x100 + k] for k in (1, 2, 3)])
    stepped, compiled_run = results
    assert stepped == expected
    assert compiled_run == expected
