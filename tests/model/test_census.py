"""The machine's performance counters (`Machine.census`).

ISA coverage in fuzzing campaigns is read from them, so they must count
every step exactly once, with the mode before the step and whether it
trapped, and counting must not change the run.
"""

from __future__ import annotations

from collections import Counter

from hypothesis import given, settings

from popek.fuzz import strategies
from popek.fuzz.guest import GuestCase
from popek.model.machine import FETCH_FAULT, ILLEGAL, INTERRUPT, Machine
from popek.spec import profiles
from popek.spec.state import IE, PEND, SUPERVISOR, USER

S, U = SUPERVISOR, USER

# rti into `user` (user mode, R = all storage); the handler counts and
# returns past a system call, and halts on anything else.
PROGRAM = """
        .org 0
        .word 0, user, 0, 4096            ; old PSW: user mode, pc=user
        .org 8
        .word 0x20, handler, 0, 4096      ; new PSW: supervisor
        .org 16
start:  rti
user:   li   r1, 3
        sys  7
        addi r1, 1
        halt                              ; privileged: traps
handler:
        ld   r2, 4(r0)                    ; the cause
        cmpi r2, 4
        jnz  stop
        ld   r2, 1(r0)
        addi r2, 2
        st   r2, 1(r0)
        rti
stop:   halt
"""


def test_every_step_counted_once_with_its_mode_and_outcome(machine_from_asm) -> None:
    m = machine_from_asm(PROGRAM)
    m.census = Counter()
    r = m.run(100)
    assert r.halted
    assert m.census == Counter({
        ("rti", S, False): 2,
        ("li", U, False): 1,
        ("sys", U, True): 1,
        ("ld", S, False): 3,
        ("cmpi", S, False): 2,
        ("jnz", S, False): 2,
        ("addi", S, False): 1,
        ("st", S, False): 1,
        ("addi", U, False): 1,
        ("halt", U, True): 1,
        ("halt", S, False): 1,
    })  # fmt: skip
    assert sum(m.census.values()) == r.steps


def test_steps_that_run_no_instruction(machine_from_asm) -> None:
    # an undecodable word, a fetch outside storage, an interrupt
    m = machine_from_asm(".org 8\n.word 0x20, h, 0, 4096\n.org 16\n.word 0xffff, 0xffff\nh: halt\n")
    m.census = Counter()
    m.run(10)
    assert m.census == Counter({(ILLEGAL, S, True): 1, ("halt", S, False): 1})

    m = machine_from_asm(".org 8\n.word 0x20, 5000, 0, 4096\n.org 16\n.word 0xffff, 0xffff\n")
    m.census = Counter()
    m.run(2)
    assert m.census == Counter({(ILLEGAL, S, True): 1, (FETCH_FAULT, S, True): 1})

    m = machine_from_asm(".org 8\n.word 0x20, h, 0, 4096\n.org 16\nnop\nh: halt\n")
    m.S[IE], m.S[PEND] = 1, 1  # a timer tick is pending and may be taken
    m.census = Counter()
    m.run(10)
    assert m.census == Counter({(INTERRUPT, S, True): 1, ("halt", S, False): 1})


@settings(max_examples=30, deadline=None, database=None)
@given(strategies.from_profile("x86"))
def test_counting_does_not_change_the_run(case: GuestCase) -> None:
    profile = profiles.get(case.profile)
    plain, counted = Machine(profile, case.memsize), Machine(profile, case.memsize)
    plain.load(case.image(profile))
    counted.load(case.image(profile))
    counted.census = Counter()
    a, b = plain.run(case.steps), counted.run(case.steps)
    assert (a.steps, a.halted) == (b.steps, b.halted)
    assert plain.S == counted.S and plain.M == counted.M and plain.out == counted.out
    assert sum(counted.census.values()) == b.steps


def test_counting_runs_a_block_choosers_blocks_not_storage() -> None:
    """A binary translator's chooser may hand the machine a block that no
    longer matches storage (a stale translation: that is the translator's
    bug to find).  Counting must run the chosen block as an uncounted run
    does, and count its instructions, or the census would hide the bug."""
    from popek.spec.asm import assemble

    prof = profiles.get("pg")
    image = assemble("li r1, 1\naddi r1, 1\naddi r1, 1\nhalt\n", prof)
    stale = assemble("li r1, 1\naddi r1, 5\naddi r1, 5\nhalt\n", prof)  # what was translated
    book_words = [(stale.words[a], stale.words[a + 1]) for a in sorted(stale.words)[::2]]

    def run(census: Counter | None) -> tuple[int, Counter | None]:
        m = Machine(prof, 1024)
        m.load(image)
        decoded = [m.book.decode(w0, w1) for w0, w1 in book_words[:3]]
        m.blocks = lambda pc: decoded if pc == image.entry else [m.book.decode(*book_words[3])]
        m.census = census
        m.run(10)
        return m.S[1], census

    plain, _ = run(None)
    counted, census = run(Counter())
    assert plain == counted == 11  # the chosen block ran, both times
    assert census[("li", S, False)] == 1 and census[("addi", S, False)] == 2
    assert sum(census.values()) == 4  # and the halt, counted once


def test_compiled_blocks_are_counted_as_the_instructions_they_hold() -> None:
    """Counting does not turn compilation off: a loop compiled into a block
    counts exactly what running it one instruction at a time counts."""
    from popek.spec.asm import assemble

    prof = profiles.get("pg")
    image = assemble("li r1, 40\nagain: addi r2, 3\naddi r1, -1\njnz again\nhalt\n", prof)
    counts = []
    for compiled in (True, False):
        m = Machine(prof, 1024)
        m.load(image)
        m.census = Counter()
        m.run(1000, compiled=compiled)
        counts.append(m.census)
        if compiled:
            assert any(line.block is not None for line in m.cache.lines.values())  # it did compile
    assert counts[0] == counts[1] == Counter(
        {("li", S, False): 1, ("addi", S, False): 80, ("jnz", S, False): 40, ("halt", S, False): 1}
    )
