"""Several guests on one host: scheduling, isolation, starvation, and the
planted multi-guest bugs caught as what they are."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from popek.fuzz import multi_guest as MG
from popek.model import scheduler as S
from popek.model.machine import Machine
from popek.model.vmms.hardware_assisted import HardwareAssistedVMM
from popek.model.vmms.trap_and_emulate import TrapAndEmulate
from popek.spec import profiles
from popek.spec.asm import assemble
from popek.vmm import GuestState

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "quality"))
from planted_multi_guest import MaskedGuestNotPreempted, OverlappingAllocations, SwitchKeepsVCPU  # noqa: E402

PROGRAMS = [ROOT / "tests" / "guests" / "syscall.s", ROOT / "examples" / "monitor" / "inner.s",
            ROOT / "tests" / "guests" / "timer.s", ROOT / "examples" / "guests" / "hello.s"]  # fmt: skip
DESIGNS = [(TrapAndEmulate, "pg"), (HardwareAssistedVMM, "vtx")]


def host_with_guests(cls, profile, programs, memsize=0x1000):
    prof = profiles.get(profile)
    vmm = cls(Machine(prof, 1 << prof.arch.word))
    images = [assemble(p.read_text(), prof) for p in programs]
    vmm.load(images[0], memsize=memsize)
    gids = [vmm.guests()[0]] + [vmm.add_guest(im, memsize=memsize) for im in images[1:]]
    return prof, vmm, images, gids


@pytest.mark.parametrize("cls, profile", DESIGNS)
@pytest.mark.parametrize("cpus, pin", [(1, False), (2, False), (2, True)])
def test_overcommitted_guests_all_finish_with_their_bare_results(cls, profile, cpus, pin):
    # four guests (one with a timer) on fewer CPUs: each ends as alone on bare hardware
    prof, vmm, images, gids = host_with_guests(cls, profile, PROGRAMS)
    pinning = {gid: k % cpus for k, gid in enumerate(gids)} if pin else None
    sched = S.run_guests(vmm, {g: 20_000 for g in gids}, cpus=S.host_cpus(vmm, cpus), slice_steps=97, pin=pinning)
    for gid, image in zip(gids, images):
        bare = Machine(prof, 0x1000)
        bare.load(image)
        r = bare.run(20_000)
        assert r.halted and sched.guests[gid].halted and sched.guests[gid].steps == r.steps
        vmm.select_guest(gid)
        assert GuestState.from_machine(bare).differences(vmm.guest_state()) == []
    if pin:  # pinned: a guest never moves
        assert all(share.migrations == 0 for share in sched.guests.values())
    assert "4 guests on" in sched.format()


def test_a_guest_that_never_yields_does_not_starve_the_others():
    prof = profiles.get("pg")
    f = MG.check_starvation(TrapAndEmulate, prof, [], 50)
    assert f is None
    prof, vmm, images, gids = host_with_guests(TrapAndEmulate, "pg", PROGRAMS[:2])
    hog = vmm.add_guest(assemble(MG.HOG, prof), memsize=0x400)
    sched = S.run_guests(vmm, {gids[0]: 5000, gids[1]: 10_000, hog: 50_000}, cpus=[vmm.host], slice_steps=100)
    assert sched.guests[gids[0]].halted and sched.guests[gids[1]].halted
    assert sched.guests[hog].steps == 50_000 and not sched.guests[hog].halted


@pytest.mark.parametrize("cls, profile", DESIGNS)
def test_designs_pass_the_multi_guest_search(cls, profile):
    ran, problem = MG.search(cls, profiles.get(profile), cases=8, seed_value=1)
    assert problem is None, problem.report()
    assert ran == 8


@pytest.mark.parametrize("cls, profile", DESIGNS)
def test_designs_pass_the_stateful_machine(cls, profile):
    MG.multi_guest_state_machine(cls, profile).TestCase("runTest").runTest()


def test_overlapping_allocations_are_a_safety_finding():
    ran, problem = MG.search(OverlappingAllocations, profiles.get("pg"), cases=2, seed_value=1)
    assert problem is not None and problem.kind == "safety"
    assert "share 1 host word(s)" in problem.message and "guest 1 (assembly):" in problem.report()


def test_a_switch_that_keeps_the_vcpu_is_a_fidelity_finding():
    ran, problem = MG.search(SwitchKeepsVCPU, profiles.get("pg"), cases=20, seed_value=1)
    assert problem is not None and problem.kind == "fidelity"


def test_a_masked_guest_that_keeps_the_cpu_is_caught():
    # the VMM reports the slice it was given, but the host's own counter
    # shows the masked guest kept the CPU: the other guest waits too long
    from popek.fuzz import guest as g

    prof = profiles.get("pg")
    other = g.GuestCase("pg", (g.Op("li", 1, 0, 5), g.Op("out", 0, 1), g.Op("halt")), steps=50)
    assert MG.check_starvation(TrapAndEmulate, prof, [other]) is None
    f = MG.check_starvation(MaskedGuestNotPreempted, prof, [other])
    assert f is not None and f.kind == "starvation" and "more than its fair" in f.message


def test_bad_schedules_are_refused_with_a_message():
    prof, vmm, images, gids = host_with_guests(TrapAndEmulate, "pg", PROGRAMS[:2])
    with pytest.raises(ValueError, match="pinned to CPU 3"):
        S.run_guests(vmm, {g: 10 for g in gids}, cpus=[vmm.host], pin={gids[0]: 3})
    with pytest.raises(ValueError, match="at least one step"):
        S.run_guests(vmm, {g: 10 for g in gids}, cpus=[vmm.host], slice_steps=0)
    with pytest.raises(ValueError, match="at least one CPU"):
        S.host_cpus(vmm, 0)


def test_popek_check_runs_the_multi_guest_section():
    from popek.fuzz.multi_guest import check_section

    [(ok, line)] = check_section(TrapAndEmulate, ["pg"], cases=2)
    assert ok and line.startswith("multi-guest on pg: 2 sets of 2-4 guests")
    [(ok, line)] = check_section(OverlappingAllocations, ["pg"], cases=2)
    assert not ok and "SAFETY: guests 1 and 2 share 1 host word(s)" in line
    assert check_section(TrapAndEmulate, ["x86"], cases=4) == []  # unfaithful there: not judged again


def test_popek_run_guests(capsys):
    from popek.cli import main

    files = ",".join(str(p) for p in PROGRAMS)
    assert main(["run", "--guests", files, "--profile", "pg", "--cpus", "2", "--pin"]) == 0
    out = capsys.readouterr().out
    assert out.count("(halted)") >= 8 and "schedule: 4 guests on 2 CPU(s)" in out
    assert "output  72 101 108 108 111  'Hello'" in out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--guests", "x.s", "--vmm", "emulator"], "does not declare multi-guest"),
        ([str(PROGRAMS[0]), "--guests", str(PROGRAMS[1])], "not both"),
        (["--guests", str(PROGRAMS[0]), "--cpus", "0"], "--cpus and --slice must be at least 1"),
    ],
)  # fmt: skip
def test_popek_run_guests_mistakes_are_one_line(capsys, argv, message):
    from popek.cli import main

    assert main(["run", "--profile", "pg", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
