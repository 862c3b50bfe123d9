"""A vtx guest's own guest, run nested, writes the kernel's page table: the
VMM must see that write before the kernel runs again.

Under ``hardware-assisted+shadow`` the kernel runs in guest mode through a
shadow table, and its ``vmrun`` exits: the VMM interprets the nested guest
on the virtual CPU until that guest's own VM exit.  Every write the virtual
CPU makes there (the nested guest's stores, its exit's save into the
kernel's VMCS) is a write to the kernel's storage like an emulated one, and
may change a table word a shadow entry was built from.  This guest
(tests/guests/nested_remap.s) remaps a page from inside its nested guest and
reads it afterwards; a fuzz campaign found the same bug with a VMCS placed
on the kernel's page table (the exit's save rewrote its entries)."""

from __future__ import annotations

import pytest

from advanced_guests import image, run_bare, vmm_for

DESIGNS = ("hardware-assisted+shadow", "hardware-assisted", "emulator")


@pytest.mark.parametrize("design", DESIGNS)
def test_a_nested_guests_table_write_reaches_the_kernel(design: str) -> None:
    img = image("nested_remap", "vtx")
    bare, steps, halted = run_bare(img, "vtx")
    assert halted and bare.out == (101,), "the kernel reads frame 0x800, then 0x840 (1 + 100)"
    vmm = vmm_for(design, img, "vtx")
    run = vmm.run(steps)
    assert (run.steps, run.halted) == (steps, True)
    assert vmm.guest_state().differences(bare) == []
    if design == "hardware-assisted+shadow":
        assert vmm.counters().extra["shadow_updates"] == 1, "the nested store is a table write the VMM sees"


@pytest.mark.parametrize("design", DESIGNS[:2])
def test_runs_in_slices_end_where_the_bare_machine_does(design: str) -> None:
    """Cut anywhere, the nested guest's steps included."""
    img = image("nested_remap", "vtx")
    bare, steps, _ = run_bare(img, "vtx")
    vmm = vmm_for(design, img, "vtx")
    done = 0
    while done < steps:
        done += vmm.run(min(3, steps - done)).steps
        mid, _, _ = run_bare(img, "vtx", done)
        assert vmm.guest_state().differences(mid) == [], done
    assert vmm.guest_state().differences(bare) == []
