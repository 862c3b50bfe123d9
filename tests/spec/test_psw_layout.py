"""`vtx.saved_state` reads a PSW word the way the trap mechanism does.

Tools and VMMs read a VMCS's saved state with `saved_state`, in plain
Python; the machine unpacks and packs PSW words with `trap.load_psw` and
`trap.psw_word`.  These tests run the latter on the concrete machine and
compare, so a change to the PSW layout that one side misses fails here.
"""

from __future__ import annotations

from popek.model.machine import Machine
from popek.spec import state as st
from popek.spec.profiles import get
from popek.spec.vtx import SAVED, saved_state

PSW_SLOTS = (st.FLAGS, st.IE, st.MODE)
MEMSIZE = 64


def _decoded(psw: int) -> dict[int, int]:
    """The PSW fields `saved_state` finds in a state area holding ``psw``."""
    area = [0] * len(SAVED)
    area[SAVED.index("psw")] = psw
    got = saved_state(area, 0)
    return {slot: got[slot] for slot in PSW_SLOTS}


def _trap_machine() -> Machine:
    m = Machine(get("pg"), MEMSIZE)
    m.write(st.NEW_BOUND, MEMSIZE)
    return m


def test_saved_state_unpacks_every_psw_word_as_load_psw_does() -> None:
    """A trap loads the new PSW with `load_psw`; every word, high bits too."""
    m = _trap_machine()
    mismatches = []
    for psw in range(1 << m.arch.word):
        m.write(st.NEW_PSW, psw)
        m.trap(st.Cause.SYSCALL)
        loaded = {slot: m.S[slot] for slot in PSW_SLOTS}
        if _decoded(psw) != loaded:
            mismatches.append((hex(psw), _decoded(psw), loaded))
    assert not mismatches[:5]


def test_saved_state_reads_back_the_psw_a_trap_saves() -> None:
    """A trap saves the current PSW with `psw_word`; every field value."""
    m = _trap_machine()
    for flags in range(1 << st.field_width(st.FLAGS)):
        for ie in (0, 1):
            for mode in (st.USER, st.SUPERVISOR):
                m.S[st.FLAGS], m.S[st.IE], m.S[st.MODE] = flags, ie, mode
                m.trap(st.Cause.SYSCALL)
                want = {st.FLAGS: flags, st.IE: ie, st.MODE: mode}
                assert _decoded(m.M[st.OLD_PSW]) == want, hex(m.M[st.OLD_PSW])
