"""The P&G trap mechanism, memory traps, paging faults and the timer, run as
small programs on the concrete machine.

Expected values come from the manual (``popek.spec.trap``, ``memory`` and
``state``): a trap stores (psw, pc, base, bound, cause, info) at 0..5 and
loads (psw, pc, base, bound) from 8..11; the saved pc is the trapping
instruction's, or for an interrupt the next instruction's.
"""

from __future__ import annotations

import pytest

from popek.model.machine import Machine
from popek.spec import state as st
from popek.spec.asm import assemble
from popek.spec.profiles import get
from popek.spec.state import PTE_PRESENT, PTE_USER, PTE_WRITE, SUPERVISOR, USER, Cause

MEMSIZE = 4096
PAGE = st.ARCH.page_size

# New PSW: supervisor, interrupts off, flags 0, handler at `handler`, R = all storage.
# Old PSW area preset so that `rti` at `start` enters `user` in user mode.
PRELUDE = f"""
        .org 0
        .word 0, user, 0, {MEMSIZE}       ; old PSW: user mode, pc=user
        .org 8
        .word 0x20, handler, 0, {MEMSIZE} ; new PSW
        .org 16
start:  rti
"""


def old_psw(m: Machine) -> dict[str, int]:
    names = ("psw", "pc", "base", "bound", "cause", "info")
    return dict(zip(names, m.M[st.OLD_PSW : st.OLD_INFO + 1]))


def psw(flags: int, ie: int, mode: int) -> int:
    return flags | (ie << st.PSW_IE_BIT) | (mode << st.PSW_MODE_BIT)


def symbol(text: str, name: str, profile: str = "pg") -> int:
    return assemble(text, get(profile)).symbols[name]


def run_until_halt(m: Machine, limit: int = 10_000, **kw) -> int:
    result = m.run(limit, **kw)
    assert result.halted, "program did not halt"
    return result.steps


# --------------------------------------------------------------------------
# The saved PSW, handler entry and return
# --------------------------------------------------------------------------
def test_trap_saves_psw_and_enters_handler_from_new_psw(machine_from_asm) -> None:
    """User mode, IE=1 and flags N|C set, then a privileged instruction."""
    m = machine_from_asm(
        f"""
        .org 0
        .word {psw(0, 1, USER)}, user, 0x40, 0x300
        .org 8
        .word {psw(0b0101, 0, SUPERVISOR)}, handler, 0, {MEMSIZE}
        .org 16
start:  rti
        .org 0x80
user:   li r1, 1
        cmpi r1, 2          ; N and C
here:   halt                ; privileged: traps
        .org 0x200
handler: halt
        """
    )
    # user code runs relocated: virtual `user` (0x80) lives at 0x40 + 0x80
    for a in range(0x80, 0x90):
        m.write(0x40 + a, m.M[a])
    run_until_halt(m)
    here = 0x80 + 4
    assert old_psw(m) == {
        "psw": psw(st.FLAG_N | st.FLAG_C, 1, USER),
        "pc": here,
        "base": 0x40,
        "bound": 0x300,
        "cause": Cause.PRIVILEGED,
        "info": 0,
    }
    # the handler's PSW: supervisor, flags from the new PSW word, IE off, R from 10..11
    assert (m.S[st.MODE], m.S[st.FLAGS], m.S[st.IE]) == (SUPERVISOR, 0b0101, 0)
    assert (m.S[st.BASE], m.S[st.BOUND]) == (0, MEMSIZE)
    assert m.S[st.PC] == 0x202  # halt retired at 0x200


def test_syscall_handler_adds_two_and_returns(machine_from_asm) -> None:
    text = (
        PRELUDE
        + """
user:   li r1, 10
        sys 0x33
        addi r1, 1          ; runs after the handler returns
        sys 0x44
        addi r1, 1
spin:   jmp spin
handler:
        li r6, 0
        ld r5, 5(r6)        ; info: the sys operand
        out r5
        ld r5, 1(r6)        ; saved pc: the sys itself
        addi r5, 2
        st r5, 1(r6)
        rti
        """
    )
    m = machine_from_asm(text)
    m.run(200)
    assert m.out == [0x33, 0x44]
    assert m.S[1] == 12
    assert m.S[st.MODE] == USER and m.S[st.PC] == symbol(text, "spin")
    assert m.M[st.OLD_CAUSE] == Cause.SYSCALL


