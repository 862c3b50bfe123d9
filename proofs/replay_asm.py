"""Assembly that replays a witness state on a freshly loaded machine.

A witness is a machine state; to replay it "as it stands" a user needs a
program that gets a bare machine there.  `setup_program` writes one, in
P&G's own way: in supervisor mode (where the machine starts) it fills
storage with the state's words, stores the state's PSW (flags, IE, mode),
PC and R in the old-PSW area, loads the general registers, and returns
from a trap (``rti``): the next instruction is the witness's, run in
exactly the witness's state.

What the program cannot reproduce, and says so by returning None: a running
timer, a pending tick, paging on, or the vtx fields set.  Two places of
storage necessarily differ afterwards: the old-PSW words 0..3 (they held
the PSW ``rti`` consumed) and the stub's own code, placed in a run of
storage the state does not name explicitly.  `replay_program` runs the
program and checks that the instruction then does what the witness says.
"""

from __future__ import annotations

from dataclasses import dataclass

from popek.model.machine import Machine
from popek.spec.asm import assemble
from popek.spec.profiles import Profile
from popek.spec.state import (
    BASE,
    BOUND,
    FIELD_NAMES,
    FIRST_FREE,
    FLAGS,
    HALTED,
    IE,
    MODE,
    NSLOTS,
    OLD_BOUND,
    OLD_BASE,
    OLD_PC,
    OLD_PSW,
    PC,
    PEND,
    PSW_IE_BIT,
    PSW_MODE_BIT,
    PTBR,
    TIMER,
)

from .concrete import ConcreteState

PSW_AREA = range(OLD_PSW, OLD_BOUND + 1)  # the words rti reads


@dataclass
class Program:
    text: str  # assembly source
    steps: int  # machine cycles the setup takes, up to and including rti


def _reg(i: int) -> str:
    return FIELD_NAMES[i]


def setup_program(profile: Profile, state: ConcreteState) -> Program | None:
    """A program leaving a fresh `Machine(profile, state.memsize)` in ``state``
    (but for the old-PSW words and the stub's code), or None."""
    S = state.S
    if S[TIMER] or S[PEND] or S[PTBR] or S[HALTED] or any(S[HALTED + 1 : NSLOTS]):
        return None
    if state.mem.keys() & set(PSW_AREA):
        return None  # rti consumes those words
    fixed = sorted(a for a in state.mem if a >= FIRST_FREE - 4)
    writes = [(a, state.word(a)) for a in range(PSW_AREA.stop, FIRST_FREE - 4)
              if state.word(a) != 0 or state.default != 0]
    writes += [(a, state.mem[a]) for a in fixed]
    fill = state.default != 0
    fill_insns = 2 + 5 + 1 + 5  # two li, a loop, one li, a loop
    insns = (fill_insns if fill else 0) + 3 * (len(writes) + 4) + profile.arch.nregs + 1
    length = 2 * insns
    start = _free_run(state, length, fixed)
    if start is None:
        return None
    lines = ["; replay: brings a fresh machine into the witness state, then rti",
             f"        .org {start:#x}", "start:"]
    steps = 0
    if fill:  # every word but the stub and the words written below holds the default
        end = start + length
        lines += [f"        li r0, {state.default:#x}", f"        li r1, {FIRST_FREE - 4:#x}"]
        lines += _fill_loop("low", start)
        lines += [f"        li r1, {end:#x}"]
        lines += _fill_loop("high", state.memsize)
        steps += 2 + 5 * (start - (FIRST_FREE - 4)) + 2 + 1 + 5 * (state.memsize - end) + 2
    for a, v in writes:
        lines += [f"        li r0, {v:#x}", f"        li r1, {a:#x}", "        st r0, 0(r1)"]
        steps += 3
    psw = S[FLAGS] | (S[IE] << PSW_IE_BIT) | (S[MODE] << PSW_MODE_BIT)
    for a, v in ((OLD_PSW, psw), (OLD_PC, S[PC]), (OLD_BASE, S[BASE]), (OLD_BOUND, S[BOUND])):
        lines += [f"        li r0, {v:#x}", f"        li r1, {a:#x}", "        st r0, 0(r1)"]
        steps += 3
    for i in range(profile.arch.nregs):
        lines.append(f"        li {_reg(i)}, {S[i]:#x}")
        steps += 1
    lines.append("        rti")
    steps += 1
    return Program("\n".join(lines) + "\n", steps)


def _fill_loop(label: str, stop: int) -> list[str]:
    """Store r0 at r1, r1+1, ... up to ``stop`` (exclusive)."""
    return [
        f"fill_{label}:",
        f"        cmpi r1, {stop:#x}",
        f"        jz done_{label}",
        "        st r0, 0(r1)",
        "        addi r1, 1",
        f"        jmp fill_{label}",
        f"done_{label}:",
    ]


def _free_run(state: ConcreteState, length: int, taken: list[int]) -> int | None:
    """The lowest address at or above FIRST_FREE where ``length`` words hold
    nothing the state names explicitly (instruction included)."""
    start = FIRST_FREE
    for a in sorted(taken) + [state.memsize]:
        if a - start >= length:
            return start
        start = max(start, a + 1)
    return None


def replay_program(profile: Profile, state: ConcreteState) -> tuple[Machine, Program] | None:
    """Assemble and run the setup program; the machine it returns is about
    to run the witness's instruction (None if no program can be made)."""
    program = setup_program(profile, state)
    if program is None:
        return None
    m = Machine(profile, state.memsize)
    m.load(assemble(program.text, profile, file="<replay>"))
    m.run(program.steps)
    return m, program


def program_reproduces(profile: Profile, state: ConcreteState) -> tuple[Program | None, str]:
    """Run the setup program and then one more step; compare with one step
    from ``state`` itself.  Returns the program and a one-line verdict."""
    from .concrete import run_step

    made = replay_program(profile, state)
    if made is None:
        return None, "no setup program (running timer, pending tick, paging, vtx fields or PSW words set)"
    m, program = made
    if m.S != state.S:
        return program, "the setup program did not reach the state"
    seen: list[tuple[int, int]] = []
    m.step(on_trap=lambda _m, cause, info: seen.append((cause, info)) or True)
    want = run_step(profile, state)
    got = (bool(seen), seen[0] if seen else (0, 0), list(m.S), list(m.out))
    if got != (want.trapped, (want.cause, want.info), want.S, want.out):
        return program, ("the instruction then behaves differently (it reads the old-PSW "
                         "words or the stub, which the program had to use)")
    return program, "reproduces the witness's step exactly"
