"""Compiled blocks and decode caches must not change what the machine does.

`Machine.run` caches decoded instructions per virtual PC and compiles hot
straight-line code into blocks.  These caches are invisible by contract, so
a random program must leave exactly the same state, storage, output log and
step count whether it runs

* compiled, in one call (`run(n)`),
* compiled, in random slices (`run(k)` repeatedly: blocks entered mid-budget),
* uncompiled (`run(n, compiled=False)`: per-opcode operations, decode cache on),
* one step at a time with every cache flushed first (no cache at all: the
  reference).

The programs mix arithmetic, loops, loads and stores, stack operations,
system instructions, timer interrupts that land inside hot code, stores that
rewrite later instructions (self-modifying code), page-table edits with
paging on, and changes of the relocation register.  Traps go to a handler
that logs the cause, skips the trapping instruction and re-arms the timer,
or (in some examples) to a host hook doing the same from Python.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hs

from popek.model.machine import Machine
from popek.spec import state as st
from popek.spec.asm import assemble
from popek.spec.encoding import encode
from popek.spec.profiles import all_profiles, get
from popek.spec.state import PTE_PRESENT, PTE_USER, PTE_WRITE, Cause

MEMSIZE = 4096
PAGE = st.ARCH.page_size
HANDLER = 0x300
DATA = 0x400  # two pages of data: 0x400 and 0x440
STACK = 0x500
PT = 0xC00
STEPS = 300

NEEDED = {
    "mov", "add", "sub", "and", "or", "xor", "shl", "shr", "cmp", "li", "addi", "cmpi",
    "ld", "st", "push", "pop", "jmp", "jz", "jnz", "jc", "jnc", "jlt", "jge", "call", "ret",
    "sys", "rti", "ei", "di", "pushf", "popf", "rdmode", "rdbase", "rdbound", "wrr", "lptb",
    "stimer", "out", "halt", "nop",
}  # fmt: skip
PROFILES = [p.name for p in all_profiles() if NEEDED <= set(p.by_name)]

reg = hs.integers(0, 3)  # guest data registers; r4 is the guest's address register
any_reg = hs.integers(0, 6)  # r5, r6 belong to the handler but may be read
word = hs.integers(0, 0xFFFF)
small = hs.integers(-4, 20)


def handler(rearm: int) -> str:
    """Log the cause; skip the trapping instruction unless it was the timer,
    which is re-armed instead; return."""
    return f"""
        .org {HANDLER:#x}
handler: li r6, 0
        ld r5, {st.OLD_CAUSE}(r6)
        out r5
        cmpi r5, {int(Cause.TIMER)}
        jz htimer
        ld r5, {st.OLD_PC}(r6)
        addi r5, 2
        st r5, {st.OLD_PC}(r6)
        rti
htimer: li r5, {rearm}
        stimer r5
        rti
"""


@hs.composite
def item(draw, index: int, count: int, profile: str) -> str:
    """One statement group of the random program (labels L0..L{count})."""
    label = hs.integers(0, count).map(lambda j: f"L{j}")
    kind = draw(
        hs.sampled_from(
            ["alu", "alu", "alui", "alui", "load", "store", "smc", "smc", "stack", "branch",
             "loop", "loop", "call", "system", "stimer", "pte", "wrr", "lptb", "flags"]
        )
    )  # fmt: skip
    if kind == "alu":
        op = draw(hs.sampled_from(["mov", "add", "sub", "and", "or", "xor", "shl", "shr", "cmp"]))
        return f"{op} r{draw(reg)}, r{draw(any_reg)}"
    if kind == "alui":
        op = draw(hs.sampled_from(["li", "addi", "cmpi"]))
        return f"{op} r{draw(reg)}, {draw(word)}"
    if kind == "load":
        base = draw(hs.one_of(hs.integers(DATA, DATA + 2 * PAGE - 1).map(str), label))
        return f"li r4, {base}\nld r{draw(reg)}, {draw(hs.integers(-2, 2))}(r4)"
    if kind == "store":
        at = draw(hs.integers(DATA, DATA + 2 * PAGE - 1))
        return f"li r4, {at}\nst r{draw(any_reg)}, {draw(hs.integers(-2, 2))}(r4)"
    if kind == "smc":
        # rewrite the opcode word or the immediate of an instruction (often a later one)
        name = draw(hs.sampled_from(["li", "addi", "xor", "add", "nop", "out", "jmp"]))
        insn = get(profile)[name]
        w0, w1 = encode(
            get(profile),
            insn,
            rd=draw(reg) if "rd" in insn.fields else 0,
            rs=draw(reg) if "rs" in insn.fields else 0,
            imm=draw(hs.integers(0, 40) if name == "jmp" else word) if "imm" in insn.fields else 0,
        )
        half = draw(hs.sampled_from([0, 1]))
        value = draw(hs.sampled_from([w0, w1, draw(word)])) if half else w0
        return f"li r4, {draw(label)}\nli r3, {value}\nst r3, {half}(r4)"
    if kind == "stack":
        return draw(hs.sampled_from([f"push r{draw(any_reg)}", f"pop r{draw(reg)}", "pushf", "popf"]))
    if kind == "branch":
        op = draw(hs.sampled_from(["jmp", "jz", "jnz", "jc", "jnc", "jlt", "jge"]))
        return f"{op} {draw(label)}"
    if kind == "loop":
        body = draw(hs.lists(hs.sampled_from(["alu", "store", "smc", "stimer"]), min_size=1, max_size=4))
        lines = []
        for k in body:
            if k == "alu":
                lines.append(f"add r{draw(hs.integers(0, 2))}, r{draw(any_reg)}")
            elif k == "stimer":
                lines.append(f"li r2, {draw(hs.integers(0, 40))}\nstimer r2")
            elif k == "store":
                at = draw(hs.integers(DATA, DATA + 2 * PAGE - 1))
                lines.append(f"li r4, {at}\nst r{draw(any_reg)}, 0(r4)")
            else:  # rewrite the immediate of the loop's own first instruction
                lines.append(f"li r4, LL{index}\nst r0, 1(r4)")
        n = draw(hs.integers(1, 12))
        return f"li r3, {n}\nLL{index}: addi r1, 1\n" + "\n".join(lines) + f"\naddi r3, -1\njnz LL{index}"
    if kind == "call":
        return draw(hs.sampled_from([f"call {draw(label)}", "ret"]))
    if kind == "system":
        extra = ["jru L0"] if "jru" in get(profile).by_name else []
        return draw(
            hs.sampled_from(
                [f"sys {draw(hs.integers(0, 9))}", "ei", "di", f"out r{draw(any_reg)}", "nop",
                 f"rdmode r{draw(reg)}", f"rdbase r{draw(reg)}", f"rdbound r{draw(reg)}", "halt",
                 "rti"] + extra
            )
        )  # fmt: skip
    if kind == "stimer":
        return f"li r2, {draw(hs.integers(0, 12))}\nstimer r2"
    if kind == "pte":
        page = draw(hs.sampled_from([DATA // PAGE, DATA // PAGE + 1, 0, 1]))
        bits = draw(hs.sampled_from([7, 5, 3, 1, 0] if page >= DATA // PAGE else [7, 5]))
        frame = draw(hs.sampled_from([page, DATA // PAGE, 0x30])) if page >= DATA // PAGE else page
        return f"li r4, {PT + page}\nli r2, {frame * PAGE | bits}\nst r2, 0(r4)"
    if kind == "wrr":
        bound = draw(hs.integers(0x100, MEMSIZE + 0x100))
        return f"li r4, 0\nli r2, {bound}\nwrr r4, r2"
    if kind == "lptb":
        return f"li r4, {draw(hs.sampled_from([0, PT]))}\nlptb r4"
    return draw(hs.sampled_from(["pushf\npop r2", "li r2, 0x1f\npush r2\npopf", "li r2, 0\npush r2\npopf"]))


@hs.composite
def scenarios(draw) -> dict:
    profile = draw(hs.sampled_from(PROFILES))
    count = draw(hs.integers(1, 14))
    items = [draw(item(k, count, profile)) for k in range(count)]
    tail = draw(hs.sampled_from(["jmp L0", "halt", "jmp start"]))
    body = "\n".join(f"L{k}:\n{text}" for k, text in enumerate(items))
    text = (
        f".org 8\n.word 0x20, handler, 0, {MEMSIZE}\n.org 16\nstart:\n{body}\nL{count}: {tail}\n"
        + handler(draw(hs.sampled_from([0, 3, 7, 16, 40])))
    )
    pte_bits = {p: draw(hs.sampled_from([7, 7, 5, 3, 1, 0])) for p in (DATA // PAGE, DATA // PAGE + 1)}
    pte_bits[0] = draw(hs.sampled_from([7, 7, 5]))  # page 0: trap area and code; maybe read-only
    return {
        "profile": profile,
        "text": text,
        "mode": draw(hs.sampled_from([st.SUPERVISOR, st.USER])),
        "ie": draw(hs.integers(0, 1)),
        "timer": draw(hs.sampled_from([0, 0, 1, 2, 5, 9, 17, 33])),
        "paging": draw(hs.booleans()),
        "pte_bits": pte_bits,
        "hook": draw(hs.booleans()),
        "slices": draw(hs.lists(hs.integers(1, 40), min_size=1, max_size=30)),
    }


def boot(sc: dict) -> Machine:
    profile = get(sc["profile"])
    m = Machine(profile, MEMSIZE)
    m.load(assemble(sc["text"], profile, file="<random>"))
    for page in range(MEMSIZE // PAGE):
        bits = sc["pte_bits"].get(page, PTE_PRESENT | PTE_WRITE | PTE_USER)
        m.write(PT + page, page * PAGE | bits)
    m.S[st.SP] = STACK
    m.S[st.MODE] = sc["mode"]
    m.S[st.IE] = sc["ie"]
    m.S[st.TIMER] = sc["timer"]
    m.S[st.PTBR] = PT if sc["paging"] else 0
    m.flush()
    return m


class Hook:
    """A host hook doing the handler's job from Python, and logging what it saw.
    A system call also stops the run (the caller runs on)."""

    def __init__(self) -> None:
        self.log: list[tuple] = []

    def __call__(self, m: Machine, cause: int, info: int) -> bool:
        self.log.append((cause, info, tuple(m.S)))
        if cause == Cause.TIMER:
            m.S[st.TIMER] = 6
        else:
            m.S[st.PC] = (m.S[st.PC] + 2) & m.arch.mask
        return cause == Cause.SYSCALL


def outcome(m: Machine, steps: int, hook: Hook | None) -> dict:
    return {**m.snapshot(), "steps": steps, "hook": hook.log if hook else None}


def run_reference(sc: dict) -> dict:
    """One step at a time, every cache dropped before each step."""
    m, hook, steps = boot(sc), Hook() if sc["hook"] else None, 0
    while steps < STEPS:
        m.flush()
        r = m.run(1, hook, compiled=False)
        if r.steps == 0:
            break
        steps += r.steps
    return outcome(m, steps, hook)


def run_sliced(sc: dict, slices: list[int], compiled: bool = True) -> dict:
    """Run STEPS cycles in calls of the given sizes (in turn), going on after
    a hook stops a run."""
    m, hook, steps = boot(sc), Hook() if sc["hook"] else None, 0
    k = 0
    while steps < STEPS:
        r = m.run(min(slices[k % len(slices)], STEPS - steps), hook, compiled=compiled)
        k += 1
        steps += r.steps
        if r.halted or r.steps == 0:
            break
    return outcome(m, steps, hook)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_compiled_blocks_match_single_stepping(sc: dict) -> None:
    want = run_reference(sc)
    assert run_sliced(sc, [STEPS], compiled=False) == want
    assert run_sliced(sc, [STEPS]) == want
    assert run_sliced(sc, sc["slices"]) == want


# --------------------------------------------------------------------------
# Regressions found by the property above (model/machine.py), kept explicit
# --------------------------------------------------------------------------
def _both_ways(text: str, steps: int, **state: int) -> tuple[dict, dict]:
    results = []
    for compiled in (True, False):
        m = Machine(get("pg"), MEMSIZE)
        m.load(assemble(text, get("pg")))
        for name, value in state.items():
            m.S[st.FIELD_BY_NAME[name]] = value
        m.flush()
        results.append(outcome(m, m.run(steps, compiled=compiled).steps, None))
    return results[0], results[1]


def test_stimer_at_the_end_of_a_hot_block_is_not_overwritten() -> None:
    """A block ending in `stimer` used to have its timer write replaced by the
    run loop's "timer minus block length" (and its own tick lost)."""
    compiled, stepped = _both_ways("start: li r2, 7\nstimer r2\njmp start\n", 40, timer=3)
    assert compiled == stepped
    # 40 steps end just after a `li`: 7 from the last stimer, then its own, jmp and li ticks
    assert compiled["state"][st.TIMER] == 4


def test_host_changes_to_the_relocation_register_between_runs_are_seen() -> None:
    """Decodes cached under one R must not be reused after the host sets another
    R directly in ``S`` (as a VMM does between guest runs)."""
    m = Machine(get("pg"), MEMSIZE)
    m.load(assemble("start: li r1, 1\njmp start\n", get("pg")))
    m.run(10)
    moved = assemble(".org 16\nli r1, 2\njmp 16\n", get("pg"))
    for a, w in moved.words.items():
        m.write(0x200 + a, w)
    m.S[st.BASE], m.S[st.BOUND] = 0x200, 0x100
    m.run(10)
    assert m.S[1] == 2


SELF_MODIFYING = """
start:  li r3, 5
loop:   li r4, patch
        st r3, 1(r4)        ; rewrite the immediate of `patch`, later in this block
patch:  li r1, 0
        out r1
        li r4, spot
        li r2, 0x0f00       ; `nop`
        st r2, 0(r4)        ; after the first pass `spot` is a nop, not an `out`
spot:   out r3
        addi r3, -1
        jnz loop
        halt
"""


@pytest.mark.parametrize("paging", [False, True])
@pytest.mark.parametrize("compiled", [True, False])
def test_a_store_into_the_running_block_is_seen_at_once(compiled: bool, paging: bool) -> None:
    m = Machine(get("pg"), MEMSIZE)
    m.load(assemble(SELF_MODIFYING, get("pg")))
    if paging:
        for page in range(MEMSIZE // PAGE):
            m.write(PT + page, page * PAGE | PTE_PRESENT | PTE_WRITE)
        m.S[st.PTBR] = PT
    result = m.run(500, compiled=compiled)
    assert result.halted
    assert m.out == [5, 4, 3, 2, 1]


HOT_LOOP = f"""
        .org 8
        .word 0x20, handler, 0, {MEMSIZE}
        .org 16
start:  addi r1, 1
        addi r1, 1
        addi r1, 1
        addi r1, 1
        addi r1, 1
        addi r1, 1
        addi r1, 1
        addi r1, 1
        jmp start
handler: halt
"""


@pytest.mark.parametrize("timer", [1, 2, 5, 8, 9, 10, 23])
@pytest.mark.parametrize("warm", [0, 25, 31])
def test_timer_interrupt_lands_at_its_instruction_inside_a_hot_block(warm: int, timer: int) -> None:
    """Run the 9-instruction loop hot, then arm the timer from the host: the
    interrupt must be taken after exactly `timer` more instructions, wherever
    that falls in the compiled block, and save the next instruction's pc."""
    m = Machine(get("pg"), MEMSIZE)
    m.load(assemble(HOT_LOOP, get("pg")))
    m.run(warm)
    m.S[st.TIMER], m.S[st.IE] = timer, 1
    result = m.run(1000)
    assert result.halted and result.steps == timer + 2  # instructions, interrupt, halt
    position = (warm + timer) % 9
    assert m.M[st.OLD_CAUSE] == Cause.TIMER
    assert m.M[st.OLD_PC] == 16 + 2 * position
    adds_before = (warm // 9) * 8 + min(warm % 9, 8)
    adds_after = ((warm + timer) // 9) * 8 + min((warm + timer) % 9, 8)
    assert m.S[1] == adds_after and adds_after - adds_before <= timer
