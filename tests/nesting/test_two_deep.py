"""Recursion two and three deep: the monitor in guest code, with its guest,
run under the Python designs popek ships, against the bare machine."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from popek import registry
from popek.fuzz import nesting as N
from popek.spec import profiles
from popek.spec.asm import assemble

ROOT = Path(__file__).resolve().parents[2]
SYSCALL = (ROOT / "tests" / "guests" / "syscall.s").read_text()
PG = profiles.get("pg")
MONITOR = N.Monitor.load(profile=PG)

# A kernel whose flags must survive a system call (its handler's addi
# changes them; its rti restores them), then decide a branch.
FLAGS_ACROSS_A_TRAP = """
start:  li   r1, 0x20
        st   r1, 8(r0)
        li   r1, handler
        st   r1, 9(r0)
        st   r0, 10(r0)
        li   r1, 0x400
        st   r1, 11(r0)
        li   r2, 1
        cmpi r2, 1          ; Z set
        sys  0
        jz   ok
        out  r2             ; Z lost
ok:     halt
handler: ld  r3, 1(r0)
        addi r3, 2          ; past the sys (and Z clear)
        st   r3, 1(r0)
        rti
"""


@pytest.mark.parametrize("name", ["trap-and-emulate", "emulator", "hybrid", "binary-translation"])
def test_faithful_designs_stay_faithful_two_deep(name):
    vmm = registry.load(name)
    assert vmm.supports["pg"].faithful
    result = N.search(lambda c: N.check_two_deep(c, MONITOR, vmm), PG, cases=6, seed_value=5)
    assert result.finding is None, result.finding.report()
    assert result.cases == 6 and result.refused == 0


def test_paravirt_refuses_a_monitor_that_decodes_its_guest():
    # the pass rewrites the inner guest's privileged words, which the monitor
    # reads to emulate them: a refusal, counted as such
    f = N.check_under_vmm(assemble(SYSCALL, PG), 0x1000, 300, MONITOR, registry.load("paravirt"))
    assert f is not None and f.kind == "refused"


def test_a_planted_rti_bug_is_caught_two_deep():
    # trap-and-emulate whose emulated rti forgets the flags: the monitor's
    # rti into its guest is emulated by it, so the inner guest's flags go wrong
    sys.path.insert(0, str(ROOT / "tests" / "quality"))
    from planted_bugs import RtiForgetsFlags

    program = assemble(FLAGS_ACROSS_A_TRAP, PG)
    assert N.check_under_vmm(program, 0x400, 100, MONITOR, registry.load("trap-and-emulate")) is None
    f = N.check_under_vmm(program, 0x400, 100, MONITOR, RtiForgetsFlags)
    assert f is not None and f.kind == "fidelity"
    assert "inner guest (assembly):" in f.report()


def test_three_deep_under_trap_and_emulate():
    te = registry.load("trap-and-emulate")
    f = N.check_under_vmm(assemble(SYSCALL, PG), 0x1000, 300, MONITOR, te, depth=2)
    assert f is None, f.report()


def test_two_deep_under_hardware_assistance_on_vtx():
    vtx = profiles.get("vtx")
    monitor = N.Monitor.load(profile=vtx)
    for name in ("hardware-assisted", "hardware-assisted+shadow"):
        vmm = registry.load(name)
        result = N.search(lambda c: N.check_two_deep(c, monitor, vmm), vtx, cases=4, seed_value=5)
        assert result.finding is None, result.finding.report()
        assert result.cases == 4
