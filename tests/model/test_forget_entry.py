"""`Machine.forget_entry` drops the cached decodes fetched through one
page-table entry, in every context that translates through it, and keeps
all the others.

A shadow-paging VMM rewrites single entries of the table its host runs
with; dropping every decode on each such change made the host decode the
guest's whole loop again after every guest page-table write."""

from __future__ import annotations

from popek.model.machine import Machine
from popek.spec import state as st
from popek.spec.asm import assemble
from popek.spec.profiles import get

TABLE = 0x300
# Paging is turned on by the test: pages 0-14 map to themselves, linear
# page 15 (0x3c0) to frame 0x800; the code there differs by frame.  Jumps go
# through registers, so the loop runs whatever R's base (r4: page 15's
# virtual address, r3 and r6: start's and back's).
PROGRAM = """
        .org 0x100
start:  jr   r4
back:   jr   r3
        .org 0x800
        addi r5, 1
        jr   r6
        .org 0x840
        addi r5, 100
        jr   r6
"""
ITERATION = 4  # steps: jr, addi, jr, jr


def _paged(base: int = 0) -> Machine:
    prof = get("pg")
    m = Machine(prof, 4096)
    m.load(assemble(PROGRAM, prof))
    for page in range(15):
        m.M[TABLE + page] = (page << 6) | 7  # present, write, user
    m.M[TABLE + 15] = 0x807
    m.S[st.PTBR] = TABLE
    _enter(m, base)
    return m


def _enter(m: Machine, base: int) -> None:
    """Run the loop with R = (base, up to the end of page 15)."""
    m.S[st.BASE], m.S[st.BOUND] = base, 0x400 - base
    m.S[st.PC] = m.S[3] = 0x100 - base
    m.S[4], m.S[6] = 0x3C0 - base, 0x102 - base


def _remap(m: Machine, entry: int) -> None:
    """Page 15 -> another frame, written as a VMM writes its shadow table."""
    m.forget_entry(TABLE + 15)
    m.M[TABLE + 15] = entry


def test_only_the_remapped_pages_decodes_go() -> None:
    m = _paged()
    m.run(10 * ITERATION)
    assert m.S[5] == 10
    kept = {pc: m.cache.lines[pc] for pc in (0x100, 0x102)}
    _remap(m, 0x847)
    assert 0x3C0 not in m.cache.lines and 0x3C2 not in m.cache.lines
    assert all(m.cache.lines.get(pc) is line for pc, line in kept.items())
    m.run(10 * ITERATION)
    assert m.S[5] == 10 + 10 * 100  # the new frame's code, compiled blocks and all


def test_every_context_using_the_table_forgets_it() -> None:
    m = _paged(base=64)  # virtual 0x380 is linear page 15 here
    m.run(5 * ITERATION)
    moved = m.cache.ctx_lines[m.cache.ctx]
    assert 0x380 in moved and 0xC0 in moved
    _enter(m, 0)  # another context, the same table
    m.run(5 * ITERATION)
    assert m.cache.lines is not moved and 0x3C0 in m.cache.lines
    _remap(m, 0x847)
    assert 0x3C0 not in m.cache.lines and 0x380 not in moved
    assert 0x100 in m.cache.lines and 0xC0 in moved
    _enter(m, 64)
    m.run(5 * ITERATION)
    assert m.S[5] == 5 + 5 + 5 * 100


def test_an_entry_of_another_table_drops_nothing() -> None:
    m = _paged()
    m.run(5 * ITERATION)
    lines = dict(m.cache.lines)
    m.forget_entry(0x400 + 15)  # the same page, in a table this machine does not use
    assert m.cache.lines == lines
