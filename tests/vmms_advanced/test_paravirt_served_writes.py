"""A hypercall's own step (the original instruction, run on the virtual CPU)
may write over another hypercall: the guest must see what it wrote there,
with the original instruction's word where it wrote nothing, exactly as on
the bare machine.  (The writes of a served step were forgotten before the
pass looked at them: the other word kept the hypercall's index.)"""

from __future__ import annotations

from popek.model.vmms.paravirt import HYPERCALL
from popek.spec.asm import assemble
from popek.spec.profiles import get

from advanced_guests import run_bare, vmm_for

# `pushf` is rewritten on x86 (it shows the real interrupt flag); served,
# it pushes the flags over the first word of the rewritten `rdmode` below.
GUEST = """
start:  li    sp, site+1
        pushf
        halt
site:   rdmode r1
"""


def test_a_served_hypercall_that_writes_over_another_is_seen_as_written() -> None:
    img = assemble(GUEST, get("x86"))
    site = img.symbols["site"]
    bare, steps, halted = run_bare(img, "x86")
    assert halted
    vmm = vmm_for("paravirt", img, "x86")
    assert vmm.host.M[vmm.allocation().start + site] == HYPERCALL  # `rdmode` was rewritten
    vmm.run(steps)
    seen = vmm.guest_state()
    assert seen.memory[site : site + 2] == bare.memory[site : site + 2]
    assert seen == bare


# Served, this `pushf` pushes onto its own second word the very value that
# word holds (flags 0 over the 0 of an instruction without an immediate).
OWN_WORD = """
start:  li    sp, site+2
        rdmode r1
site:   pushf
        halt
"""


def test_a_served_hypercall_that_writes_its_own_word_is_not_put_back() -> None:
    """Put back as a hypercall, its second word would show the hypercall's
    index (1 here) where the guest wrote 0."""
    img = assemble(OWN_WORD, get("x86"))
    site = img.symbols["site"]
    bare, steps, halted = run_bare(img, "x86")
    assert halted and bare.memory[site + 1] == 0 == img.words.get(site + 1, 0)
    vmm = vmm_for("paravirt", img, "x86")
    assert (vmm.host.M[vmm.allocation().start + site + 1]) == 1  # pushf is hypercall 1
    vmm.run(steps)
    assert vmm.counters().extra["hypercalls"] >= 2
    assert vmm.guest_state() == bare
