"""A guest that remaps a page of its code and calls into it again must run
the new code under every design, as on the bare machine.

Shadow paging drops only the shadow entries (and the host decodes, and the
translations) made through a page-table entry the guest changed, not
everything: this guest (tests/guests/remap_code.s) is what an optimisation
that dropped too little gets wrong.  Its code at virtual 0x3c0 runs often
enough to be compiled into host blocks before each remap."""

from __future__ import annotations

import pytest

from advanced_guests import image, run_bare, vmm_for

CASES = [
    ("binary-translation", "pg"),
    ("binary-translation", "x86"),
    ("binary-translation", "vtx"),
    ("paravirt", "pg"),
    ("paravirt", "vtx"),
    ("hardware-assisted+shadow", "vtx"),
    ("hardware-assisted", "vtx"),
]


@pytest.mark.parametrize("design, profile", CASES, ids=["-".join(c) for c in CASES])
def test_remapped_code_runs_the_new_frame(design: str, profile: str) -> None:
    img = image("remap_code", profile)
    bare, steps, halted = run_bare(img, profile)
    assert halted and bare.out == (306,), "the guest must run both frames' code (3 + 300 + 3)"
    vmm = vmm_for(design, img, profile)
    run = vmm.run(steps)
    assert (run.steps, run.halted) == (steps, True)
    assert vmm.guest_state().differences(bare) == []
    if design != "hardware-assisted":  # nested paging has no shadow entries
        extra = vmm.counters().extra
        assert extra["shadow_updates"] == 3, "each remap is a page-table write the VMM sees"


@pytest.mark.parametrize("design, profile", [("paravirt", "x86"), ("hardware-assisted+shadow", "vtx")])
def test_a_remap_keeps_the_other_pages_decodes(design: str, profile: str) -> None:
    """The host decodes the kernel's loop (page 0, paging on) once, not
    once per remap: a remap drops the decodes of page 15 only."""
    img = image("remap_code", profile)
    _, steps, _ = run_bare(img, profile)
    vmm = vmm_for(design, img, profile)
    fills: list[int] = []
    fill = vmm.host.cache.fill
    vmm.host.cache.fill = lambda pc: fills.append(pc) or fill(pc)
    vmm.run(steps)
    loop = [pc for pc in fills if img.symbols["round"] <= pc < img.symbols["report"]]
    assert loop and len(loop) == len(set(loop)), sorted(loop)
