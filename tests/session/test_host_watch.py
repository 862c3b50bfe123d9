"""The session's host watch: what guest code on the host could reach, and
what the host itself retired, checked against what a VMM sets up and says.

Each test builds the real state a VMM would leave on the host before a
direct run and asks the watch what it saw; the watch must flag exactly
the setups that let guest code address a word outside its allocation.
"""

from __future__ import annotations

from popek.model.machine import Machine
from popek.session import Observed, _HostWatch
from popek.spec import profiles
from popek.spec import state as st

ALLOC = range(0x1000, 0x1400)


def _watch(profile: str = "pg") -> tuple[Machine, Observed, _HostWatch]:
    prof = profiles.get(profile)
    host = Machine(prof, 1 << prof.arch.word)
    observed = Observed()
    return host, observed, _HostWatch(host, observed, lambda: ALLOC)


def _user(host: Machine, base: int, bound: int, ptbr: int = 0) -> None:
    S = host.S
    S[st.MODE], S[st.BASE], S[st.BOUND], S[st.PTBR] = st.USER, base, bound, ptbr


def test_relocation_inside_the_allocation_reaches_nothing_else() -> None:
    host, observed, watch = _watch()
    _user(host, 0x1000, 0x400)
    watch._check_reach()
    _user(host, 0x1100, 0x80)
    watch._check_reach()
    assert observed.violations == []


def test_relocation_one_word_too_long_reaches_the_next_word() -> None:
    host, observed, watch = _watch()
    _user(host, 0x1000, 0x401)
    watch._check_reach()
    assert len(observed.violations) == 1
    assert "host word 0x1400" in observed.violations[0] and "real R = (0x1000, 0x0401)" in observed.violations[0]


def test_relocation_one_word_too_low_reaches_the_word_below() -> None:
    host, observed, watch = _watch()
    _user(host, 0x0FFF, 0x10)
    watch._check_reach()
    assert "host word 0x0fff" in observed.violations[0]


def test_supervisor_code_is_the_vmms_own() -> None:
    host, observed, watch = _watch()
    _user(host, 0, 0x10000)
    host.S[st.MODE] = st.SUPERVISOR
    watch._check_reach()
    assert observed.violations == []


def _table(host: Machine, table: int, entries: dict[int, int]) -> None:
    for page, entry in entries.items():
        host.M[table + page] = entry


def test_a_user_page_mapped_outside_the_allocation_is_reachable() -> None:
    host, observed, watch = _watch()
    table = 0x0800  # a shadow table in the VMM's own storage
    present_user = st.PTE_PRESENT | st.PTE_WRITE | st.PTE_USER
    _table(host, table, {0: 0x1000 | present_user, 1: 0x0800 | present_user})  # page 1: the table itself
    _user(host, 0, 0x80, ptbr=table)
    watch._check_reach()
    assert "host word 0x0800" in observed.violations[0] and "real page table" in observed.violations[0]


def test_pages_the_guest_cannot_use_are_not_reachable() -> None:
    host, observed, watch = _watch()
    table = 0x0800
    _table(host, table, {
        0: 0x1000 | st.PTE_PRESENT | st.PTE_USER,
        1: 0x0800 | st.PTE_PRESENT,  # supervisor-only: a user-mode guest cannot use it
        2: 0x0840 | st.PTE_USER,  # not present
        3: 0x0880 | st.PTE_PRESENT | st.PTE_USER,  # beyond the bound below
    })  # fmt: skip
    _user(host, 0, 0xC0, ptbr=table)
    watch._check_reach()
    assert observed.violations == []
    # the cache is keyed on the table's words: changing an entry is seen
    host.M[table + 1] |= st.PTE_USER
    watch._check_reach()
    assert "host word 0x0840" not in observed.violations[0] and "0x0800" in observed.violations[0]


def test_a_vtx_guest_reaches_what_its_nested_table_maps() -> None:
    host, observed, watch = _watch("vtx")
    npt = 0x0400
    _table(host, npt, {0: 0x1000 | st.PTE_PRESENT | st.PTE_WRITE})
    S = host.S
    S[st.GUEST], S[st.NPTBR], S[st.MODE] = 1, npt, st.SUPERVISOR
    watch._check_reach()
    assert observed.violations == []
    host.M[npt + 5] = 0x2000 | st.PTE_PRESENT  # one more page, outside the allocation
    watch._check_reach()
    assert "host word 0x2000" in observed.violations[0] and "nested page table" in observed.violations[0]


def test_the_watch_counts_what_the_host_retired() -> None:
    from popek.spec.asm import assemble

    host, observed, _ = _watch()
    image = assemble("li r1, 3\nagain: addi r1, -1\njnz again\nhalt\n", host.profile)
    for addr, word in image.words.items():
        host.M[addr] = word
    host.S[st.PC], host.S[st.BOUND], host.S[st.MODE] = image.entry, 0x400, st.SUPERVISOR
    host.run(100)
    assert observed.direct == {"li": 1, "addi": 3, "jnz": 3, "halt": 1}
    assert observed.host_steps == 8 and observed.retired == 8
