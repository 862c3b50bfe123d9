"""The hand-written guests under binary translation and paravirtualization on
every profile, and under the hardware-assisted design on vtx: each ends in
the bare machine's final state (docs/design.md: faithful), or is refused, for a
reason given here, by the paravirtualizing pass."""

from __future__ import annotations

import pytest

from popek.model.vmms.paravirt import RewriteError

from advanced_guests import guests, image, run_bare, vmm_for

DESIGN_PROFILES = {
    "binary-translation": ("pg", "hybrid", "x86", "vtx"),
    "paravirt": ("pg", "hybrid", "x86", "vtx"),
    "hardware-assisted": ("vtx",),
    "hardware-assisted+shadow": ("vtx",),
}

# guest -> why the paravirtualizing pass refuses it (and must)
PV_REFUSES = {
    "smc": "it copies instructions it loads from its own code (`ld r3, alt(r0)`)",
    "smc_irq": "it copies instructions it loads from its own code",
}

CASES = [
    (g, p, d)
    for g, ps in guests().items()
    for d, dps in DESIGN_PROFILES.items()
    for p in ps
    if p in dps
]


@pytest.mark.parametrize("guest, profile, design", CASES, ids=["-".join(c) for c in CASES])
def test_guest_gives_the_bare_result(guest: str, profile: str, design: str) -> None:
    img = image(guest, profile)
    bare, steps, halted = run_bare(img, profile)
    assert halted, f"{guest} must halt on bare {profile}"
    if design == "paravirt" and guest in PV_REFUSES:
        with pytest.raises(RewriteError, match="reads its own instructions"):
            vmm_for(design, img, profile)
        return
    vmm = vmm_for(design, img, profile)
    run = vmm.run(steps)
    c = vmm.counters()
    assert c.direct + c.emulated == run.steps
    assert (run.steps, run.halted) == (steps, True)
    assert vmm.guest_state().differences(bare) == []


SLICED = [(g, d, p) for g in ("timer", "pt_heavy", "smc_patch", "syscall") for d, p in
          (("binary-translation", "x86"), ("paravirt", "x86"), ("hardware-assisted", "vtx"),
           ("hardware-assisted+shadow", "vtx"))]  # fmt: skip


@pytest.mark.parametrize("guest, design, profile", SLICED, ids=["-".join(c) for c in SLICED])
def test_runs_in_slices_end_where_one_run_does(guest: str, design: str, profile: str) -> None:
    img = image(guest, profile)
    bare, steps, _ = run_bare(img, profile)
    vmm = vmm_for(design, img, profile)
    done, k = 0, 0
    while done < steps:
        n = (1, 2, 5, 13, 1, 40)[k % 6]
        k += 1
        done += vmm.run(min(n, steps - done)).steps
        mid, _, _ = run_bare(img, profile, done)
        assert vmm.guest_state().differences(mid) == [], done
    assert vmm.guest_state().differences(bare) == []