def test_syscall_saves_the_pc_of_the_sys_instruction(machine_from_asm) -> None:
    text = PRELUDE + "user: nop\nat: sys 9\nhandler: halt\n"
    m = machine_from_asm(text)
    run_until_halt(m)
    assert old_psw(m) == {
        "psw": psw(0, 0, USER),
        "pc": symbol(text, "at"),
        "base": 0,
        "bound": MEMSIZE,
        "cause": Cause.SYSCALL,
        "info": 9,
    }


def test_rti_restores_the_interrupted_state(machine_from_asm) -> None:
    """A trap then `rti` continues exactly where the program was, with its PSW."""
    m = machine_from_asm(
        f"""
        .org 8
        .word 0x20, handler, 0, {MEMSIZE}
        .org 16
start:  li r1, 0x8000
        cmpi r1, 1          ; flags V (0x8000 - 1 overflows)
        ei
        sys 1
        pushf               ; flags and IE survived the trap
        halt
handler:
        li r6, 0
        ld r5, 1(r6)
        addi r5, 2
        st r5, 1(r6)
        cmpi r6, 0          ; clobber the flags inside the handler
        rti
        """
    )
    m.S[st.SP] = 0x300
    run_until_halt(m)
    assert m.M[0x2FF] == psw(st.FLAG_V, 1, 0)
    assert (m.S[st.MODE], m.S[st.IE]) == (SUPERVISOR, 1)


# --------------------------------------------------------------------------
# Illegal instructions
# --------------------------------------------------------------------------
@pytest.mark.parametrize(
    "word0, why",
    [
        (0x0000, "opcode 0: zeroed storage"),
        (0xFF00, "an opcode no profile assigns"),
        (0x0F10, "nop with a non-zero rd field"),
        (0x0F01, "nop with a non-zero rs field"),
        (0x0189, "mov r8, r9: registers that do not exist"),
        (0x0218, "li r1 with its unused rs field non-zero"),
    ],
)
def test_illegal_words_trap_illegal(machine_from_asm, profile, word0: int, why: str) -> None:
    m = machine_from_asm(
        f"""
        .org 8
        .word 0x20, handler, 0, {MEMSIZE}
        .org 16
start:  li r1, 1
bad:    .word {word0:#x}, 0
handler: halt
        """,
        profile,
    )
    run_until_halt(m)
    assert m.M[st.OLD_CAUSE] == Cause.ILLEGAL, why
    assert m.M[st.OLD_PC] == 18, why
    assert m.S[1] == 1


def test_jump_into_zeroed_storage_traps_illegal(machine_from_asm) -> None:
    m = machine_from_asm(
        f"""
        .org 8
        .word 0x20, handler, 0, {MEMSIZE}
        .org 16
start:  jmp 0x800
handler: halt
        """
    )
    run_until_halt(m)
    assert (m.M[st.OLD_CAUSE], m.M[st.OLD_PC]) == (Cause.ILLEGAL, 0x800)


def test_nop_with_an_immediate_is_illegal(machine_from_asm) -> None:
    m = machine_from_asm(
        f".org 8\n.word 0x20, handler, 0, {MEMSIZE}\n.org 16\nstart: .word 0x0f00, 1\nhandler: halt\n"
    )
    run_until_halt(m)
    assert m.M[st.OLD_CAUSE] == Cause.ILLEGAL


# --------------------------------------------------------------------------
# Relocation-bounds (P&G's memory trap)
# --------------------------------------------------------------------------
RELOC = f"""
        .org 0
        .word 0, user, 0x400, 0x100       ; user: base 0x400, bound 0x100
        .org 8
        .word 0x20, handler, 0, {MEMSIZE}
        .org 16
start:  rti
handler: halt
"""


def relocated(m: Machine, code: str, profile_name: str = "pg") -> None:
    """Assemble user code at virtual 0 and place it at physical 0x400."""
    image = assemble(".org 0\nuser:\n" + code, get(profile_name))
    for a, w in image.words.items():
        m.write(0x400 + a, w)


