"""The partition feature: optional, off in every shipped profile, and on a
partitioned CPU a guest sees a bare machine of its partition's size."""

from __future__ import annotations

from pathlib import Path

import pytest

from popek.model.machine import Machine
from popek.spec import profiles
from popek.spec.asm import assemble
from popek.spec.partition import PBASE, PSIZE, partitioned
from popek.spec.trace import trace, trace_trap
from popek.vmm import GuestState

ROOT = Path(__file__).resolve().parents[2]
PROGRAMS = ["tests/guests/syscall.s", "tests/guests/timer.s", "tests/guests/remap_code.s", "tests/guests/readr.s",
            "tests/guests/swapped_frames.s"]


def test_shipped_profiles_have_no_partition_register():
    for p in profiles.all_profiles():
        assert not p.arch.partition and "partition" not in p.features
        for insn in p.insns:
            assert not {PBASE, PSIZE} & trace(insn, p.arch).inputs(), insn.name


def test_partitioned_profile_reads_the_register_in_every_storage_access():
    pp = partitioned(profiles.get("x86"))
    assert pp.arch.partition and "partition" in pp.features and pp.name == "x86+partition"
    assert [i.name for i in pp.insns] == [i.name for i in profiles.get("x86").insns]
    assert {PBASE, PSIZE} <= trace(pp["st"], pp.arch).inputs()
    assert {PBASE, PSIZE} <= trace_trap(pp.arch).inputs()  # the old and new PSW words too
    assert not {PBASE, PSIZE} & trace(pp["add"], pp.arch).inputs()


def test_vtx_is_not_partitioned():
    with pytest.raises(ValueError, match="vtx"):
        partitioned(profiles.get("vtx"))


@pytest.mark.parametrize("base, size", [(0x800, 16), (0xF000, 0x1001), (-64, 0x400)])
def test_set_partition_refuses_what_does_not_fit(base, size):
    cpu = Machine(partitioned(profiles.get("pg")), 0xFFC0)
    with pytest.raises(ValueError, match="does not fit"):
        cpu.set_partition(base, size)


def test_a_partitioned_machine_has_no_all_ones_word():
    with pytest.raises(ValueError, match="fewer than"):
        Machine(partitioned(profiles.get("pg")), 1 << 16)


@pytest.mark.parametrize("profile", ["pg", "x86"])
@pytest.mark.parametrize("program", PROGRAMS)
def test_a_partitioned_cpu_runs_a_program_as_a_bare_machine_of_the_partition(profile, program):
    prof = profiles.get(profile)
    image = assemble((ROOT / program).read_text(), prof)
    bare = Machine(prof, 0x1000)
    bare.load(image)
    cpu = Machine(partitioned(prof), 0xFFC0)
    cpu.set_partition(0x3047, 0x1000)  # not page aligned: pages are the guest's
    for a, w in image.words.items():
        cpu.M[0x3047 + a] = w
    cpu.reset(image.entry)
    assert cpu.run(5000).steps == bare.run(5000).steps
    seen = GuestState({k: cpu.registers()[k] for k in GuestState.from_machine(bare).regs},
                      tuple(cpu.M[0x3047:0x4047]), tuple(cpu.out))
    assert GuestState.from_machine(bare).differences(seen) == []


def test_loading_a_partitioned_cpu_writes_only_its_partition():
    cpu = Machine(partitioned(profiles.get("pg")), 0xFFC0)
    cpu.M[:] = [7] * len(cpu.M)
    cpu.set_partition(0x2000, 0x400)
    cpu.load(assemble("start: halt", profiles.get("pg")))
    assert set(cpu.M[:0x2000]) == set(cpu.M[0x2400:]) == {7}
    assert cpu.M[0x2010] != 7 and cpu.M[0x2000] == 0
    with pytest.raises(ValueError, match="outside storage of 1024"):
        cpu.load(assemble(".org 0x400\nstart: halt", profiles.get("pg")))
