"""Host types as configurations: the type 2 host kernel in front of a
design's traps, and the type 0 partition manager."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from popek.model.hosts.hosted import DEFAULT_HOST_OS, HostOSError, hosted
from popek.model.hosts.partition import PartitionManager
from popek.model.machine import Machine
from popek.model.vmms.binary_translation import BinaryTranslationVMM
from popek.model.vmms.hardware_assisted import HardwareAssistedVMM
from popek.model.vmms.trap_and_emulate import TrapAndEmulate
from popek.spec import profiles
from popek.spec.asm import assemble
from popek.vmm import GuestState

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "quality"))
from planted_hosts import GARBLING_KERNEL_PATCH  # noqa: E402

SYSCALL = ROOT / "tests" / "guests" / "syscall.s"


def run_design(design, profile: str, program: Path, steps: int = 5000):
    prof = profiles.get(profile)
    vmm = design(Machine(prof, 1 << prof.arch.word))
    vmm.load(assemble(program.read_text(), prof), memsize=0x1000)
    vmm.run(steps)
    return vmm


def bare_state(profile: str, program: Path, steps: int = 5000) -> GuestState:
    prof = profiles.get(profile)
    m = Machine(prof, 0x1000)
    m.load(assemble(program.read_text(), prof))
    m.run(steps)
    return GuestState.from_machine(m)


# -- type 2 -------------------------------------------------------------------------
@pytest.mark.parametrize("design, profile", [(TrapAndEmulate, "pg"), (BinaryTranslationVMM, "x86")])
def test_every_host_trap_runs_the_host_kernel_and_costs_steps(design, profile):
    one = run_design(design, profile, SYSCALL)
    two = run_design(hosted(design), profile, SYSCALL)
    traps = sum(one.counters().traps.values())
    c = two.counters()
    assert traps > 0 and c.extra["host_os_traps"] == sum(c.traps.values()) == traps
    assert c.extra["host_os_steps"] >= c.extra["host_os_traps"] > 0
    assert two.host_os.steps == c.extra["host_os_steps"]  # the kernel CPU's own count
    assert two.guest_state() == one.guest_state() == bare_state(profile, SYSCALL)


def test_the_kernel_is_the_one_in_storage():
    """The kernel's statistics (per-cause counts it keeps in its own words)
    show it ran once per trap, and its message names the last trap."""
    vmm = run_design(hosted(TrapAndEmulate), "pg", SYSCALL)
    M, c = vmm.host.M, vmm.counters()
    counted = {cause: M[0x180 + cause] for cause in range(9) if M[0x180 + cause]}
    assert sum(counted.values()) == c.extra["host_os_traps"] == M[0x1C3]
    assert M[0x1C0] in counted


def test_a_kernel_that_garbles_its_message_breaks_fidelity():
    """The VMM acts on the kernel's message, not on the hardware's trap."""
    old, new = GARBLING_KERNEL_PATCH
    source = DEFAULT_HOST_OS.read_text()
    assert old in source
    garbling = type("Garbling", (hosted(TrapAndEmulate),), {"host_os_source": source.replace(old, new)})
    assert run_design(garbling, "pg", SYSCALL).guest_state() != bare_state("pg", SYSCALL)


def test_a_kernel_that_never_passes_the_trap_on_is_an_error():
    looping = type("Looping", (hosted(TrapAndEmulate),),
                   {"host_os_source": "        .org 0x8\n        .word 0x20, spin, 0, 0x400\n"
                                      "        .org 0x10\nspin:   jmp spin\n"})  # fmt: skip
    with pytest.raises(HostOSError, match="did not pass trap .* ran 1000 steps"):
        run_design(looping, "pg", SYSCALL)
    halting = type("Halting", (hosted(TrapAndEmulate),),
                   {"host_os_source": "        .org 0x8\n        .word 0x20, stop, 0, 0x400\n"
                                      "        .org 0x10\nstop:   halt\n"})  # fmt: skip
    with pytest.raises(HostOSError, match="halted without its upcall"):
        run_design(halting, "pg", SYSCALL)


def test_designs_whose_exits_bypass_on_host_trap_cannot_be_hosted():
    with pytest.raises(TypeError, match="no host OS"):
        hosted(HardwareAssistedVMM)


# -- type 0 -------------------------------------------------------------------------
@pytest.mark.parametrize("profile", ["pg", "x86"])
def test_a_partitioned_guest_kernel_runs_in_real_supervisor_mode_with_nothing_emulated(profile):
    prof = profiles.get(profile)
    host = PartitionManager(prof)
    programs = [SYSCALL, ROOT / "tests" / "guests" / "pushf.s", ROOT / "tests" / "guests" / "readr.s"]
    gids = [host.add_guest(assemble(p.read_text(), prof), memsize=0x1000) for p in programs]
    for gid, program in zip(gids, programs):
        r = host.run(gid, 5000)
        modes = host.mode_steps(gid)
        assert modes["supervisor"] > 0
        assert modes["supervisor"] + modes["user"] == r.steps  # every step ran on the CPU itself
        assert host.guest_state(gid) == bare_state(profile, program)


def test_partitions_are_disjoint_and_page_aligned():
    prof = profiles.get("pg")
    host = PartitionManager(prof)
    image = assemble("start: halt", prof)
    ranges = [host.partitions[host.add_guest(image, memsize=n)].allocation for n in (0x400, 0x3F0, 0x800)]
    for a, b in zip(ranges, ranges[1:]):
        assert a.stop <= b.start and b.start % prof.arch.page_size == 0
