"""Each hand-written guest, bare and under each classic design.

Where docs/design.md's table says a design is faithful on a profile, every guest
must end in the bare machine's final state.  Where it says not faithful,
the guests below that show *why* must end elsewhere.  The expected
divergences live in one table, each with its reason; any other cell must
agree with the bare machine.
"""

from __future__ import annotations

import pytest

from popek.registry import BUILTINS, load
from popek.vmm import GuestState

from guests import GUESTS, MEMSIZE, PROFILES, image, run_bare, vmm_for

# The classic designs whose divergences the table below explains.  Other
# built-ins meet the contract and the random programs (test_vmm_contract,
# test_vmm_random_programs); their own guests live beside their tests.
DESIGNS = ("emulator", "trap-and-emulate", "hybrid")
assert set(DESIGNS) <= set(BUILTINS)

# (guest, profile, design) -> why that guest tells this design from bare hardware
DIVERGES: dict[tuple[str, str, str], str] = {
    ("pushf", "x86", "trap-and-emulate"):
        "popf in real user mode keeps IE: the guest's critical section never ends; "
        "pushf shows the real IE (on) inside it",
    ("readr", "x86", "trap-and-emulate"):
        "the kernel's rdmode reads real user mode, rdbase/rdbound the composed R",
    ("jru", "hybrid", "trap-and-emulate"):
        "jru runs as a plain jump: the guest stays in virtual supervisor mode and "
        "its user program's out does not trap",
    ("readr", "x86", "hybrid"):
        "the user program's rdbase reads the composed R, not the guest's",
}

if "vtx" in PROFILES:  # x86's sensitive instructions, unchanged outside guest mode
    DIVERGES.update({(g, "vtx", d): "as on x86: " + why for (g, p, d), why in list(DIVERGES.items()) if p == "x86"})

CASES = [(g, p, d) for g, ps in GUESTS.items() for p in ps for d in DESIGNS]


@pytest.mark.parametrize("guest, profile, design", CASES, ids=["-".join(c) for c in CASES])
def test_guest_under_design(guest: str, profile: str, design: str) -> None:
    bare, steps, halted = run_bare(guest, profile)
    assert halted, f"{guest} must halt on bare {profile}"
    vmm = vmm_for(design, guest, profile)
    run = vmm.run(steps)
    got = vmm.guest_state()
    c = vmm.counters()
    assert c.direct + c.emulated == run.steps  # the counters add up
    diffs = got.differences(bare)
    if (guest, profile, design) in DIVERGES:
        assert diffs, f"{design} on {profile} was expected to differ from bare hardware on {guest}"
    else:
        assert run.steps == steps and run.halted
        assert diffs == []


def test_divergences_only_where_the_design_says_not_faithful() -> None:
    for guest, profile, design in DIVERGES:
        assert not load(design).supports[profile].faithful, (guest, profile, design)
    # and every not-faithful cell of the three guest profiles is shown by a guest
    for design in DESIGNS:
        for profile, support in load(design).supports.items():
            if profile in PROFILES and not support.faithful:
                assert any(d == design and p == profile for _, p, d in DIVERGES), (design, profile)


FAITHFUL_CASES = [c for c in CASES if c not in DIVERGES]


@pytest.mark.parametrize(
    "guest, profile, design", FAITHFUL_CASES, ids=["-".join(c) for c in FAITHFUL_CASES]
)
def test_every_step_agrees(guest: str, profile: str, design: str) -> None:
    """Run one step at a time: the guest's registers (timer and pending tick
    included) match bare hardware after every step, so the virtual timer
    fires at the same guest instruction, and the runs compose."""
    from popek.model.machine import Machine
    from popek.spec.profiles import get

    bare = Machine(get(profile), MEMSIZE)
    bare.load(image(guest, profile))
    vmm = vmm_for(design, guest, profile)
    while not bare.halted:
        bare.run(1)
        assert vmm.run(1).steps == 1
        assert vmm.guest_state().regs == GuestState.from_machine(bare).regs
    assert vmm.guest_state() == GuestState.from_machine(bare)


def test_trap_and_emulate_runs_innocuous_code_directly() -> None:
    vmm = vmm_for("trap-and-emulate", "syscall", "pg")
    vmm.run(10_000)
    c = vmm.counters()
    # only privileged instructions and system calls reach the VMM
    assert c.traps["syscall"] == 11 and c.traps["privileged"] > 0
    assert c.emulated == c.traps["syscall"] + c.traps["privileged"]
    assert c.direct > 6 * c.emulated


def test_emulator_runs_nothing_directly() -> None:
    vmm = vmm_for("emulator", "syscall", "pg")
    r = vmm.run(10_000)
    c = vmm.counters()
    assert c.direct == 0 and c.emulated == r.steps > 0


def test_hybrid_runs_user_code_directly_and_interprets_the_kernel() -> None:
    vmm = vmm_for("hybrid", "syscall", "pg")
    vmm.run(10_000)
    c = vmm.counters()
    assert c.direct >= 60  # the user's Fibonacci loop
    assert c.traps == {"syscall": 11}  # the kernel's own privileged code never trapped


def test_paged_guest_is_interpreted_by_trap_and_emulate() -> None:
    bare, steps, _ = run_bare("paging", "pg")
    vmm = vmm_for("trap-and-emulate", "paging", "pg")
    vmm.run(steps)
    assert vmm.guest_state() == bare
    assert bare.out == (0x1234, 0x1234)
    c = vmm.counters()
    # from lptb 0x300 to lptb 0 the guest runs on the virtual CPU
    assert c.emulated >= 6 and c.traps["privileged"] == 3


@pytest.mark.parametrize("design", DESIGNS)
def test_host_storage_outside_the_allocation_is_untouched(design: str) -> None:
    for guest, profiles in GUESTS.items():
        for profile in profiles:
            vmm = vmm_for(design, guest, profile)
            host = vmm.host
            before = list(host.M)
            vmm.run(5_000)
            alloc = vmm.allocation()
            assert len(alloc) == MEMSIZE
            changed = [a for a in range(len(host.M)) if host.M[a] != before[a] and a not in alloc]
            assert changed == [], (guest, profile)


@pytest.mark.parametrize("design", DESIGNS)
def test_snapshot_restore_replays_the_same_future(design: str) -> None:
    vmm = vmm_for(design, "timer", "x86")
    vmm.run(40)
    snap = vmm.snapshot()
    vmm.run(100)
    later = vmm.guest_state()
    vmm.restore(snap)
    vmm.run(100)
    assert vmm.guest_state() == later


def test_a_design_whose_trap_handler_makes_no_progress_is_stopped() -> None:
    from popek.model.vmms.trap_and_emulate import TrapAndEmulate

    class Stuck(TrapAndEmulate):
        name = "stuck"

        def handle_host_trap(self, cause: int, info: int) -> None:
            pass  # neither emulates nor reflects: the host retraps for ever

    from popek.model.machine import Machine
    from popek.spec.profiles import get

    vmm = Stuck(Machine(get("pg"), 1 << 16))
    vmm.load(image("syscall", "pg"), memsize=MEMSIZE)
    with pytest.raises(RuntimeError, match="stuck: the guest makes no progress"):
        vmm.run(1000)