def test_relocation_maps_virtual_to_base_plus_address(machine_from_asm) -> None:
    m = machine_from_asm(RELOC.replace("user,", "0,"))
    relocated(m, "ld r1, 0x80(r0)\nst r1, 0x81(r0)\nsys 0\n")
    m.write(0x480, 0xABCD)
    m.write(0x80, 0x1111)  # the same virtual address without relocation: not read
    run_until_halt(m)
    assert m.S[1] == 0xABCD and m.M[0x481] == 0xABCD and m.M[0x81] == 0
    assert m.M[st.OLD_CAUSE] == Cause.SYSCALL


@pytest.mark.parametrize(
    "code, fault_pc, info",
    [
        ("ld r1, 0x100(r0)", 0, 0x100),  # first address past the bound
        ("li r2, 0xffff\nst r1, 0(r2)", 2, 0xFFFF),
        ("jmp 0x100", 0x100, 0x100),  # fetch beyond the bound
        ("jmp 0xff", 0xFF, 0x100),  # second word of the instruction beyond the bound
        ("li sp, 0\npush r1", 2, 0xFFFF),
    ],
)
def test_bounds_violation_traps_memory(machine_from_asm, code: str, fault_pc: int, info: int) -> None:
    m = machine_from_asm(RELOC.replace("user,", "0,"))
    relocated(m, code)
    run_until_halt(m)
    assert old_psw(m) == {
        "psw": 0,
        "pc": fault_pc,
        "base": 0x400,
        "bound": 0x100,
        "cause": Cause.MEMORY,
        "info": info,
    }
    assert m.S[1] == 0  # the faulting instruction had no effect


def test_storage_beyond_memsize_does_not_exist(machine_from_asm) -> None:
    m = machine_from_asm(
        f"""
        .org 8
        .word 0x20, handler, 0, {MEMSIZE}
        .org 16
start:  li r2, 0x1000
        wrr r0, r2          ; base 0, bound 0x1000 (r0 = 0)
        li r3, 0x2000
        wrr r0, r3          ; bound beyond storage: allowed, but storage ends at 0x1000
        ld r1, 0x1000(r0)
        halt
handler: halt
        """
    )
    run_until_halt(m)
    assert (m.M[st.OLD_CAUSE], m.M[st.OLD_INFO], m.M[st.OLD_PC]) == (Cause.MEMORY, 0x1000, 24)


def test_linear_address_wrapping_round_traps_memory(machine_from_asm) -> None:
    m = machine_from_asm(RELOC.replace("0x400, 0x100", "0x400, 0xfff0").replace("user,", "0,"))
    relocated(m, "li r2, 0xfc00\nld r1, 0(r2)")
    run_until_halt(m)
    assert (m.M[st.OLD_CAUSE], m.M[st.OLD_INFO], m.M[st.OLD_PC]) == (Cause.MEMORY, 0xFC00, 2)


# --------------------------------------------------------------------------
# Paging: present, write and user bits; faults report the virtual address
# --------------------------------------------------------------------------
PT = 0xC00  # page table (64 entries, one per 64-word page of the 4096 words)


