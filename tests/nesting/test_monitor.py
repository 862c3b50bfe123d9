"""The monitor in guest code (examples/monitor/monitor.s), checked by
fuzzing its inner guest: faithful on pg, caught on x86, and the checker
itself shown to catch a monitor with a planted slip."""

from __future__ import annotations

from pathlib import Path

import pytest

from popek.fuzz import nesting as N
from popek.model.machine import Machine
from popek.spec import profiles
from popek.spec.asm import assemble
from popek.vmm import GuestState

ROOT = Path(__file__).resolve().parents[2]
SYSCALL = (ROOT / "tests" / "guests" / "syscall.s").read_text()
PG, X86 = profiles.get("pg"), profiles.get("x86")


def monitor(profile=PG, *, edit: tuple[str, str] | None = None) -> N.Monitor:
    text = N.DEFAULT_MONITOR.read_text()
    if edit is not None:
        assert edit[0] in text
        text = text.replace(edit[0], edit[1])
    return N.Monitor.from_source(text, profile)


def test_inner_guest_matches_bare_at_every_step_count():
    # a kernel, a user program with system calls: the inner view equals the
    # bare machine after every one of its steps, not only at the end
    image = assemble(SYSCALL, PG)
    bare = Machine(PG, 0x1000)
    bare.load(image)
    run = N.run_under_monitor(monitor(), image, 0x1000, [1] * 260)
    assert run.halted and not run.refused and run.stuck is None and run.traps > 10
    for k, got in enumerate(run.states, 1):
        bare.run(1)
        assert GuestState.from_machine(bare).differences(got) == [], f"after {k} steps"
    assert sum(run.steps) == 250  # the guest halts at its 250th step, under the monitor too


def test_monitor_is_faithful_on_pg():
    result = N.search(lambda c: N.compare_inner(c, monitor()), PG, cases=40, seed_value=3)
    assert result.finding is None, result.finding.report()
    assert result.cases == 40 and result.refused == 0


# The x86 critical-section idiom in a guest kernel (supervisor mode): save
# the flags with pushf, then restore interrupts on with popf.
PUSHF_POPF = """
start:  li   sp, 0x300
        pushf               ; virtual IE is 0, the real one (user mode) is on
        li   r1, 0x10
        push r1
        popf                ; IE on: in real user mode popf keeps the real IE
        halt
"""


def test_monitor_is_caught_on_x86_by_fuzzing():
    result = N.search(lambda c: N.compare_inner(c, monitor(X86)), X86, cases=40, seed_value=2)
    f = result.finding
    assert f is not None and f.kind == "fidelity"
    # shrunk: a few generated instructions (the image adds the layout's
    # fixed handler and epilogue around them when the guest traps)
    generated = sum(len(sec or ()) for sec in (f.case.kernel, f.case.handler, f.case.user))
    assert "inner guest (assembly):" in f.report() and generated <= 4, f.case


def test_monitor_is_caught_on_x86_through_pushf_by_fuzzing():
    # the mode and R readers left out: what remains is the flags pair
    result = N.search(
        lambda c: N.compare_inner(c, monitor(X86)), X86, cases=40, seed_value=2,
        exclude=("rdmode", "rdbase", "rdbound"),
    )  # fmt: skip
    f = result.finding
    assert f is not None and f.kind == "fidelity"
    # shrunk, counted as above: the layout's fixed handler is not the guest's
    generated = sum(len(sec or ()) for sec in (f.case.kernel, f.case.handler, f.case.user))
    assert generated <= 4, f.case
    assert "pushf" in f.report() or "popf" in f.report()


@pytest.mark.parametrize("profile, caught", [(PG, False), (X86, True)])
def test_popf_pushf_under_the_monitor(profile, caught):
    image = assemble(PUSHF_POPF, profile)
    f = N.compare_program(image, 0x400, monitor(profile), [1, 1, 1, 1, 1, 10])
    if not caught:
        assert f is None, f.report()
        return
    assert f is not None and f.kind == "fidelity"
    # the first difference is pushf's: the word it pushed shows IE on
    assert f.message.startswith("inner guest state differs after 2 steps: mem[0x02ff]")
    assert "pushf" in f.report() and "popf" in f.report()


