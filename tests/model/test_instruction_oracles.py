"""Every instruction of every profile, in supervisor and in user mode, run on
the concrete machine and checked against hand-written expected values.

The expected values are test oracles read off the manual (the docstrings in
``popek.spec.instructions``), not derived from the spec's code: if a
definition drifts from its manual sentence, a case here fails.  A new
instruction, or a new profile, without cases here fails `test_every_triple_has_a_case`.

Each case runs one instruction from a fixed, fully specified state and
compares the *whole* state vector, storage and output log afterwards, so an
instruction that changes something it should not is caught too.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from popek.model.machine import Machine
from popek.spec import state as st
from popek.spec.asm import assemble
from popek.spec.profiles import Profile, all_profiles, get
from popek.spec.state import FIELD_BY_NAME, SUPERVISOR, USER, Cause

MEMSIZE = 4096
# Code sits alone in its page, away from the trap area and the cases' data, so
# that restoring that data between repeats keeps the compiled block.
ENTRY = 0x1C0
HANDLER = 0x200
NEW_FLAGS = 0b0011  # flags the new PSW carries, so loading them is visible
NEW_PSW = {
    st.NEW_PSW: (1 << st.PSW_MODE_BIT) | NEW_FLAGS,
    st.NEW_PC: HANDLER,
    st.NEW_BASE: 0,
    st.NEW_BOUND: MEMSIZE,
}

# The state every case starts from (mode is set per test); cases override.
BASE_STATE = {
    "r0": 5, "r1": 0x1234, "r2": 0x00F0, "r3": 0x8000, "r4": 0x7FFF,
    "r5": 0xFFFF, "r6": 3, "sp": 0x300,
    "flags": 0, "ie": 0, "base": 0, "bound": MEMSIZE, "ptbr": 0,
    "timer": 100, "pend": 0, "halted": 0,
}  # fmt: skip

# Which instructions trap in user mode, per profile: from the manual (the
# "Privileged." sentence the `pg` profile adds) and docs/design.md's profiles.
SYSTEM = {"rti", "ei", "di", "wrr", "lptb", "stimer", "out", "halt"}
X86_STYLE = {"pushf", "popf", "rdmode", "rdbase", "rdbound"}
PRIVILEGED = {
    "pg": SYSTEM | X86_STYLE,
    "hybrid": SYSTEM | X86_STYLE,
    "x86": SYSTEM,
    "vtx": SYSTEM | {"vmrun"},
}


@dataclass(frozen=True)
class Outcome:
    """What one instruction leaves behind: changed fields, storage, output.

    ``pc`` defaults to the next instruction; ``timer`` to one tick down.
    ``trap`` = (cause, info) means the instruction trapped instead.
    """

    changes: dict[str, int] = field(default_factory=dict)
    mem: dict[int, int] = field(default_factory=dict)
    out: tuple[int, ...] = ()
    trap: tuple[Cause, int] | None = None


@dataclass(frozen=True)
class Case:
    asm: str
    sup: Outcome
    user: Outcome | None = None  # None: the same as in supervisor mode
    before: dict[str, int] = field(default_factory=dict)
    mem: dict[int, int] = field(default_factory=dict)

    def expected(self, mode: int) -> Outcome:
        return self.sup if mode == SUPERVISOR or self.user is None else self.user


def O(mem: dict[int, int] | None = None, out: tuple[int, ...] = (), **changes: int) -> Outcome:
    return Outcome(changes, mem or {}, out)


def TRAP(cause: Cause, info: int = 0) -> Outcome:
    return Outcome(trap=(cause, info))


N, Z, C, V = st.FLAG_N, st.FLAG_Z, st.FLAG_C, st.FLAG_V
SP0 = BASE_STATE["sp"]

# Hand-written oracles, one or more per instruction name.
CASES: dict[str, list[Case]] = {
    "nop": [Case("nop", O())],
    "mov": [Case("mov r1, r2", O(r1=0x00F0)), Case("mov sp, r0", O(sp=5))],
    "li": [Case("li r3, 0xbeef", O(r3=0xBEEF)), Case("li r0, -1", O(r0=0xFFFF))],
    "add": [
        Case("add r4, r6", O(r4=0x8002, flags=N | V)),  # signed overflow
        Case("add r5, r6", O(r5=2, flags=C)),  # unsigned carry
        Case("add r3, r3", O(r3=0, flags=Z | C | V)),
    ],
    "sub": [
        Case("sub r6, r0", O(r6=0xFFFE, flags=N | C)),  # 3 - 5: borrow
        Case("sub r3, r6", O(r3=0x7FFD, flags=V)),  # min - 3: overflow
        Case("sub r1, r1", O(r1=0, flags=Z)),
    ],
    "and": [
        Case("and r1, r2", O(r1=0x0030, flags=0), before={"flags": 0xF}),  # C V cleared
        Case("and r3, r4", O(r3=0, flags=Z)),
    ],
    "or": [Case("or r3, r6", O(r3=0x8003, flags=N), before={"flags": C | V})],
    "xor": [
        Case("xor r5, r4", O(r5=0x8000, flags=N)),
        Case("xor r2, r2", O(r2=0, flags=Z), before={"flags": N | C | V}),
    ],
    "shl": [
        Case("shl r1, r6", O(r1=0x91A0, flags=N)),  # 0x1234 << 3
        Case("shl r3, r6", O(r3=0, flags=Z)),
        Case("shl r6, r6", O(r6=0x98), before={"r6": 0x13}),  # amount 19 mod 16 = 3
    ],
    "shr": [
        Case("shr r3, r6", O(r3=0x1000)),  # logical: no sign fill
        Case("shr r5, r2", O(r5=0xFFFF, flags=N)),  # 0xF0 mod 16 = 0
    ],
    "cmp": [
        Case("cmp r6, r0", O(flags=N | C)),  # registers unchanged
        Case("cmp r0, r0", O(flags=Z)),
        Case("cmp r4, r5", O(flags=N | C | V)),  # 0x7fff - 0xffff
    ],
    "addi": [
        Case("addi r5, 2", O(r5=1, flags=C)),
        Case("addi r4, 1", O(r4=0x8000, flags=N | V)),
        Case("addi r0, -5", O(r0=0, flags=Z | C)),
    ],
    "cmpi": [
        Case("cmpi r6, 3", O(flags=Z)),
        Case("cmpi r6, 4", O(flags=N | C)),
    ],
    "ld": [
        Case("ld r1, 4(r2)", O(r1=0xBEEF), mem={0xF4: 0xBEEF}),
        Case("ld r2, -1(sp)", O(r2=0x4242), mem={SP0 - 1: 0x4242}),
    ],
    "st": [
        Case("st r1, 3(r2)", O(mem={0xF3: 0x1234})),
        Case("st sp, 0(sp)", O(mem={SP0: SP0})),
    ],
    "push": [
        Case("push r1", O(sp=SP0 - 1, mem={SP0 - 1: 0x1234})),
        Case("push sp", O(sp=SP0 - 1, mem={SP0 - 1: SP0})),  # the old sp is pushed
    ],
    "pop": [
        Case("pop r2", O(r2=0x77, sp=SP0 + 1), mem={SP0: 0x77}),
        Case("pop sp", O(sp=0x555), mem={SP0: 0x555}),  # rd is written last
    ],
    "jmp": [Case("jmp 0x400", O(pc=0x400))],
    "jz": [
        Case("jz 0x400", O(pc=0x400), before={"flags": Z}),
        Case("jz 0x400", O(), before={"flags": N | C | V}),
    ],
    "jnz": [
        Case("jnz 0x400", O(pc=0x400), before={"flags": N | C | V}),
        Case("jnz 0x400", O(), before={"flags": Z}),
    ],
    "jc": [
        Case("jc 0x400", O(pc=0x400), before={"flags": C}),
        Case("jc 0x400", O(), before={"flags": N | Z | V}),
    ],
    "jnc": [
        Case("jnc 0x400", O(pc=0x400), before={"flags": N | Z | V}),
        Case("jnc 0x400", O(), before={"flags": C}),
    ],
    "jlt": [
        Case("jlt 0x400", O(pc=0x400), before={"flags": N}),
        Case("jlt 0x400", O(pc=0x400), before={"flags": V}),
        Case("jlt 0x400", O(), before={"flags": N | V}),
        Case("jlt 0x400", O(), before={"flags": Z | C}),
    ],
    "jge": [
        Case("jge 0x400", O(pc=0x400), before={"flags": N | V}),
        Case("jge 0x400", O(pc=0x400), before={"flags": Z | C}),
        Case("jge 0x400", O(), before={"flags": N}),
        Case("jge 0x400", O(), before={"flags": V}),
    ],
    "jr": [Case("jr r2", O(pc=0xF0))],
    "call": [Case("call 0x400", O(pc=0x400, sp=SP0 - 1, mem={SP0 - 1: ENTRY + 2}))],
    "ret": [Case("ret", O(pc=0x456, sp=SP0 + 1), mem={SP0: 0x456})],
    "sys": [Case("sys 7", TRAP(Cause.SYSCALL, 7)), Case("sys 0xffff", TRAP(Cause.SYSCALL, 0xFFFF))],
    "rti": [
        Case(
            "rti",
            O(flags=0b0101, ie=1, mode=USER, pc=0x124, base=0x40, bound=0x800),
            mem={st.OLD_PSW: 0xFF15, st.OLD_PC: 0x124,  # high bits ignored; mode bit 0
                 st.OLD_BASE: 0x40, st.OLD_BOUND: 0x800},
        ),  # fmt: skip
        Case(
            "rti",
            O(flags=0b1010, ie=0, mode=SUPERVISOR, pc=0x20, base=0, bound=0x900),
            mem={st.OLD_PSW: 0x2A, st.OLD_PC: 0x20, st.OLD_BOUND: 0x900},
            before={"ie": 1},
        ),
    ],
    "ei": [Case("ei", O(ie=1))],
    "di": [Case("di", O(ie=0), before={"ie": 1})],
    "pushf": [
        Case("pushf", O(sp=SP0 - 1, mem={SP0 - 1: 0x1A}), before={"flags": 0b1010, "ie": 1}),
        Case("pushf", O(sp=SP0 - 1, mem={SP0 - 1: 0x05}), before={"flags": 0b0101}),
    ],
    "popf": [
        # IE off, word has IE on: supervisor takes it, user keeps IE off.
        Case("popf", O(flags=0b0110, ie=1, sp=SP0 + 1), mem={SP0: 0xFFF6},
             user=O(flags=0b0110, sp=SP0 + 1)),
        # IE on, word has IE off: supervisor clears it, user keeps it on.
        Case("popf", O(flags=0b1001, ie=0, sp=SP0 + 1), mem={SP0: 0x09}, before={"ie": 1},
             user=O(flags=0b1001, sp=SP0 + 1)),
    ],  # fmt: skip
    "rdmode": [Case("rdmode r3", O(r3=1), user=O(r3=0))],
    "rdbase": [Case("rdbase r1", O(r1=0x100), before={"base": 0x100, "bound": 0x200})],
    "rdbound": [Case("rdbound r6", O(r6=0x234), before={"bound": 0x234})],
    "wrr": [Case("wrr r2, r1", O(base=0xF0, bound=0x1234))],
    "lptb": [Case("lptb r2", O(ptbr=0xF0))],
    "stimer": [
        # the retired stimer counts down once, like every retired instruction
        Case("stimer r0", O(timer=4)),
        Case("stimer r6", O(timer=2, pend=0), before={"pend": 1}),
        # `stimer 1` expires at its own tick: the timer reaches zero, a tick is pending
        Case("stimer r6", O(timer=0, pend=1), before={"r6": 1}),
    ],
    "out": [Case("out r1", O(out=(0x1234,))), Case("out sp", O(out=(SP0,)))],
    "halt": [Case("halt", O(halted=1))],
    "jru": [Case("jru 0x400", O(pc=0x400, mode=USER))],
    # VMCS at 0xF0 (spec/vtx.py layout): ctrl, npt, reason, qual, guest area
    # at 0xF4 (r0..sp, pc, psw, base, bound, ptbr, timer, pend), host area at 0x103
    "vmrun": [
        Case(
            "vmrun r2",
            O(
                {0x103 + k: v for k, v in enumerate(
                    (5, 0x1234, 0xF0, 0x8000, 0x7FFF, 0xFFFF, 3, SP0,  # host registers
                     ENTRY + 2, 1 << st.PSW_MODE_BIT, 0, MEMSIZE, 0, 100, 0))},  # fmt: skip
                r0=11, r1=0, r2=0, r3=0, r4=0, r5=0, r6=0, sp=0x200, pc=0x20, flags=3,
                mode=1, bound=0x400, timer=7, guest=1, vmcs=0xF0, xctl=3, nptbr=0x40,
            ),
            mem={0xF0: 3, 0xF1: 0x40, 0xF4: 11, 0xFB: 0x200, 0xFC: 0x20,
                 0xFD: (1 << st.PSW_MODE_BIT) | 3, 0xFF: 0x400, 0x101: 7},  # fmt: skip
        )
    ],
}


def _mode_name(mode: int) -> str:
    return "supervisor" if mode == SUPERVISOR else "user"


def _triples() -> list[tuple[str, str, int]]:
    return [
        (p.name, i.name, mode)
        for p in all_profiles()
        for i in p.insns
        for mode in (SUPERVISOR, USER)
    ]


def test_every_triple_has_a_case() -> None:
    """A new instruction or profile must come with oracles here."""
    missing = sorted(
        {f"{p}/{i}" for p, i, _ in _triples() if i not in CASES}
        | {f"{p} (privileged set)" for p, _, _ in _triples() if p not in PRIVILEGED}
    )
    assert not missing, f"no hand-written expected values for: {missing}"


def test_privileged_sets_match_the_manual() -> None:
    """The manual says "Privileged." exactly for the instructions that trap in user mode."""
    for p in all_profiles():
        said = {i.name for i in p.insns if i.doc.endswith("Privileged.")}
        assert said == PRIVILEGED[p.name] & set(p.by_name), p.name


def _state(before: dict[str, int], mode: int) -> list[int]:
    S = [0] * st.NSLOTS
    for name, value in {**BASE_STATE, **before}.items():
        S[FIELD_BY_NAME[name]] = value
    S[st.MODE] = mode
    S[st.PC] = ENTRY
    return S


def run_case(
    profile: Profile, case: Case, mode: int, *, repeats: int = 1
) -> tuple[Machine, list[int], dict[int, int]]:
    """Place the case's code at base+ENTRY, set the state, run one step.

    With ``repeats=3`` the step is run three times from the same state (state,
    storage and output restored in between): the machine compiles the line on
    its second run, so the third runs the instruction as a compiled block.
    """
    m = Machine(profile, MEMSIZE)
    image = assemble(f".org {ENTRY:#x}\n{case.asm}", profile, file="<case>")
    S = _state(case.before, mode)
    memory = {**NEW_PSW, **case.mem}
    for addr, word in image.words.items():
        memory[S[st.BASE] + addr] = word
    for addr, word in memory.items():
        m.write(addr, word)
    m.S[:] = S
    m.flush()
    pristine = list(m.M[:MEMSIZE])
    for k in range(repeats):
        if k:
            m.S[:] = S
            m.out.clear()
            for addr, word in enumerate(pristine):
                if m.M[addr] != word:
                    m.write(addr, word)
        assert m.run(1).steps == 1
    return m, S, memory


def expected_after(S: list[int], memory: dict[int, int], outcome: Outcome):
    """The full state, storage and output an outcome describes."""
    S = list(S)
    memory = dict(memory)
    if outcome.trap is not None:
        cause, info = outcome.trap
        psw = S[st.FLAGS] | (S[st.IE] << st.PSW_IE_BIT) | (S[st.MODE] << st.PSW_MODE_BIT)
        for addr, value in zip(range(st.OLD_PSW, st.OLD_INFO + 1),
                               (psw, S[st.PC], S[st.BASE], S[st.BOUND], cause, info)):  # fmt: skip
            memory[addr] = value
        new = memory[st.NEW_PSW]
        S[st.FLAGS] = new & 0xF
        S[st.IE] = (new >> st.PSW_IE_BIT) & 1
        S[st.MODE] = (new >> st.PSW_MODE_BIT) & 1
        S[st.PC], S[st.BASE], S[st.BOUND] = (memory[a] for a in (st.NEW_PC, st.NEW_BASE, st.NEW_BOUND))
        return S, memory, []  # no tick: nothing retired
    S[st.PC] = ENTRY + 2
    S[st.TIMER] -= 1
    for name, value in outcome.changes.items():
        S[FIELD_BY_NAME[name]] = value
    memory.update(outcome.mem)
    return S, memory, list(outcome.out)


@pytest.mark.parametrize("repeats", [1, 3], ids=["operation", "block"])
@pytest.mark.parametrize("mode", [SUPERVISOR, USER], ids=_mode_name)
@pytest.mark.parametrize(
    "profile_name, insn_name",
    [(p.name, i.name) for p in all_profiles() for i in p.insns],
)
def test_instruction(profile_name: str, insn_name: str, mode: int, repeats: int) -> None:
    profile = get(profile_name)
    cases = CASES.get(insn_name)
    assert cases, f"no oracle for {insn_name}"
    for case in cases:
        if mode == USER and insn_name in PRIVILEGED[profile_name]:
            outcome = TRAP(Cause.PRIVILEGED)
        else:
            outcome = case.expected(mode)
        m, S, memory = run_case(profile, case, mode, repeats=repeats)
        want_S, want_mem, want_out = expected_after(S, memory, outcome)
        got = m.snapshot()
        assert m.registers() == {st.FIELD_NAMES[i]: v for i, v in enumerate(want_S)}, case.asm
        assert got["memory"] == {a: w for a, w in want_mem.items() if w}, case.asm
        assert got["out"] == want_out, case.asm


def test_privileged_instructions_run_in_supervisor_and_trap_in_user() -> None:
    """On pg, each privileged instruction traps PRIVILEGED in user mode, old PSW at
    0..5 and new PSW from 8..11; the same instruction does not trap in supervisor."""
    pg = get("pg")
    for name in sorted(PRIVILEGED["pg"]):
        case = CASES[name][0]
        m, S, _ = run_case(pg, case, USER)
        assert m.M[st.OLD_CAUSE] == Cause.PRIVILEGED, name
        assert m.M[st.OLD_PC] == ENTRY and m.M[st.OLD_INFO] == 0, name
        assert m.M[st.OLD_PSW] == S[st.FLAGS] | (S[st.IE] << st.PSW_IE_BIT), name  # mode bit 0
        assert (m.S[st.PC], m.S[st.MODE], m.S[st.FLAGS]) == (HANDLER, SUPERVISOR, NEW_FLAGS), name
        m, _, _ = run_case(pg, case, SUPERVISOR)
        assert m.M[st.OLD_CAUSE] == case.mem.get(st.OLD_CAUSE, 0), name
        assert m.S[st.PC] != HANDLER, name