def paged_machine(pte_overrides: dict[int, int], code: str, mode: int = USER) -> Machine:
    """Identity-mapped page table (present, write, user) with overrides; `code`
    runs at 0x100 in `mode`; the handler halts."""
    text = f"""
        .org 8
        .word 0x20, handler, 0, {MEMSIZE}
        .org 0x40
handler: halt
        .org 0x100
start:
{code}
        halt
        """
    m = Machine(get("pg"), MEMSIZE)
    m.load(assemble(text, get("pg")))
    for page in range(MEMSIZE // PAGE):
        m.write(PT + page, page * PAGE | PTE_PRESENT | PTE_WRITE | PTE_USER)
    for page, pte in pte_overrides.items():
        m.write(PT + page, pte)
    m.S[st.PTBR] = PT
    m.S[st.MODE] = mode
    m.flush()
    return m


def test_paging_maps_virtual_pages_to_frames() -> None:
    frame = 0x20 * PAGE
    m = paged_machine({0x10: frame | PTE_PRESENT | PTE_WRITE | PTE_USER},
                      "li r2, 0x403\nld r1, 0(r2)\nst r1, 1(r2)\nli r0, 7\nhalt")  # fmt: skip
    m.write(frame + 3, 0x5A5A)
    m.write(0x403, 0x1111)  # identity address, not mapped at virtual 0x403 any more
    run_until_halt(m)
    assert m.S[1] == 0x5A5A and m.M[frame + 4] == 0x5A5A and m.M[0x404] == 0
    assert m.M[st.OLD_CAUSE] == Cause.PRIVILEGED  # user-mode halt, after the accesses


@pytest.mark.parametrize(
    "pte, code, mode, info",
    [
        (0, "li r2, 0x410\nld r1, 0(r2)", USER, 0x410),  # not present
        (0, "li r2, 0x410\nld r1, 0(r2)", SUPERVISOR, 0x410),  # not present, any mode
        (0x400 | PTE_PRESENT | PTE_USER, "li r2, 0x411\nst r1, 0(r2)", USER, 0x411),  # read-only
        (0x400 | PTE_PRESENT | PTE_USER, "li r2, 0x411\nst r1, 0(r2)", SUPERVISOR, 0x411),
        (0x400 | PTE_PRESENT | PTE_WRITE, "li r2, 0x412\nld r1, 0(r2)", USER, 0x412),  # no user bit
        (0x400 | PTE_PRESENT, "li r2, 0x412\nld r1, 0(r2)", USER, 0x412),
    ],
)
def test_page_faults_trap_page_with_the_virtual_address(pte: int, code: str, mode: int, info: int) -> None:
    m = paged_machine({0x10: pte}, code, mode)
    run_until_halt(m)
    assert (m.M[st.OLD_CAUSE], m.M[st.OLD_INFO], m.M[st.OLD_PC]) == (Cause.PAGE, info, 0x102)
    assert m.S[1] == 0x0  # the faulting load wrote nothing


def test_supervisor_may_use_pages_without_the_user_bit() -> None:
    m = paged_machine({0x10: 0x400 | PTE_PRESENT}, "li r2, 0x412\nld r1, 0(r2)", SUPERVISOR)
    m.write(0x412, 0x77)
    run_until_halt(m)
    assert m.S[1] == 0x77 and m.M[st.OLD_CAUSE] == 0


def test_instruction_fetch_from_a_non_user_page_traps_page() -> None:
    m = paged_machine({0x100 // PAGE: 0x100 | PTE_PRESENT | PTE_WRITE}, "nop", USER)
    run_until_halt(m)
    assert (m.M[st.OLD_CAUSE], m.M[st.OLD_INFO], m.M[st.OLD_PC]) == (Cause.PAGE, 0x100, 0x100)


def test_lptb_zero_turns_paging_off() -> None:
    m = paged_machine({0x10: 0}, "li r0, 0\nlptb r0\nli r2, 0x410\nld r1, 0(r2)", SUPERVISOR)
    m.write(0x410, 0x99)
    run_until_halt(m)
    assert m.S[1] == 0x99 and m.S[st.PTBR] == 0 and m.M[st.OLD_CAUSE] == 0


# --------------------------------------------------------------------------
# The timer
# --------------------------------------------------------------------------
TIMER_PROGRAM = f"""
        .org 8
        .word 0x20, handler, 0, {MEMSIZE}
        .org 16
start:  li r1, 5
        ei
        stimer r1           ; counts itself: 4 more instructions retire
        addi r2, 1
        addi r2, 1
        addi r2, 1
        addi r2, 1
fifth:  addi r2, 1          ; the interrupt comes before this one
        addi r2, 1
        halt
handler: halt
"""


@pytest.mark.parametrize("compiled", [True, False])
def test_timer_interrupt_is_taken_after_the_count(machine_from_asm, compiled: bool) -> None:
    m = machine_from_asm(TIMER_PROGRAM)
    steps = run_until_halt(m, compiled=compiled)
    fifth = symbol(TIMER_PROGRAM, "fifth")
    assert m.S[2] == 4
    assert old_psw(m) == {
        "psw": psw(0, 1, SUPERVISOR),
        "pc": fifth,  # the next instruction, not yet run
        "base": 0,
        "bound": MEMSIZE,
        "cause": Cause.TIMER,
        "info": 0,
    }
    assert m.S[st.PEND] == 0 and m.S[st.IE] == 0
    assert steps == 3 + 4 + 1 + 1  # li ei stimer, 4 addi, interrupt, handler halt


def test_timer_interrupt_reaches_the_hook(machine_from_asm) -> None:
    m = machine_from_asm(TIMER_PROGRAM)
    seen = []

    def hook(machine: Machine, cause: int, info: int) -> bool:
        seen.append((cause, info, machine.S[st.PC], machine.S[2]))
        return True

    result = m.run(100, on_trap=hook)
    fifth = symbol(TIMER_PROGRAM, "fifth")
    assert result.stopped and result.steps == 8
    assert seen == [(Cause.TIMER, 0, fifth, 4)]
    assert m.S[st.PEND] == 0 and m.M[st.OLD_CAUSE] == 0  # the hook replaced the mechanism


def test_interrupt_held_pending_while_disabled_then_taken_after_ei(machine_from_asm) -> None:
    text = f"""
        .org 8
        .word 0x20, handler, 0, {MEMSIZE}
        .org 16
start:  li r1, 2
        stimer r1           ; expires after one more instruction
        nop
        nop
        nop
        ei
after:  nop
        halt
handler: halt
        """
    m = machine_from_asm(text)
    m.run(3)
    assert (m.S[st.PEND], m.S[st.TIMER], m.S[st.IE]) == (1, 0, 0)
    m.run(2)
    assert m.S[st.PEND] == 1 and m.M[st.OLD_CAUSE] == 0  # still held
    run_until_halt(m)
    assert (m.M[st.OLD_CAUSE], m.M[st.OLD_PC]) == (Cause.TIMER, symbol(text, "after"))
    assert m.S[st.PC] == symbol(text, "handler") + 2 and m.S[st.PEND] == 0


def test_stimer_zero_stops_the_timer(machine_from_asm) -> None:
    m = machine_from_asm(
        f"""
        .org 8
        .word 0x20, handler, 0, {MEMSIZE}
        .org 16
start:  li r1, 3
        ei
        stimer r1
        stimer r0           ; r0 = 0: stopped, nothing pending
        nop
        nop
        nop
        halt
handler: halt
        """
    )
    run_until_halt(m)
    assert m.M[st.OLD_CAUSE] == 0 and m.S[st.TIMER] == 0 and m.S[st.PEND] == 0


# --------------------------------------------------------------------------
# x86 popf versus pg popf (docs/design.md: the instruction that breaks trap-and-emulate)
# --------------------------------------------------------------------------
POPF = PRELUDE + """
user:   li r1, 0x1f         ; flags 1111 and the IE bit
        push r1
        popf
        pushf
        pop r2
        halt                ; privileged everywhere: ends the user program
handler: halt
"""


def test_x86_popf_in_user_mode_silently_keeps_the_interrupt_flag(machine_from_asm) -> None:
    m = machine_from_asm(POPF, "x86")
    m.S[st.SP] = 0x300
    run_until_halt(m)
    assert m.M[st.OLD_CAUSE] == Cause.PRIVILEGED  # only the final halt trapped
    assert m.M[st.OLD_PC] == symbol(POPF, "user", "x86") + 10
    assert m.S[2] == 0x0F  # popf took the flags but not IE; pushf shows IE still 0
    assert m.M[st.OLD_PSW] == psw(0xF, 0, USER)


def test_pg_popf_in_user_mode_traps(machine_from_asm) -> None:
    m = machine_from_asm(POPF, "pg")
    m.S[st.SP] = 0x300
    run_until_halt(m)
    popf_at = symbol(POPF, "user") + 4
    assert (m.M[st.OLD_CAUSE], m.M[st.OLD_PC]) == (Cause.PRIVILEGED, popf_at)
    assert m.M[st.OLD_PSW] == psw(0, 0, USER)  # nothing changed: flags, IE, mode