def test_a_monitor_whose_popf_forgets_ie_is_caught_on_pg():
    broken = monitor(edit=("        st   r3, vie(r0)\n        addi r2, 1\n", "        addi r2, 1\n"))
    image = assemble(PUSHF_POPF, PG)
    f = N.compare_program(image, 0x400, broken, [1, 1, 1, 1, 1, 10])
    assert f is not None and f.kind == "fidelity" and "ie" in f.message


def test_a_monitor_that_loses_the_guest_sp_is_caught():
    broken = monitor(edit=("        sub  r2, r1\n        st   r2, vregs+7(r0)", "        st   r2, vregs+7(r0)"))
    image = assemble(SYSCALL, PG)
    f = N.compare_program(image, 0x1000, broken, [300])
    assert f is not None and f.kind in ("fidelity", "crash")


def test_guest_that_arms_the_timer_is_refused_not_passed():
    image = assemble((ROOT / "tests" / "guests" / "timer.s").read_text(), PG)
    run = N.run_under_monitor(monitor(), image, 0x1000, [400])
    assert run.refused and run.halted


def test_inner_guests_never_use_what_the_monitor_does_not_virtualize():
    from hypothesis import given, settings

    seen = []

    @settings(max_examples=12, database=None, deadline=None)
    @given(N.inner_guests(PG))
    def probe(case):
        names = {op.name for ops in (case.kernel, case.handler or (), case.user or ()) for op in ops}
        seen.append(names)
        assert not names & set(N.UNVIRTUALIZED) and case.timer == 0

    probe()
    assert seen


def test_three_deep_on_the_bare_machine():
    # a monitor hosting a monitor hosting the guest: at its halt, the
    # innermost view (the abstraction applied twice) is the bare machine's
    mon = monitor()
    image = assemble(SYSCALL, PG)
    once, size1 = N.nest(mon, image, 0x1000)
    twice, size2 = N.nest(mon, once, size1)
    machine = Machine(PG, size2)
    machine.load(twice)
    r = machine.run(2_000_000)
    assert r.halted
    middle = N.inner_view(GuestState.from_machine(machine), mon, size1)
    inner = N.inner_view(middle, mon, 0x1000)
    bare = Machine(PG, 0x1000)
    bare.load(image)
    bare.run(1000)
    assert GuestState.from_machine(bare).differences(inner) == []


@pytest.mark.parametrize(
    "text, message",
    [
        ("start: halt\n", "must define the labels"),
        ("        .org 0x10\nstart: halt\ninner:\nisize: .word 0\nientry: .word 0\nrefused: .word 0\nvcpu: .word 0\n",
         "lie in the inner guest's storage"),
    ],
)  # fmt: skip
def test_bad_monitors_are_one_line_errors(text, message):
    with pytest.raises(N.NestingError, match=message):
        N.Monitor.from_source(text, PG)


def test_an_inner_guest_outside_its_storage_is_refused_with_a_message():
    image = assemble("        .org 0x500\nstart: halt\n", PG)
    with pytest.raises(N.NestingError, match="outside its 1024 words"):
        N.nest(monitor(), image, 0x400)


def test_shrinking_spends_runs_not_seconds(monkeypatch):
    """One seed, one counterexample, however loaded the machine: the shrink
    budget counts runs.  A clock that races (every reading a second later)
    stands in for a very loaded machine."""
    check = lambda c: N.compare_inner(c, monitor(X86))  # noqa: E731
    quiet = N.search(check, X86, cases=40, seed_value=2).finding
    unshrunk = N.search(check, X86, cases=40, seed_value=2, shrink_tries=0).finding
    assert unshrunk.case.instructions > quiet.case.instructions  # the budget is what shrinks it

    import popek.fuzz.minimize as M

    clock = iter(range(10**9))
    monkeypatch.setattr(M.time, "monotonic", lambda: float(next(clock)))
    loaded = N.search(check, X86, cases=40, seed_value=2).finding
    assert loaded.case == quiet.case
