"""The vtx extension on the bare machine: VM entry, VM exit, exit controls,
in-guest trap delivery and nested paging, as spec/vtx.py defines them."""

from __future__ import annotations

import pytest

from popek.model.machine import Machine
from popek.spec import state as st
from popek.spec import vtx as V
from popek.spec.asm import assemble
from popek.spec.profiles import get

VMCS, NPT, GUEST_AT = 0x800, 0x400, 0x1000  # host-physical
GUEST_PAGES = 16


def host_with_guest(guest_src: str, ctrl: int, *, unmapped: tuple[int, ...] = ()) -> Machine:
    """A vtx host whose code enters the guest once and halts after the exit."""
    p = get("vtx")
    m = Machine(p, 1 << 16)
    m.load(assemble("start: li r1, 0x800\n vmrun r1\n halt\n", p))
    for g in range(GUEST_PAGES):
        if g not in unmapped:
            m.write(NPT + g, (GUEST_AT + g * 64) | st.PTE_PRESENT | st.PTE_WRITE)
    m.write(VMCS + V.CTRL, ctrl)
    m.write(VMCS + V.NPT, NPT)
    area = VMCS + V.GUEST_AREA
    m.write(area + V.SAVED.index("pc"), 16)
    m.write(area + V.SAVED.index("psw"), 1 << st.PSW_MODE_BIT)
    m.write(area + V.SAVED.index("bound"), GUEST_PAGES * 64)
    for a, w in assemble(guest_src, p).words.items():
        m.write(GUEST_AT + a, w)
    return m


GUEST = """
        .org 8
        .word 0x20, handler, 0, 1024     ; the guest's new PSW (guest-physical 8)
        .org 16
start:  li r2, 7
        st r2, 100(r0)
        sys 5
        out r2
        halt
handler: ld r3, 5(r0)                   ; the syscall's info, from the guest's old PSW
        ld r4, 1(r0)
        addi r4, 2
        st r4, 1(r0)
        rti
"""


def test_entry_runs_the_guest_through_the_nested_table_and_out_exits() -> None:
    m = host_with_guest(GUEST, 1 << V.X_OUT | 1 << V.X_HALT)
    r = m.run(100)
    assert r.halted and m.S[st.GUEST] == 0  # the host's halt, after the exit
    assert m.M[GUEST_AT + 100] == 7  # guest-physical 100, through the nested table
    assert m.M[GUEST_AT + st.OLD_CAUSE] == st.Cause.SYSCALL  # delivered inside the guest
    assert m.M[VMCS + V.REASON] == st.Cause.VMEXIT
    assert m.M[VMCS + V.QUAL] == get("vtx")["out"].opcode
    area = VMCS + V.GUEST_AREA
    saved = {name: m.M[area + k] for k, name in enumerate(V.SAVED)}
    assert saved["r3"] == 5 and saved["r2"] == 7  # the handler ran in the guest
    assert saved["pc"] == 16 + 3 * 2  # the out that exited, not yet executed
    assert m.out == []  # the exiting instruction had no effect
    assert m.S[st.PC] == 16 + 6 and m.S[1] == VMCS  # host state back; its halt retired


def test_without_the_control_bit_the_instruction_runs_in_guest_mode() -> None:
    m = host_with_guest(GUEST, 1 << V.X_HALT)
    m.run(100)
    assert m.out == [7]
    assert m.M[VMCS + V.QUAL] == get("vtx")["halt"].opcode


def test_an_unmapped_guest_page_exits_with_its_guest_physical_address() -> None:
    m = host_with_guest(GUEST, 1 << V.X_OUT | 1 << V.X_HALT, unmapped=(1,))
    m.run(100)
    assert m.M[VMCS + V.REASON] == st.Cause.NPF
    assert m.M[VMCS + V.QUAL] == 100  # the store to guest-physical 100 (page 1)
    assert m.M[GUEST_AT + 100] == 0


def test_exception_exiting_takes_the_syscall_to_the_host() -> None:
    m = host_with_guest(GUEST, 1 << V.X_EXC | 1 << V.X_HALT)
    m.run(100)
    assert m.M[VMCS + V.REASON] == st.Cause.SYSCALL and m.M[VMCS + V.QUAL] == 5
    assert m.M[GUEST_AT + st.OLD_CAUSE] == 0  # not delivered in the guest


def test_guest_paging_goes_through_both_tables() -> None:
    """Guest page table at guest-physical 0x200 maps virtual page 3 to
    guest-physical page 5, which the nested table puts at host GUEST_AT+5*64."""
    src = """
        .org 16
start:  li r1, 0x200
        lptb r1
        li r2, 0x55
        st r2, 0xC1(r0)          ; virtual 0xC1 = page 3, offset 1
        halt
        .org 0x200
        .word 0x7, 0x47, 0x87, 0x147   ; pages 0,1,2 identity; page 3 -> frame 0x140
"""
    m = host_with_guest(src, 1 << V.X_HALT)
    m.run(100)
    assert m.M[VMCS + V.REASON] == st.Cause.VMEXIT
    assert m.M[GUEST_AT + 0x141] == 0x55


@pytest.mark.parametrize("name", sorted(V.EXIT_CONTROL))
def test_every_exit_controlled_instruction_checks_its_bit_first(name: str) -> None:
    p = get("vtx")
    insn = p[name]
    m = Machine(p, 4096)
    m.S[st.GUEST] = 1
    m.S[st.XCTL] = 1 << V.EXIT_CONTROL[name]
    m.S[st.VMCS] = 0x400
    m.S[st.MODE] = st.USER  # even where it would trap PRIVILEGED, the exit wins
    m.S[st.PC] = 16
    w0, w1 = (insn.opcode << 8) | (0x11 if "rd" in insn.fields and "rs" in insn.fields
                                   else 0x10 if "rd" in insn.fields else 0x01 if "rs" in insn.fields else 0), 0
    m.write(16, w0)
    m.write(17, w1)
    m.flush()
    m.run(1)
    assert m.M[0x400 + V.REASON] == st.Cause.VMEXIT and m.M[0x400 + V.QUAL] == insn.opcode
    assert m.S[st.GUEST] == 0
